"""How far the bfloat16 compute mode moves DCSFN from float32.

  python benchmarks/bf16_parity.py                    # official preset
  python benchmarks/bf16_parity.py --preset=paper --size=64

Parameters, optimiser state and the loss stay float32 in both modes
(models.preset(...).dtype = 'bfloat16' changes only what convolutions and
activations compute in). On one batch of synthetic rain (the demo data's
generator on crops of scikit-image's astronaut, seeded) and freshly
initialised weights, prints the largest differences of the rain estimate R
and the derained output, of the -SSIM loss, and of the loss gradient:
relative to the float32 gradient's norm over the whole tree, for the worst
tensor, and as a cosine similarity. Runs on whatever JAX's default backend
is (bfloat16 is meant for GPU and TPU; on CPU it is emulated, and slow).
"""
from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import skimage.data

from dcsfn_jax.training import losses
from dcsfn_jax import models
from dcsfn_jax.data import synthetic

_PRESET = flags.DEFINE_enum('preset', 'official', ['official', 'paper'],
                            'Model preset.')
_SIZE = flags.DEFINE_integer('size', 64, 'Side of the square patches.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Patches in the batch.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of weights and rain.')


def _batch(size, count, seed):
  """Random crops of scikit-image's astronaut with heavy synthetic rain."""
  photo = skimage.data.astronaut()
  rng = np.random.default_rng(seed)
  clean, rainy = [], []
  for index in range(count):
    top, left = rng.integers(0, photo.shape[0] - size, 2)
    crop = photo[top:top + size, left:left + size]
    clean.append(crop)
    rainy.append(synthetic.add_rain(crop, synthetic.PRESETS['heavy'],
                                    seed + index))
  to_float = lambda images: jnp.asarray(np.stack(images), jnp.float32) / 255
  return to_float(rainy), to_float(clean)


def _forward_and_grad(config, params, rainy, clean):
  model = models.build_model(config)

  def loss_fn(p):
    derained = model.apply({'params': p}, rainy)
    return losses.derain_loss(derained, clean)[0], derained

  with jax.default_matmul_precision('highest'):
    (loss, derained), grads = jax.jit(jax.value_and_grad(
        loss_fn, has_aux=True))(params)
  return jax.device_get((loss, derained, grads))


def main(argv):
  del argv
  config32 = models.preset(_PRESET.value)
  config16 = models.preset(_PRESET.value)
  config16.dtype = 'bfloat16'
  model = models.build_model(config32)
  rainy, clean = _batch(_SIZE.value, _BATCH.value, _SEED.value)
  params = models.runtime_layout(
      models.init_params(model, jax.random.key(_SEED.value), rainy.shape),
      config32)
  loss32, out32, grads32 = _forward_and_grad(config32, params, rainy, clean)
  loss16, out16, grads16 = _forward_and_grad(config16, params, rainy, clean)
  rain32, rain16 = np.asarray(rainy) - out32, np.asarray(rainy) - out16
  flat32, flat16 = jax.tree.leaves(grads32), jax.tree.leaves(grads16)
  total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in flat32))
  error = np.sqrt(sum(np.sum((a.astype(np.float64) - b) ** 2)
                      for a, b in zip(flat16, flat32)))
  worst = max(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
              for a, b in zip(flat16, flat32))
  print(f'{_PRESET.value} preset, {_BATCH.value}x{_SIZE.value}x{_SIZE.value}, '
        f'backend {jax.default_backend()}:')
  print(f'  R, max |bf16 - f32|:         {np.max(np.abs(rain16 - rain32)):.3e}'
        f' (max |R| {np.max(np.abs(rain32)):.3e})')
  print(f'  output, max |bf16 - f32|:    {np.max(np.abs(out16 - out32)):.3e}')
  print(f'  -SSIM loss: f32 {loss32:.6f}, bf16 {loss16:.6f} '
        f'(diff {abs(loss16 - loss32):.2e})')
  print(f'  gradient, |g16 - g32| / |g32| over all tensors: {error / total:.3e}')
  print(f'  gradient, worst single tensor:                 {worst:.3e}')
  cosine = sum(np.sum(a.astype(np.float64) * b) for a, b in
               zip(flat16, flat32)) / (total * np.sqrt(sum(
                   np.sum(a.astype(np.float64) ** 2) for a in flat16)))
  print(f'  gradient cosine similarity:                    {cosine:.6f}')


if __name__ == '__main__':
  app.run(main)
