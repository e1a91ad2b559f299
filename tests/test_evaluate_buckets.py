"""Shape buckets: bounded compilation, and the same figures as native-size
evaluation whenever no padding is needed."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcsfn_jax.evaluation import evaluator
from dcsfn_jax.inference import runner as runner_lib
from dcsfn_jax.images import files as image_files
from dcsfn_jax import metrics
from dcsfn_jax import models
from dcsfn_jax import platforms


def _tiny_config():
  """A few-hundred-parameter model that compiles in about a second; its
  minimum size (bucket granule) is 2."""
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=2, convs_per_scale=1,
                single=True)
  return config


@pytest.fixture(scope='module')
def tiny_model():
  config = _tiny_config()
  params = platforms.model_for(config, jax.devices()).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  return params, config


def _examples(sizes, seed=0):
  rng = np.random.default_rng(seed)
  examples = []
  for index, (height, width) in enumerate(sizes):
    clean = rng.integers(20, 230, (height, width, 3), dtype=np.uint8)
    streaks = rng.random((height, width, 1)) < 0.1
    rainy = np.where(streaks, 255, clean).astype(np.uint8)
    examples.append({'name': f'image_{index:02d}', 'rainy': rainy,
                     'clean': clean})
  return examples


def test_bucket_ladder_pads_at_most_a_quarter_per_side():
  sides = [runner_lib.bucket_side(n, 32) for n in range(1, 3000)]
  assert sides[:4] == [32] * 4 and sides[32] == 64
  assert runner_lib.bucket_side(321, 32) == 384
  assert runner_lib.bucket_side(481, 32) == 512
  for n, side in zip(range(1, 3000), sides):
    assert side >= n and side % 32 == 0
    assert side <= max(4 * 32, 1.25 * n + 32), (n, side)
  # Few distinct buckets: ~4 per octave.
  assert len(set(sides)) <= 4 + 4 * 7


def test_many_sizes_compile_once_per_bucket_and_score_like_native_sizes(
    tiny_model):
  params, config = tiny_model
  # Two sizes already on the ladder (granule 2: 40, 48 and 56 are 2 times
  # 20, 24 and 28) and five that pad into the same three buckets.
  on_ladder = [(48, 56), (40, 48)]
  padded = [(47, 55), (45, 50), (41, 41), (37, 45), (33, 47)]
  examples = _examples(on_ladder + padded)
  rows, summary = evaluator.evaluate_examples(
      params, config, examples, bucket=True, progress=False)

  granule = models.minimum_size(config)
  buckets = {runner_lib.bucket_shape(h, w, granule, bucket=True)
             for h, w in on_ladder + padded}
  assert len(buckets) == 3
  assert summary['compilations'] == len(buckets), summary
  assert summary['num_images'] == len(examples)

  exact_rows, exact_summary = evaluator.evaluate_examples(
      params, config, examples[:len(on_ladder)], progress=False)
  assert exact_summary['compilations'] == len(on_ladder)
  by_name = {row['name']: row for row in rows}
  for exact_row in exact_rows:
    row = by_name[exact_row['name']]
    for protocol in metrics.PROTOCOLS:
      for suffix in ('', '_rainy'):
        psnr, ssim = f'{protocol}/psnr{suffix}', f'{protocol}/ssim{suffix}'
        assert abs(row[psnr] - exact_row[psnr]) < 1e-4, (psnr, row, exact_row)
        assert abs(row[ssim] - exact_row[ssim]) < 1e-6, (ssim, row, exact_row)
  # Means are over the real images only, not the batch padding.
  np.testing.assert_allclose(
      summary['means']['official/psnr'],
      np.mean([row['official/psnr'] for row in rows]), rtol=1e-6)


def test_padded_images_are_scored_on_their_cropped_output(tiny_model,
                                                          tmp_path):
  params, config = tiny_model
  examples = _examples([(37, 53)], seed=1)
  rows, _ = evaluator.evaluate_examples(params, config, examples,
                                       output_dir=tmp_path, progress=False)
  saved = image_files.read_image(tmp_path / 'derained' / 'image_00.png')
  assert saved.shape == (37, 53, 3)
  # y_uint8 scores the rounded PNG, so re-scoring the file must agree.
  rescored = metrics.y_uint8_metrics(
      jnp.asarray(metrics.to_float(saved))[None],
      jnp.asarray(metrics.to_float(examples[0]['clean']))[None])
  np.testing.assert_allclose(rows[0]['y_uint8/psnr'], rescored['psnr'][0],
                             atol=1e-4)
  np.testing.assert_allclose(rows[0]['y_uint8/ssim'], rescored['ssim'][0],
                             atol=1e-6)


def test_unpaired_and_mismatched_examples_are_rejected(tiny_model):
  params, config = tiny_model
  example = _examples([(40, 48)])[0]
  with pytest.raises(ValueError, match='derain --niqe'):
    evaluator.evaluate_examples(params, config,
                               [{'name': 'x', 'rainy': example['rainy']}],
                               progress=False)
  with pytest.raises(ValueError, match='differ in shape'):
    evaluator.evaluate_examples(
        params, config, [dict(example, clean=example['clean'][:-1])],
        progress=False)


def test_a_single_image_is_split_by_rows_over_the_devices_bit_for_bit(
    tiny_model, monkeypatch):
  params, config = tiny_model
  assert jax.device_count() > 1, 'conftest gives the tests several devices'
  splits = []
  height_sharded = runner_lib.parallel.height_sharded
  monkeypatch.setattr(runner_lib.parallel, 'height_sharded',
                      lambda mesh: splits.append(1) or height_sharded(mesh))
  runner = runner_lib.Runner(runner_lib.forward_fn(config), split_rows=True)
  params = runner.place(params)
  rng = np.random.default_rng(5)
  height = 8 * jax.device_count()
  image = rng.random((1, height, 12, 3), dtype=np.float32)
  single = runner(params, {'rainy': image})['derained']
  assert splits == [1]
  # The same image beside a second one: the batch path, one image a device.
  pair = runner(params, {'rainy': np.concatenate([image, image[:, ::-1]])})[
      'derained']
  np.testing.assert_array_equal(single[0], pair[0])


def _record_calls(runner):
  """([(params, batch)] of each call of runner's jitted step, the step)."""
  calls = []
  step = runner._step  # pylint: disable=protected-access

  def recorded(p, batch):
    calls.append((p, batch))
    return step(p, batch)

  runner._step = recorded  # pylint: disable=protected-access
  return calls, step


# Float32 rounding of the row split against one device (max abs, outputs of
# magnitude about 1): measured 0 on one x86 host and 1.2e-7 on an AMD EPYC.
SPLIT_ROUNDING = 1e-6


@pytest.mark.parametrize('height', [7, 13, 31])
def test_a_single_image_with_uneven_rows_is_split_and_equals_one_device(
    tiny_model, height):
  """Rows the devices cannot share evenly are still split over all of them
  (XLA pads the last share inside the step), with the one-device result up
  to float32 rounding (XLA:CPU's convs sum in an order that depends on the
  shape and the CPU: bit for bit on one x86 host, up to 1.2e-7 on an AMD EPYC
  Zen 2): padding the image itself, the split's alternative, moves the
  output far more (checked here too)."""
  params, config = tiny_model
  devices = jax.device_count()
  assert height % devices, 'the heights must not split evenly'
  forward = runner_lib.forward_fn(config)
  runner = runner_lib.Runner(forward, split_rows=True)
  placed_params = runner.place(params)
  calls, step = _record_calls(runner)
  image = np.random.default_rng(height).random((1, height, 12, 3),
                                               dtype=np.float32)
  odd = runner(placed_params, {'rainy': image})['derained']
  (_, batch), = calls
  assert batch['rainy'].sharding.device_set == set(jax.devices())
  # Split, not repeated on every device: the seams' rows are exchanged.
  assert 'collective-permute' in step.lower(*calls[0]).compile().as_text()
  first = jax.devices()[0]
  with jax.default_matmul_precision('highest'):
    alone = jax.jit(forward)(jax.device_put(params, first),
                             {'rainy': jax.device_put(image, first)})
    rows = -height % devices
    padded = np.pad(image, ((0, 0), (0, rows), (0, 0), (0, 0)), mode='edge')
    padded_alone = jax.jit(forward)(jax.device_put(params, first),
                                    {'rainy': jax.device_put(padded, first)})
  alone = np.asarray(alone['derained'])
  padding_moves = np.abs(
      np.asarray(padded_alone['derained'])[:, :height] - alone).max()
  np.testing.assert_allclose(odd, alone, rtol=0, atol=SPLIT_ROUNDING)
  assert padding_moves > 100 * SPLIT_ROUNDING, padding_moves


def test_on_cpu_a_single_image_runs_whole_on_the_first_device(tiny_model):
  """XLA:CPU can deadlock on the row split's exchanges (a 400x600 photo on 2
  host devices aborts), so CPU runs a lone image on one device: no
  collective in the program, the one-device result bit for bit."""
  params, config = tiny_model
  forward = runner_lib.forward_fn(config)
  runner = runner_lib.Runner(forward)
  assert jax.device_count() > 1 and not runner.split_rows
  placed_params = runner.place(params)
  calls, step = _record_calls(runner)
  image = np.random.default_rng(3).random((1, 13, 12, 3), dtype=np.float32)
  derained = runner(placed_params, {'rainy': image})['derained']
  (call_params, batch), = calls
  first = jax.devices()[0]
  assert batch['rainy'].sharding.device_set == {first}
  assert all(leaf.sharding.device_set == {first}
             for leaf in jax.tree.leaves(call_params))
  assert 'collective' not in step.lower(*calls[0]).compile().as_text()
  with jax.default_matmul_precision('highest'):
    alone = jax.jit(forward)(jax.device_put(params, first),
                             {'rainy': jax.device_put(image, first)})
  np.testing.assert_array_equal(derained, np.asarray(alone['derained']))
  # A batch still spreads over every device.
  pair = runner(placed_params, {'rainy': np.concatenate([image, image])})
  np.testing.assert_array_equal(pair['derained'][0], derained[0])
