"""The runs of a study: their order, the share of each process, their
folders and where each stands.

WORKDIR/VARIANT/seed_N/       the run: an ordinary training workdir
WORKDIR/logs/VARIANT.seed_N.log  its trainer's output, every attempt
WORKDIR/claims/VARIANT.seed_N.json  its claim and history (`claims`)
"""
import dataclasses
import json
import os
import pathlib
import re
import tempfile

from dcsfn_jax.studies import claims as claims_lib
from dcsfn_jax.training import report as training_report
from dcsfn_jax.training import writer

# What `status` reports, in the order --list sorts them.
STATES = ('done', 'failed', 'running', 'stalled', 'released', 'pending')
_STEP = re.compile(r'step (\d+)/(\d+)')


@dataclasses.dataclass(frozen=True)
class Run:
  variant: str
  seed: int

  @property
  def name(self):
    return f'{self.variant}/seed_{self.seed}'


def all_runs(study):
  """Every (variant, seed), seed by seed: a share's first runs cover every
  variant once, and a variant's later seeds find its programs compiled."""
  return [Run(variant.name, seed) for seed in study.seeds
          for variant in study.variants]


def share(runs, task_index, num_tasks):
  """The runs of process `task_index` of `num_tasks`: every num_tasks-th,
  from its index."""
  return runs[task_index::num_tasks]


def folder(workdir, run):
  return workdir / run.variant / f'seed_{run.seed}'


def log_path(workdir, run):
  """WORKDIR/logs/VARIANT.seed_N.log; for a URL workdir (gs://), where a
  trainer's output cannot be appended, the same names under
  $TMPDIR/dcsfn_study_logs/<the URL's folders>/ on this host."""
  name = f'{run.variant}.seed_{run.seed}.log'
  location = os.fspath(workdir)
  if '://' in location:
    local = pathlib.Path(tempfile.gettempdir()) / 'dcsfn_study_logs'
    return local.joinpath(*location.replace('://', '/').split('/')) / name
  return workdir / 'logs' / name


def last_progress(log):
  """(step, total) of the trainer's last 'step N/T' line in the log file,
  or None."""
  try:
    with log.open('rb') as file:
      file.seek(0, 2)
      file.seek(max(file.tell() - 20000, 0))
      text = file.read().decode(errors='replace')
  except FileNotFoundError:
    return None
  found = _STEP.findall(text)
  return tuple(map(int, found[-1])) if found else None


@dataclasses.dataclass(frozen=True)
class Status:
  """Where a run stands."""
  state: str                   # one of STATES
  step: tuple = None           # (step, total) of its trainer, when known
  reason: str = ''             # why it failed
  result: dict = None          # {'PROTOCOL/psnr', 'PROTOCOL/ssim'} if done
  holder: dict = None          # the claim's holder
  attempts: tuple = ()


def status(workdir, run, at=None):
  """The run's `Status`, from its claim and its log."""
  claim = claims_lib.read(claims_lib.path_of(workdir, run.name))
  progress = last_progress(log_path(workdir, run))
  if claim is None:
    return Status('pending', progress)
  if not claim:
    return Status('running', progress)
  state = claim.get('state')
  if state == 'running' and claims_lib.is_dead(claim, at):
    state = 'stalled'
  if state not in STATES:
    state = 'pending'
  return Status(state, progress, claim.get('reason', ''),
                claim.get('result'), claim.get('holder'),
                tuple(claim.get('attempts', ())))


def final_figures(workdir, run, protocols):
  """{'PROTOCOL/psnr', 'PROTOCOL/ssim', 'step'} of a finished run: the
  official protocol from the trainer's last eval (metrics.jsonl), others
  from the evaluate summary the runner had written."""
  run_dir = folder(workdir, run)
  last = training_report.last_eval(run_dir)
  figures = {'step': max((r['step'] for r in writer.read_metrics(run_dir)),
                         default=0)}
  if 'official' in protocols and last:
    figures.update({'official/psnr': last['psnr'],
                    'official/ssim': last['ssim']})
  others = [p for p in protocols if p != 'official']
  if others:
    summary = json.loads(evaluation_summary(run_dir).read_text())
    for protocol in others:
      for metric in ('psnr', 'ssim'):
        figures[f'{protocol}/{metric}'] = summary['means'][
            f'{protocol}/{metric}']
  return figures


def evaluation_summary(run_dir):
  """Where the runner's `evaluate` of a run writes its summary.json."""
  return run_dir / 'study_eval' / 'summary.json'
