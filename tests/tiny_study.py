"""Tiny study files for the study tests: configs/demo.py:smoke runs on the
session's synthetic_rain, written where a test wants them."""
import pathlib
import textwrap

DEMO = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'demo.py'


def write_study(folder, data_dir, *, name='tiny', variants=None, seeds=2,
                overrides=None, reference='full', base=f'{DEMO}:smoke',
                axis=''):
  """Writes folder/NAME.py, a study of `variants` (default: full and
  no_cross_scale) x `seeds` over the smoke config; returns its path."""
  if variants is None:
    variants = [{'name': 'full'},
                {'name': 'no_cross', 'overrides': {'model.cross_scale': False}}]
  all_overrides = {'prepare_data': False, 'data_dir': str(data_dir),
                   **(overrides or {})}
  path = pathlib.Path(folder) / f'{name}.py'
  path.write_text(textwrap.dedent(f'''\
      import ml_collections


      def get_config():
        study = ml_collections.ConfigDict()
        study.name = {name!r}
        study.base = {base!r}
        study.seeds = {seeds!r}
        study.overrides = {all_overrides!r}
        study.reference = {reference!r}
        study.axis = {axis!r}
        study.variants = {variants!r}
        return study
      '''))
  return path


def load(path, command_overrides=()):
  """The `spec.Study` of a study file, as the command builds it."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from dcsfn_jax.studies import spec  # pylint: disable=g-import-not-at-top
  module_spec = importlib.util.spec_from_file_location('study_file', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return spec.build(module.get_config(), str(path), command_overrides)
