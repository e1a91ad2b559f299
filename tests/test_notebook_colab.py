"""launch/colab_tpu.ipynb runs from top to bottom, and is stored clean.

CI has no Colab and no TPU. So the test runs the notebook through nbclient
on the simulated CPU devices, with the notebook's own smoke setting (the
`smoke` variant of configs/demo.py and a tiny synthetic dataset), set in a
cell inserted after the parameters cell. `ON_COLAB = False` skips only what
needs Colab: installing, Google Drive, the upload dialog and the download.
Every other cell runs: it builds the dataset, trains over the mesh,
evaluates under both protocols, shows the panels, derains a photo, exports
to PyTorch and checks the export against JAX.
"""
import os
import pathlib

import nbformat
from nbformat import v4
import pytest

NOTEBOOK = (pathlib.Path(__file__).resolve().parent.parent / 'launch'
            / 'colab_tpu.ipynb')

_SMOKE = '''
ON_COLAB = False
SYNTHETIC = dict(max_size=64, num_train=8, num_test=2)
DATA_DIR = {data_dir!r}
CONFIG_VARIANT = 'smoke'
WORKDIR = {workdir!r}
'''


def _read():
  return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_index(notebook):
  indices = [i for i, cell in enumerate(notebook.cells)
             if 'parameters' in cell.metadata.get('tags', [])]
  assert len(indices) == 1, f'{len(indices)} cells are tagged "parameters"'
  return indices[0]


def _outputs(cell):
  """The text and the MIME types of a cell's outputs."""
  text, mime = [], set()
  for output in cell.get('outputs', []):
    text.append(output.get('text', ''))
    for kind, value in output.get('data', {}).items():
      mime.add(kind)
      if kind in ('text/plain', 'text/markdown'):
        text.append(value)
  return ''.join(text), mime


def test_notebook_is_stored_without_outputs():
  notebook = _read()
  nbformat.validate(notebook)
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, (
          f'cell {index} has stored outputs; clear them before committing')


def test_only_colab_only_steps_are_skipped_outside_colab():
  notebook = _read()
  parameters = _parameters_index(notebook)
  for index, cell in enumerate(notebook.cells):
    if cell.cell_type != 'code' or index == parameters:
      continue
    if 'ON_COLAB' in cell.source:
      assert 'google.colab' in cell.source or 'pip' in cell.source, (
          f'cell {index} depends on ON_COLAB but neither installs nor uses '
          f'google.colab:\n{cell.source}')


def test_install_keeps_pips_python_version_check():
  # pyproject's requires-python admits Colab's Python, so a waiver would only
  # hide a real mismatch.
  notebook = _read()
  for index, cell in enumerate(notebook.cells):
    assert '--ignore-requires-python' not in cell.source, (
        f'cell {index} still waives requires-python when installing')


def test_install_takes_jax_from_the_projects_tpu_extra():
  # pyproject's [tpu] extra pins jax[tpu] to the project's jax, so the
  # notebook names no version of its own (tests/test_install_extras.py).
  notebook = _read()
  installs = [cell.source for cell in notebook.cells
              if cell.cell_type == 'code' and "'pip', 'install'" in cell.source
              and 'REPO_DIR' in cell.source]
  assert len(installs) == 1, f'{len(installs)} cells install the project'
  assert "'-e', f'{REPO_DIR}[tpu]'" in installs[0]
  assert 'jax[tpu]==' not in installs[0]


@pytest.mark.slow
def test_notebook_runs_on_cpu_with_the_smoke_setting(tmp_path):
  from nbclient import NotebookClient  # pylint: disable=g-import-not-at-top

  notebook = _read()
  smoke = v4.new_code_cell(_SMOKE.format(
      data_dir=str(tmp_path / 'tfds'), workdir=str(tmp_path / 'run')))
  notebook.cells.insert(_parameters_index(notebook) + 1, smoke)
  client = NotebookClient(notebook, timeout=300, kernel_name='python3',
                          resources={'metadata': {'path': str(tmp_path)}})
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             JAX_DISABLE_MOST_OPTIMIZATIONS='true')

  client.execute(env=env)  # raises CellExecutionError on any cell error

  everything = [_outputs(cell) for cell in notebook.cells
                if cell.cell_type == 'code']
  text = ''.join(t for t, _ in everything)
  assert 'on 4 cpu devices' in text, 'the mesh did not span the 4 devices'
  assert '| official |' in text and '| y_uint8 |' in text, (
      'the evaluation table lacks a protocol')
  assert 'PyTorch vs JAX' in text
  images_shown = sum('image/png' in mime for _, mime in everything)
  # The data sample, eval panels, training panels and the derained photo.
  assert images_shown >= 4, f'only {images_shown} cells showed an image'
  run = tmp_path / 'run'
  assert list((run / 'checkpoints').iterdir()), 'no checkpoint was written'
  assert (run / 'dcsfn.safetensors').stat().st_size > 0
  assert (run / 'derained_stand_in_upload.png').exists()
