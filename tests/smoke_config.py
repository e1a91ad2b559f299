"""configs/demo.py:smoke, loaded from its file as the trainer's --config does."""
import importlib.util
import pathlib

_DEMO = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'demo.py'


def smoke_config(data_dir):
  """The seconds-long demo variant, reading synthetic_rain from `data_dir`."""
  spec = importlib.util.spec_from_file_location('demo_config', _DEMO)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('smoke')
  config.data_dir = str(data_dir)
  return config
