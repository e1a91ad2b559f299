"""Shared test set-up.

Four host CPU devices are simulated for the whole suite, so multi-device tests
(1 vs N devices, sharded steps) run on any machine. The flag has to be set
before JAX is first imported, which is why it lives here.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

# The commands enable a persistent compilation cache (dcsfn_jax.compile_cache)
# in ~/.cache or $XDG_CACHE_HOME; the suite's commands run without one (or,
# in the modules that use shared_compile_cache below, with one folder in the
# run's temporary folder), and the tests of the cache name their own folders.
os.environ["DCSFN_COMPILE_CACHE"] = "off"

import pytest  # noqa: E402  (the flag above must be set before anything imports JAX)


def pytest_collection_modifyitems(items):
  """Tests marked slow run first, the rest in file order: `-n 2` hands tests
  to its workers in this order, so a minutes-long test never starts near the
  end while the other worker has nothing left to run."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


@pytest.fixture(scope='session')
def synthetic_data_dir(tmp_path_factory):
  """A tiny synthetic_rain dataset, prepared once per session; its data_dir.

  8 train and 2 test pairs from disjoint scikit-image photos, longer side
  72 px (shorter side 48-72 px). Read it with
  `dcsfn_jax.data.load_split('synthetic_rain', split, data_dir)`.
  """
  from dcsfn_jax.data import prepare_synthetic  # pylint: disable=g-import-not-at-top
  return prepare_synthetic(tmp_path_factory.mktemp('synthetic_data'),
                           max_size=72, num_train=8, num_test=2)


@pytest.fixture(scope='module')
def fast_compiles():
  """Unoptimised XLA for one test module: tiny models compile several times
  faster. Use with `pytestmark = pytest.mark.usefixtures('fast_compiles')`."""
  import jax  # pylint: disable=g-import-not-at-top
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='session')
def _session_compile_cache(tmp_path_factory):
  """One compilation-cache folder for the whole run, shared by the xdist
  workers (their temporary folders sit in one per-run folder)."""
  base = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    base = base.parent
  return base / 'compile_cache'


@pytest.fixture(scope='module')
def shared_compile_cache(_session_compile_cache):
  """For one test module whose commands compile the same programs again and
  again: while it runs, the commands it starts keep every compiled program in
  one folder shared by the whole run ($DCSFN_COMPILE_CACHE, which each
  command's main() applies), so a program is compiled once per run. The
  cache never changes what a program computes (tests/test_compile_cache.py);
  modules that test the cache, or count compilations, do not use this. Use
  with `pytestmark = pytest.mark.usefixtures('shared_compile_cache')`."""
  patch = pytest.MonkeyPatch()
  patch.setenv('DCSFN_COMPILE_CACHE', os.fspath(_session_compile_cache))
  patch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  yield _session_compile_cache
  patch.undo()


@pytest.fixture(scope='session')
def official_param_shapes():
  """The parameter shapes (jax.ShapeDtypeStructs) of the official preset as
  `model.init` makes them on this host's devices, from `jax.eval_shape`:
  tracing the full model takes seconds, so it is done once per session."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import models  # pylint: disable=g-import-not-at-top
  from dcsfn_jax import platforms  # pylint: disable=g-import-not-at-top
  model = platforms.model_for(models.preset('official'), jax.devices())
  return jax.eval_shape(model.init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))['params']


@pytest.fixture(scope='module')
def checkpoint_dir(tmp_path_factory, synthetic_data_dir):
  """A save_pretrained checkpoint of a randomly initialised tiny model
  (single-scale) whose config names the synthetic dataset; one per test
  module. Modules that need another model define their own."""
  from dcsfn_jax import models  # pylint: disable=g-import-not-at-top
  import tiny_models  # pylint: disable=g-import-not-at-top
  model_config = models.preset('official')
  model_config.update(channels=4, num_blocks=1, num_scales=2,
                      convs_per_scale=1, single=True)
  return tiny_models.save_checkpoint(
      tmp_path_factory.mktemp('checkpoint') / 'pretrained', model_config,
      dataset='synthetic_rain', data_dir=os.fspath(synthetic_data_dir),
      eval_split='test')
