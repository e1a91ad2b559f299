"""Export/import CLIs: released-format checkpoints in, .pth/.safetensors out."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax.pytorch import from_torch_state_dict
from dcsfn_jax.pytorch.torch_files import import_torch_checkpoint
from dcsfn_jax.models import preset
from dcsfn_jax.platforms import model_for

torch = pytest.importorskip('torch')
from dcsfn_jax.pytorch.torch_files import export_checkpoint  # pylint: disable=g-import-not-at-top
from dcsfn_jax.pytorch.torch_twin import build_torch_model  # pylint: disable=g-import-not-at-top

TINY = ('channels=4', 'num_blocks=2', 'convs_per_scale=2')


def _tiny_bgr():
  config = preset('official')
  config.update(channels=4, num_blocks=2, convs_per_scale=2,
                channel_order='bgr')
  return config


@pytest.fixture(scope='module')
def released(tmp_path_factory):
  """A fake released checkpoint of a tiny twin, saved like the authors did."""
  torch.manual_seed(0)
  twin = build_torch_model(_tiny_bgr())
  optimizer = torch.optim.Adam(twin.parameters(), lr=5e-4)
  twin(torch.rand(1, 3, 32, 32)).mean().backward()
  optimizer.step()
  path = str(tmp_path_factory.mktemp('released') / 'latest_net')
  torch.save({'net': {f'module.{k}': v for k, v in twin.state_dict().items()},
              'clock_net': 1500, 'opt_net': optimizer.state_dict()}, path)
  return path, twin


def _run(module, *args):
  return subprocess.run([sys.executable, '-m', module, *args],
                        capture_output=True, text=True, check=False)


def test_import_cli_writes_a_bgr_checkpoint_that_matches_the_twin(
    released, tmp_path):
  path, twin = released
  output = str(tmp_path / 'imported')
  overrides = [arg for value in TINY for arg in ('--model_override', value)]
  result = _run('dcsfn_jax.import_torch', '--checkpoint', path,
                '--output', output, *overrides)
  assert result.returncode == 0, result.stderr
  assert 'channel_order=\'bgr\'' in result.stdout
  params, config = checkpointing.load_pretrained(output)
  assert config.model.channel_order == 'bgr'
  expected = from_torch_state_dict(twin.state_dict(), _tiny_bgr())
  jax.tree.map(np.testing.assert_array_equal, params, expected)

  rgb = np.random.default_rng(0).random((1, 37, 45, 3), dtype=np.float32)
  with jax.default_matmul_precision('highest'):
    derained = jax.jit(model_for(config.model, jax.devices()).apply)(
        {'params': params}, rgb)
  with torch.no_grad():
    bgr_in = torch.from_numpy(np.ascontiguousarray(
        rgb.transpose(0, 3, 1, 2)[:, ::-1]))
    twin_rgb = twin(bgr_in).numpy()[:, ::-1].transpose(0, 2, 3, 1)
  np.testing.assert_allclose(derained, twin_rgb, rtol=0, atol=1e-5)


@pytest.fixture(scope='module')
def imported(released, tmp_path_factory):
  path, _ = released
  output = str(tmp_path_factory.mktemp('pretrained') / 'imported')
  import_torch_checkpoint(path, output, 'official', TINY)
  return output


def test_export_cli_writes_a_strict_loadable_state_dict_with_its_config(
    released, imported, tmp_path):
  _, twin = released
  output = str(tmp_path / 'dcsfn.pth')
  result = _run('dcsfn_jax.export', '--workdir', imported, '--output', output)
  assert result.returncode == 0, result.stderr
  assert 'expect BGR images' in result.stdout
  saved = torch.load(output, weights_only=True)
  # The released loader's wrapper ('net'), with what a lossless round trip
  # needs beside it.
  assert set(saved) == {'net', 'model_config', 'channel_order'}
  assert saved['channel_order'] == 'bgr'
  assert json.loads(saved['model_config']) == _tiny_bgr().to_dict()
  state_dict = saved['net']
  assert type(state_dict) is dict  # pylint: disable=unidiomatic-typecheck
  fresh = build_torch_model(_tiny_bgr())
  fresh.load_state_dict(state_dict, strict=True)
  for key, value in twin.state_dict().items():
    exported = state_dict[key]
    if exported.any():
      torch.testing.assert_close(exported, value, rtol=0, atol=0)
    else:  # never read by the network, so zero-filled on export
      assert key.startswith(('rec1_4.conv_h', 'rec1_4.conv_xr', 'rec2_1.conv_h',
                             'rec2_1.conv_xr', 'fusion_1_2_2', 'fusion_2_2_2'))


def test_safetensors_round_trip_keeps_params_and_config(imported, tmp_path):
  output = str(tmp_path / 'dcsfn.safetensors')
  summary = export_checkpoint(imported, output)
  assert summary['channel_order'] == 'bgr'
  again = str(tmp_path / 'again')
  import_torch_checkpoint(output, again, 'paper')  # recorded config wins
  params, config = checkpointing.load_pretrained(again)
  original, original_config = checkpointing.load_pretrained(imported)
  assert config.model.to_dict() == original_config.model.to_dict()
  jax.tree.map(np.testing.assert_array_equal, params, original)


def test_import_names_what_a_foreign_file_holds(tmp_path):
  text = tmp_path / 'notes.txt'
  text.write_text('not weights')
  with pytest.raises(ValueError, match='not a PyTorch checkpoint'):
    import_torch_checkpoint(str(text), str(tmp_path / 'a'))
  listing = str(tmp_path / 'list.pth')
  torch.save([torch.zeros(1)], listing)
  with pytest.raises(ValueError, match='not a DCSFN checkpoint.*found a list'):
    import_torch_checkpoint(listing, str(tmp_path / 'b'))
  other = str(tmp_path / 'other.pth')
  torch.save({'epoch': 3, 'model': {}}, other)
  with pytest.raises(ValueError, match=r'keys \[epoch, model\]'):
    import_torch_checkpoint(other, str(tmp_path / 'c'))
  with pytest.raises(FileNotFoundError, match='missing_net'):
    import_torch_checkpoint(str(tmp_path / 'missing_net'), str(tmp_path / 'd'))


def test_import_explains_a_config_mismatch(released, tmp_path):
  path, _ = released
  with pytest.raises(ValueError, match='does not match the model config'):
    import_torch_checkpoint(path, str(tmp_path / 'out'), 'official')
  with pytest.raises(ValueError, match='Bad --model_override'):
    import_torch_checkpoint(path, str(tmp_path / 'out'), 'official',
                            ['chanels=4'])
  assert not os.path.exists(tmp_path / 'out')


def test_export_refuses_bad_outputs(imported, tmp_path):
  with pytest.raises(ValueError, match=r'\.pth or \.safetensors'):
    export_checkpoint(imported, str(tmp_path / 'weights.bin'))
  existing = tmp_path / 'dcsfn.pth'
  existing.write_bytes(b'')
  with pytest.raises(FileExistsError, match='--overwrite'):
    export_checkpoint(imported, str(existing))


@pytest.mark.parametrize('module, flag', [('dcsfn_jax.export', '--workdir'),
                                          ('dcsfn_jax.import_torch',
                                           '--checkpoint')])
def test_cli_help_documents_usage_and_flags(module, flag):
  result = _run(module, '--help')
  assert result.returncode == 0, result.stderr
  assert f'python -m {module}' in result.stdout, result.stderr
  assert flag in result.stdout


def test_cli_errors_name_the_bad_path(tmp_path):
  missing = str(tmp_path / 'no_such_run')
  result = _run('dcsfn_jax.export', '--workdir', missing,
                '--output', str(tmp_path / 'x.pth'))
  assert result.returncode == 1
  assert f'error: No checkpoint at {missing}' in result.stderr
