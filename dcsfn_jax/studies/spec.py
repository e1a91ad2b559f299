"""A study config: what it names, its checks, and each variant's training
config resolved exactly as `python -m dcsfn_jax.train` resolves it.

A study file (configs/studies/*.py) has `get_config()` returning a
ConfigDict with:

  name         the study's name (the workdir remembers it)
  title        one line for the report
  base         the training config every variant starts from, as --config
               takes it ('configs/rain100h.py:paper')
  seeds        how many seeds (0..N-1), or the seeds themselves
  protocols    the protocols reported ('official' comes from each run's
               final eval, any other from `python -m dcsfn_jax.evaluate`)
  overrides    {dotted field: value} applied to every variant
  reference    the variant every other one is compared with ('' for none)
  axis         x-axis label when the variants are ordered values (K = 1..4,
               RNN/LSTM/GRU): the report then also draws them as lines
  variants     a list of {'name', 'overrides': {dotted field: value},
               'published': [row ids of published_results.json],
               optionally 'base'}

A variant's training config is its base, then the study's overrides, then
its own, then the command line's --config.FIELD=VALUE, then its seed: the
same words, in the same order, that each run's `dcsfn_jax.train` command
line carries (`Variant.train_args`).
"""
import dataclasses
import json
import os
import pathlib
import re

from absl import flags
import ml_collections
from ml_collections import config_flags

from dcsfn_jax import metrics
from dcsfn_jax.evaluation import report as evaluation_report
from dcsfn_jax.studies import claims
from dcsfn_jax.training import config as config_lib

# Fields that change how a run is carried out or logged but not what it
# learns or scores: a workdir's study may differ in them (another data_dir on
# another host, another logging rhythm).
NEUTRAL_FIELDS = ('data_dir', 'prepare_data', 'log_every_steps',
                  'eval_every_steps', 'checkpoint_every_steps',
                  'keep_checkpoints', 'num_panels', 'remat_budget_gb',
                  'model.scan_blocks', 'model.conv_impl', 'model.remat')
SPEC_FIELDS = ('name', 'title', 'base', 'seeds', 'protocols', 'overrides',
               'reference', 'axis', 'variants')
VARIANT_FIELDS = ('name', 'overrides', 'published', 'base')
# Variant names become folder names.
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.=+-]*$')
_PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


class StudyError(ValueError):
  """A study that cannot run; the message names the file or field and the
  fix."""


@dataclasses.dataclass(frozen=True)
class Variant:
  """One variant: its name, base config and override words."""
  name: str
  base: str                 # --config value, path made absolute
  override_args: tuple      # ('--config.a.b=v', ...) before the seed
  published: tuple          # row ids of published_results.json
  config: object            # the resolved training config (seed 0's)

  def train_args(self, seed):
    """The --config words of `dcsfn_jax.train` for this variant and seed."""
    return (f'--config={self.base}', *self.override_args,
            f'--config.seed={seed}')


@dataclasses.dataclass(frozen=True)
class Study:
  """A validated study: its fields, the variants resolved."""
  name: str
  title: str
  path: str                 # the study file
  seeds: tuple
  protocols: tuple
  reference: str
  axis: str
  variants: tuple           # of Variant
  command_overrides: tuple  # the command line's --config.* words

  def variant(self, name):
    return next(v for v in self.variants if v.name == name)

  def identity(self):
    """What a workdir must agree with: {'name', 'seeds', 'variants': {name:
    the result-changing fields of its config}}."""
    return {'name': self.name, 'seeds': list(self.seeds),
            'variants': {v.name: identity_fields(v.config)
                         for v in self.variants}}


