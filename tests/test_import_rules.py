"""The package's import rules (docs/ARCHITECTURE.md), read from the source.

  models/, data/ and metrics/ never import training, evaluation, export or
  torch; metrics never imports models; images/ imports no room but metrics;
  models never imports platforms, and platforms imports no room above models;
  studies/ drives training only through child processes (no jax, models,
  inference), and no room below it imports it;
  nothing imports an entry module (a `python -m` command) for a library
  function; importing the trainer's entry module defines no flags; one module
  opens image files and one defines which names are images.
"""
import ast
import pathlib
import re
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'dcsfn_jax'

ENTRY_MODULES = {'dcsfn_jax.train', 'dcsfn_jax.evaluate', 'dcsfn_jax.derain',
                 'dcsfn_jax.import_torch', 'dcsfn_jax.export',
                 'dcsfn_jax.prepare', 'dcsfn_jax.score',
                 'dcsfn_jax.summary', 'dcsfn_jax.study', 'dcsfn_jax.aot'}

UPPER_ROOMS = ('dcsfn_jax.training', 'dcsfn_jax.evaluation',
               'dcsfn_jax.inference', 'dcsfn_jax.analysis',
               'dcsfn_jax.pytorch', 'dcsfn_jax.studies', 'torch')
FORBIDDEN = {
    # The model never chooses for a platform: its callers resolve first.
    'dcsfn_jax.models': UPPER_ROOMS + ('dcsfn_jax.platforms',),
    # The target platform sits between the model and its callers.
    'dcsfn_jax.platforms': UPPER_ROOMS + ('dcsfn_jax.data',
                                          'dcsfn_jax.metrics'),
    'dcsfn_jax.data': UPPER_ROOMS,
    'dcsfn_jax.metrics': UPPER_ROOMS + ('dcsfn_jax.models',),
    # Running the network on images never depends on scoring it.
    'dcsfn_jax.inference': ('dcsfn_jax.evaluation', 'dcsfn_jax.training',
                            'dcsfn_jax.analysis', 'dcsfn_jax.studies'),
    # A study drives training runs; nothing it drives knows of it.
    'dcsfn_jax.training': ('dcsfn_jax.studies',),
    'dcsfn_jax.evaluation': ('dcsfn_jax.studies',),
    # A study runs the model only through child processes (the commands).
    'dcsfn_jax.studies': ('dcsfn_jax.models', 'dcsfn_jax.inference',
                          'dcsfn_jax.parallel', 'dcsfn_jax.platforms',
                          'dcsfn_jax.pytorch', 'torch', 'jax'),
}
# Ahead-of-time compilation sits above every room: only the aot command (and
# the benchmarks) import it.
for _room in ('dcsfn_jax.models', 'dcsfn_jax.platforms', 'dcsfn_jax.data',
              'dcsfn_jax.metrics', 'dcsfn_jax.inference',
              'dcsfn_jax.training', 'dcsfn_jax.evaluation',
              'dcsfn_jax.analysis', 'dcsfn_jax.pytorch', 'dcsfn_jax.images',
              'dcsfn_jax.parallel', 'dcsfn_jax.cli'):
  FORBIDDEN[_room] = FORBIDDEN.get(_room, ()) + ('dcsfn_jax.compilation',)


def _module_name(path):
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path):
  """Every module `path` imports, at any depth (function-level too)."""
  tree = ast.parse(path.read_text(), filename=str(path))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      found.add(node.module)
      # `from dcsfn_jax import train` imports the module dcsfn_jax.train.
      found.update(f'{node.module}.{alias.name}' for alias in node.names)
  return found


def _within(name, prefix):
  return name == prefix or name.startswith(prefix + '.')


MODULES = {_module_name(path): _imports(path)
           for path in sorted(PACKAGE.rglob('*.py'))}


def test_the_walk_sees_the_whole_package():
  assert {'dcsfn_jax.models.dcsfn', 'dcsfn_jax.training.trainer',
          'dcsfn_jax.evaluation.evaluator', 'dcsfn_jax.metrics.protocols',
          'dcsfn_jax.pytorch.torch_twin'} <= set(MODULES)
  # The rules can fail: the twin imports torch, the trainer the evaluator.
  assert 'torch' in MODULES['dcsfn_jax.pytorch.torch_twin']
  assert 'dcsfn_jax.evaluation' in MODULES['dcsfn_jax.training.trainer']


@pytest.mark.parametrize('room', sorted(FORBIDDEN))
def test_lower_rooms_never_import_upper_ones(room):
  violations = sorted(
      f'{module} imports {imported}'
      for module, imported_names in MODULES.items() if _within(module, room)
      for imported in imported_names
      if any(_within(imported, banned) for banned in FORBIDDEN[room]))
  assert not violations, violations


def test_the_image_room_imports_only_metrics():
  violations = sorted(
      f'{module} imports {imported}'
      for module, imported_names in MODULES.items()
      if _within(module, 'dcsfn_jax.images')
      for imported in imported_names
      if _within(imported, 'dcsfn_jax')
      and not _within(imported, 'dcsfn_jax.images')
      and not _within(imported, 'dcsfn_jax.metrics'))
  assert not violations, violations


def _modules_whose_source(pattern):
  return sorted(_module_name(path) for path in PACKAGE.rglob('*.py')
                if re.search(pattern, path.read_text()))


def test_one_module_opens_image_files():
  assert _modules_whose_source(r'\bImage\.open\(') == [
      'dcsfn_jax.images.files']


def test_one_module_defines_the_image_suffixes():
  assert _modules_whose_source(r"['\"]\.jpe?g['\"]") == [
      'dcsfn_jax.images.files']


def test_no_module_imports_an_entry_module():
  violations = sorted(
      f'{module} imports {imported}'
      for module, imported_names in MODULES.items()
      for imported in imported_names
      if imported in ENTRY_MODULES and imported != module)
  assert not violations, violations


def test_importing_the_entry_modules_defines_no_flags():
  # Libraries (absl, grain, orbax, tfds) define their own flags; ours are
  # defined only when a command runs, in its `if __name__ == '__main__'`.
  code = ('from absl import flags\n'
          'import dcsfn_jax.train, dcsfn_jax.evaluate, dcsfn_jax.derain\n'
          'import dcsfn_jax.import_torch, dcsfn_jax.export\n'
          'import dcsfn_jax.prepare, dcsfn_jax.study, dcsfn_jax.aot\n'
          'ours = {module: [f.name for f in defined] for module, defined in\n'
          '        flags.FLAGS.flags_by_module_dict().items()\n'
          "        if 'dcsfn_jax' in module}\n"
          'print(ours)\n')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300, check=True)
  assert result.stdout.strip() == '{}', result.stdout


def test_the_jax_commands_never_load_pytorch():
  # torch is installed beside the project ([torch], test extras) and costs
  # seconds to import; only the weight converters and the twin need it.
  code = ('import sys\n'
          'import dcsfn_jax.train, dcsfn_jax.evaluate, dcsfn_jax.derain\n'
          'import dcsfn_jax.score, dcsfn_jax.study\n'
          "print(sorted(name for name in sys.modules if name == 'torch' or\n"
          "             name.startswith('torch.')))\n")
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300, check=True)
  assert result.stdout.strip() == '[]', result.stdout
