"""Bad configs fail before any compilation; a NaN loss stops the run; a step
that does not fit the device is one error naming the fixes."""
import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax.training import trainer
from dcsfn_jax.training import config as train_config
import smoke_config


pytestmark = pytest.mark.usefixtures('fast_compiles')


_smoke_config = smoke_config.smoke_config


@pytest.fixture
def no_compilation(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('the config error came after compilation started')
  monkeypatch.setattr(trainer.jax, 'jit', refuse)


@pytest.mark.parametrize('field,value,message', [
    ('batch_sizee', 8, "unknown field 'batch_sizee' (did you mean 'batch_size'"),
    ('patch_size', 2, 'patch_size=2 is below'),
    ('augment', 'flip', "augment='flip' must be one of"),
    ('dataset', 'rain100x', "dataset='rain100x' is not one of"),
    ('learning_rate', -1.0, 'learning_rate=-1.0 must be positive'),
    ('total_steps', 0, 'total_steps=0'),
    ('seed', -1, 'seed=-1 must be an integer from 0 to 2147483647.'),
    ('seed', 2**31, 'seed=2147483648 must be an integer from 0 to'),
    ('l1_weight', float('nan'), 'l1_weight=nan must be a finite number.'),
    ('ema_decay', float('nan'), 'ema_decay=nan must be a finite number.'),
    ('remat_budget_gb', float('inf'),
     'remat_budget_gb=inf must be a finite number.'),
])
def test_static_errors_name_the_field(field, value, message):
  config = train_config.base_config()
  config.dataset = 'synthetic_rain'
  with config.unlocked():
    config[field] = value
  with pytest.raises(train_config.ConfigError) as error:
    train_config.validate(config)
  assert message in str(error.value)


def test_a_missing_field_names_the_module_that_has_them_all():
  config = train_config.base_config()
  config.dataset = 'synthetic_rain'
  del config['seed']
  with pytest.raises(train_config.ConfigError) as error:
    train_config.validate(config)
  assert ("missing field(s) ['seed']; start from "
          'dcsfn_jax.training.config.base_config()') in str(error.value)


def test_model_config_errors_are_config_errors():
  config = train_config.base_config()
  config.dataset = 'synthetic_rain'
  config.model.recurrent_unit = 'GRUU'
  with pytest.raises(train_config.ConfigError, match='recurrent_unit'):
    train_config.validate(config)


def test_float64_compute_is_refused_for_runs():
  config = train_config.base_config()
  config.dataset = 'synthetic_rain'
  config.model.dtype = 'float64'
  with pytest.raises(train_config.ConfigError,
                     match="dtype='float64' is for checking.*'bfloat16'"):
    train_config.validate(config)


def test_variant_names_are_checked():
  with pytest.raises(ValueError, match="'papr'.*official, paper"):
    train_config.variant_name('papr')


@pytest.mark.parametrize('field,value,message', [
    ('batch_size', 6, 'not divisible by the 4 devices'),
    ('patch_size', 200, 'patch_size=200 is larger than the images'),
    ('batch_size', 12, 'fewer than batch_size=12'),
    ('eval_split', 'validation', "no split 'validation'"),
])
def test_errors_found_in_the_data_come_before_compilation(
    synthetic_data_dir, tmp_path, no_compilation, field, value, message):
  config = _smoke_config(synthetic_data_dir)
  config[field] = value
  with pytest.raises(train_config.ConfigError) as error:
    trainer.train_and_evaluate(config, tmp_path)
  assert message in str(error.value)


def test_missing_dataset_gives_the_prepare_command(tmp_path, no_compilation):
  config = _smoke_config(tmp_path / 'empty')
  config.prepare_data = False
  with pytest.raises(FileNotFoundError, match='dcsfn_jax.prepare'):
    trainer.train_and_evaluate(config, tmp_path / 'workdir')


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    synthetic_data_dir, tmp_path):
  config = _smoke_config(synthetic_data_dir)
  # Adam moves every weight by about the learning rate: 1e30-sized weights
  # overflow float32 in the next forward pass.
  config.learning_rate = 1e30
  config.lr_decay_factor = 1.0
  config.total_steps = 6
  config.checkpoint_every_steps = 1
  with pytest.raises(FloatingPointError, match='at step 2;') as error:
    trainer.train_and_evaluate(config, tmp_path)
  assert 'last good checkpoint (step 1)' in str(error.value)
  steps_dir = tmp_path / checkpointing.CHECKPOINTS_SUBDIR
  assert sorted(p.name for p in steps_dir.iterdir()) == ['1']
  params, _ = checkpointing.load_pretrained(tmp_path)
  assert params  # the kept checkpoint is complete and readable


def test_a_step_that_does_not_fit_the_device_names_the_fixes(
    synthetic_data_dir, tmp_path, monkeypatch):
  said = ('RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of '
          'memory in memory space hbm. Used 17.20G of 15.75G hbm.')

  def step_that_does_not_fit(*args, **kwargs):
    def step(state, batch):
      raise trainer.jax.errors.JaxRuntimeError(said)
    return step

  monkeypatch.setattr(trainer.state_lib, 'make_train_step',
                      step_that_does_not_fit)
  config = _smoke_config(synthetic_data_dir)
  with pytest.raises(train_config.ConfigError) as error:
    trainer.train_and_evaluate(config, tmp_path / 'run')
  message = str(error.value)
  assert message.startswith('the train step does not fit the memory of a ')
  assert f'at batch_size={config.batch_size} (' in message
  assert 'XLA: RESOURCE_EXHAUSTED: XLA:TPU compile permanent error.' in message
  assert ('Lower --config.batch_size, raise --config.grad_accum_steps, or set '
          '--config.model.remat=True; python -m dcsfn_jax.aot') in message
  assert not any((tmp_path / 'run' / checkpointing.CHECKPOINTS_SUBDIR).iterdir())


def test_other_runtime_errors_of_the_step_are_not_called_memory(
    synthetic_data_dir, tmp_path, monkeypatch):
  def failing_step(*args, **kwargs):
    def step(state, batch):
      raise trainer.jax.errors.JaxRuntimeError('INTERNAL: something else')
    return step

  monkeypatch.setattr(trainer.state_lib, 'make_train_step', failing_step)
  with pytest.raises(trainer.jax.errors.JaxRuntimeError, match='INTERNAL'):
    trainer.train_and_evaluate(_smoke_config(synthetic_data_dir),
                               tmp_path / 'run')