def _flag_value(value):
  """A Python value as ml_collections' config flags parse it back."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _resolve_path(config_arg, study_path):
  """--config value with its file made absolute: as given from the current
  folder, else from the project root (where configs/ is)."""
  file, colon, preset = config_arg.partition(':')
  candidates = [pathlib.Path(os.path.expanduser(file))]
  if not candidates[0].is_absolute():
    candidates.append(_PROJECT_ROOT / file)
  for candidate in candidates:
    if candidate.is_file():
      return f'{candidate.resolve()}{colon}{preset}'
  raise StudyError(f'{study_path}: base config {file} does not exist; name a '
                   'file of configs/, e.g. configs/rain100h.py:paper.')


def load_training_config(config_arg, override_args):
  """The training config that `dcsfn_jax.train --config=CONFIG_ARG
  *OVERRIDE_ARGS` trains; StudyError naming a bad field."""
  for arg in override_args:
    dotted = arg[len('--config.'):].split('=')[0]
    try:
      config_lib.check_override(dotted)
    except config_lib.ConfigError as error:
      raise StudyError(str(error)) from None
  argv = ['study', f'--config={config_arg}', *override_args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'training config',
                                  flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)
  try:
    flag_values(argv)
    config = flag_values.config
    getattr(config, 'keys')  # a file that failed to load raises here
  except Exception as error:  # pylint: disable=broad-except
    text = ' '.join(str(error).split())
    raise StudyError(f'{config_arg}: {text}') from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise StudyError(f'{config_arg}: get_config() does not return a '
                     'ConfigDict.')
  return config


def identity_fields(config):
  """{dotted field: value} of the fields that change what a run learns or
  scores (all but NEUTRAL_FIELDS and the seed), JSON-comparable."""
  return {name: value for name, value in config_lib.leaves(config)
          if name not in NEUTRAL_FIELDS and name != 'seed'}


def _check_overrides(where, overrides):
  if not isinstance(overrides, (dict, ml_collections.ConfigDict)):
    raise StudyError(f'{where} must be a dict {{"dotted.field": value}}.')
  args = []
  for dotted, value in overrides.items():
    if dotted == 'seed':
      raise StudyError(f"{where} sets 'seed'; the study sets each run's seed "
                       'from its seeds field.')
    try:
      config_lib.check_override(dotted)
    except config_lib.ConfigError as error:
      raise StudyError(f'{where}: {error}') from None
    args.append(f'--config.{dotted}={_flag_value(value)}')
  return tuple(args)


def _seeds(path, seeds):
  if isinstance(seeds, int) and not isinstance(seeds, bool):
    if seeds < 1:
      raise StudyError(f'{path}: seeds={seeds} must be at least 1.')
    return tuple(range(seeds))
  if (isinstance(seeds, (list, tuple)) and seeds
      and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
              for s in seeds) and len(set(seeds)) == len(seeds)):
    return tuple(seeds)
  raise StudyError(f'{path}: seeds={seeds!r} must be a count or a list of '
                   'distinct non-negative integers.')


def _published_ids():
  with open(evaluation_report.PUBLISHED_RESULTS) as file:
    return {row['id'] for row in json.load(file)['rows']}


def _check_fields(path, config, allowed, what):
  unknown = [key for key in config.keys() if key not in allowed]
  if unknown:
    raise StudyError(f'{path}: {what} has unknown field(s) {unknown}; the '
                     f'fields are {", ".join(allowed)}.')


def build(study_config, path, command_overrides=()):
  """A `Study` from a study ConfigDict; StudyError on anything wrong.

  Args:
    study_config: what the study file's get_config() returned.
    path: the study file, for messages.
    command_overrides: the command line's '--config.FIELD=VALUE' words.
  """
  if not isinstance(study_config, ml_collections.ConfigDict):
    raise StudyError(f'{path}: get_config() must return an '
                     'ml_collections.ConfigDict (see configs/studies/demo.py).')
  _check_fields(path, study_config, SPEC_FIELDS, 'the study')
  missing = [f for f in ('name', 'base', 'variants') if f not in study_config]
  if missing:
    raise StudyError(f'{path}: the study lacks {", ".join(missing)}.')
  if not _NAME.match(str(study_config.name)):
    raise StudyError(f'{path}: name={study_config.name!r} must be letters, '
                     'digits and _.=+- .')
  seeds = _seeds(path, study_config.get('seeds', 3))
  protocols = tuple(study_config.get('protocols', ('official',)))
  bad = [p for p in protocols if p not in metrics.PROTOCOLS]
  if bad or not protocols:
    raise StudyError(f'{path}: protocols {bad or "()"} must be some of '
                     f'{", ".join(metrics.PROTOCOLS)}.')
  for arg in command_overrides:
    if arg.split('=')[0] == '--config.seed':
      raise StudyError('--config.seed: the study sets each run\'s seed from '
                       'its seeds field; pass --study.seeds=N instead.')
  study_args = _check_overrides(f'{path}: overrides',
                                study_config.get('overrides', {}))
  published_ids = _published_ids()
  variants, names = [], set()
  for index, entry in enumerate(study_config.variants):
    where = f'{path}: variant {index}'
    if not isinstance(entry, (dict, ml_collections.ConfigDict)):
      raise StudyError(f'{where} must be a dict with name and overrides.')
    entry = dict(entry)
    _check_fields(where, entry, VARIANT_FIELDS, 'the variant')
    name = str(entry.get('name', ''))
    if not _NAME.match(name):
      raise StudyError(f'{where}: name={name!r} must be letters, digits and '
                       '_.=+- (it names the run folders).')
    if name in names:
      raise StudyError(f"{path}: two variants are named '{name}'; give each "
                       'a name of its own.')
    names.add(name)
    where = f"{path}: variant '{name}'"
    variant_args = _check_overrides(f'{where} overrides',
                                    entry.get('overrides', {}))
    published = tuple(entry.get('published', ()))
    unknown = [row for row in published if row not in published_ids]
    if unknown:
      raise StudyError(f'{where}: published rows {unknown} are not ids of '
                       'dcsfn_jax/assets/published_results.json.')
    base = _resolve_path(entry.get('base') or study_config.base, path)
    override_args = study_args + variant_args + tuple(command_overrides)
    config = load_training_config(
        base, (*override_args, f'--config.seed={seeds[0]}'))
    try:
      config_lib.validate(config)
    except config_lib.ConfigError as error:
      raise StudyError(f'{where}: {error}') from None
    variants.append(Variant(name, base, override_args, published, config))
  if not variants:
    raise StudyError(f'{path}: the study has no variants.')
  _check_distinct(path, variants)
  reference = study_config.get('reference', '')
  if reference and reference not in names:
    raise StudyError(f"{path}: reference='{reference}' is not one of the "
                     f'variants ({", ".join(sorted(names))}).')
  return Study(name=study_config.name,
               title=study_config.get('title', '') or study_config.name,
               path=os.fspath(path), seeds=seeds, protocols=protocols,
               reference=reference, axis=study_config.get('axis', ''),
               variants=tuple(variants),
               command_overrides=tuple(command_overrides))


def _check_distinct(path, variants):
  seen = {}
  for variant in variants:
    key = json.dumps(identity_fields(variant.config), sort_keys=True,
                     default=str)
    if key in seen:
      raise StudyError(
          f"{path}: variants '{seen[key]}' and '{variant.name}' resolve to "
          'the same training config (after the command line\'s --config '
          'overrides); change one, or drop it.')
    seen[key] = variant.name


def differences(stored, current):
  """Why a workdir's stored study identity (`Study.identity`) is another
  study than `current`'s: a phrase, or None when it is the same study (seeds
  and variants may be added or left out)."""
  if stored.get('name') != current['name']:
    return (f"it holds study '{stored.get('name')}', not "
            f"'{current['name']}'")
  for name, fields in current['variants'].items():
    before = stored.get('variants', {}).get(name)
    if before is None:
      continue
    for field in sorted(set(fields) | set(before)):
      if fields.get(field) != before.get(field):
        return (f"its variant '{name}' was trained with {field}="
                f'{before.get(field)!r}, this study asks for '
                f'{fields.get(field)!r}')
  return None


SPEC_FILE = 'study_spec.json'


def adopt(study, workdir):
  """Records the study in WORKDIR/study_spec.json, or checks it against the
  one recorded there; StudyError naming the difference for another study.
  Seeds and variants added since are recorded too."""
  path = workdir / SPEC_FILE
  current = json.loads(json.dumps(study.identity(), default=str))
  if claims.atomic_create(path, json.dumps(current, indent=1,
                                           sort_keys=True)):
    return
  try:
    stored = json.loads(path.read_text())
  except (OSError, ValueError):
    raise StudyError(f'{path} is not readable JSON; move it away if the '
                     'workdir holds no study, or choose another --workdir.') \
        from None
  why = differences(stored, current)
  if why:
    raise StudyError(f'--workdir {workdir} holds another study: {why}. '
                     'Choose another --workdir, or run the study (and '
                     '--config overrides) it was started with.')
  merged = {'name': current['name'],
            'seeds': sorted(set(stored.get('seeds', [])) |
                            set(current['seeds'])),
            'variants': {**stored.get('variants', {}),
                         **current['variants']}}
  if merged != stored:
    claims.replace(path, merged)
