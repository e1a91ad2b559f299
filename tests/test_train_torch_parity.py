"""One training step equals one step of the PyTorch twin with torch.optim.Adam:
same loss, same updated parameters, from the same weights and batch."""
import jax
import numpy as np
import optax
import pytest

from dcsfn_jax import models
from dcsfn_jax import parallel
from dcsfn_jax import platforms
from dcsfn_jax.training import state as state_lib
from dcsfn_jax.training import config as train_config

torch = pytest.importorskip('torch')
from dcsfn_jax.pytorch import convert  # pylint: disable=g-import-not-at-top,wrong-import-position
from dcsfn_jax.pytorch import torch_twin  # pylint: disable=g-import-not-at-top,wrong-import-position
from released_ssim import released_ssim  # pylint: disable=g-import-not-at-top,wrong-import-position

_LR = 5e-4


pytestmark = pytest.mark.usefixtures('fast_compiles')


def test_adam_step_matches_the_torch_twin():
  config = train_config.base_config()
  config.model.channels = 4
  config.model.num_blocks = 2
  config.model.num_scales = 2
  config.model.convs_per_scale = 1
  config.patch_size = 32
  rng = np.random.default_rng(0)
  clean = rng.random((2, 32, 32, 3), dtype=np.float32)
  rainy = np.clip(clean + 0.5 * (rng.random(clean.shape) > 0.95), 0, 1)
  batch = {'rainy': rainy.astype(np.float32), 'clean': clean}

  mesh = parallel.make_mesh(jax.devices()[:1])
  model = platforms.model_for(config.model, jax.devices())
  optimizer = optax.adam(_LR)
  state = parallel.replicate(state_lib.create_train_state(
      model, optimizer, config.patch_size, jax.random.key(1)), mesh)
  initial = models.unstack_blocks(jax.device_get(state['params']))
  step = state_lib.make_train_step(model, optimizer, lambda _: _LR, config, mesh)
  state, metrics = step(state, parallel.shard_batch(batch, mesh))
  updated = models.unstack_blocks(jax.device_get(state['params']))

  twin = torch_twin.build_torch_model(config.model)
  twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                        convert.to_torch_state_dict(initial,
                                                    config.model).items()},
                       strict=True)
  torch_optimizer = torch.optim.Adam(twin.parameters(), lr=_LR)
  to_nchw = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  torch_loss = -released_ssim(twin(to_nchw(batch['rainy'])),
                              to_nchw(batch['clean']))
  torch_optimizer.zero_grad()
  torch_loss.backward()
  torch_optimizer.step()

  np.testing.assert_allclose(metrics['loss'], torch_loss.item(), atol=1e-6)
  torch_updated = convert.from_torch_state_dict(
      {k: v.detach().numpy() for k, v in twin.state_dict().items()},
      config.model)
  for (path, ours), theirs, before in zip(
      jax.tree_util.tree_flatten_with_path(updated)[0],
      jax.tree.leaves(torch_updated), jax.tree.leaves(initial)):
    # Adam moves each weight by about the learning rate; the updates must
    # agree, not only the (much larger) weights.
    np.testing.assert_allclose(
        ours - before, theirs - before, atol=_LR * 1e-3,
        err_msg=f'{jax.tree_util.keystr(path)}: update differs from torch')
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(updated), jax.tree.leaves(initial)))
  assert moved > _LR / 2, f'one Adam step moved no weight by ~lr ({moved})'
