"""dcsfn_jax.platforms: 'auto' resolved from the target devices before
build_model, and a model that never reads the platform or takes a config."""
import ast
import dataclasses
import importlib
import inspect
import pathlib
import types

import flax.linen as nn
import jax
import pytest

from dcsfn_jax import models
from dcsfn_jax import platforms
from dcsfn_jax.models import layers

MODELS = pathlib.Path(models.__file__).resolve().parent
# What reads the platform: jax.default_backend(), jax.devices(),
# jax.local_devices() and any `.platform` attribute.
_PLATFORM_READS = ('default_backend', 'devices', 'local_devices', 'platform')


def _tiny(**changes):
  config = models.preset('official')
  config.update(channels=4, num_blocks=2, num_scales=2, convs_per_scale=1)
  config.update(changes)
  return config


def _devices(*names):
  return [types.SimpleNamespace(platform=name, id=i)
          for i, name in enumerate(names)]


@pytest.mark.parametrize('platform,conv_impl', [
    ('cpu', 'cpu'), ('gpu', 'xla'), ('tpu', 'xla')])
def test_auto_conv_impl_follows_the_platform(platform, conv_impl):
  config = _tiny()
  resolved = platforms.resolve_model_config(config, platform)
  assert resolved.conv_impl == conv_impl and resolved.remat is True
  assert config.conv_impl == 'auto' and config.remat == 'auto', (
      'resolving must not change the caller\'s config')
  assert platforms.resolve_model_config(
      config, platform, remat=False).remat is False


@pytest.mark.parametrize('platform', ['cpu', 'gpu'])
def test_explicit_values_are_kept(platform):
  resolved = platforms.resolve_model_config(
      _tiny(conv_impl='xla' if platform == 'cpu' else 'cpu', remat=False),
      platform, remat=True)
  assert resolved.conv_impl == ('xla' if platform == 'cpu' else 'cpu')
  assert resolved.remat is False


def test_a_remat_that_is_not_a_bool_is_refused():
  with pytest.raises(ValueError, match="remat='auto' must be True or False"):
    platforms.resolve_model_config(_tiny(), 'cpu', remat='auto')


@pytest.mark.parametrize('changes,named', [
    ({}, 'conv_impl=auto and remat=auto'),
    ({'conv_impl': 'cpu'}, 'remat=auto'),
    ({'remat': True}, 'conv_impl=auto')])
def test_build_model_refuses_auto_in_one_line(changes, named):
  with pytest.raises(ValueError) as error:
    models.build_model(_tiny(**changes))
  message = str(error.value)
  assert '\n' not in message, message
  assert named in message and 'resolve_model_config' in message, message


def test_build_model_injects_the_conv_of_the_resolved_config():
  for platform, conv_impl in (('cpu', 'cpu'), ('gpu', 'xla')):
    model = models.build_model(platforms.resolve_model_config(_tiny(),
                                                              platform))
    assert model.conv is layers.CONVS[conv_impl]
    assert model.channels == 4 and model.remat is True


def test_platform_of_the_host_devices_is_cpu():
  assert platforms.platform_of(jax.devices()) == 'cpu'
  assert platforms.platform_of(jax.devices()[:1]) == 'cpu'
  assert platforms.platform_of(iter(jax.devices())) == 'cpu'


def test_platform_of_names_gpu_whatever_the_runtime():
  assert platforms.platform_of(_devices('gpu', 'gpu')) == 'gpu'
  assert platforms.platform_of(_devices('cuda')) == 'gpu'
  assert platforms.platform_of(_devices('rocm')) == 'gpu'
  assert platforms.platform_of(_devices('tpu')) == 'tpu'


def test_platform_of_refuses_mixed_or_no_devices():
  with pytest.raises(ValueError, match=r"several platforms \['cpu', 'gpu'\]"):
    platforms.platform_of(_devices('cpu', 'cuda'))
  with pytest.raises(ValueError, match='No devices'):
    platforms.platform_of([])


def test_model_for_builds_for_the_devices_given():
  assert platforms.model_for(_tiny(), _devices('tpu')).conv is (
      layers.CONVS['xla'])
  assert platforms.model_for(_tiny(), jax.devices()).conv is (
      layers.CONVS['cpu'])


def _platform_reads(source):
  """Lines of `source` that read the platform (see _PLATFORM_READS)."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Attribute) and node.attr in _PLATFORM_READS:
      if node.attr == 'platform' or (isinstance(node.value, ast.Name)
                                     and node.value.id == 'jax'):
        found.append(f'line {node.lineno}: .{node.attr}')
  return found


def test_the_platform_check_can_fail():
  assert _platform_reads('import jax\nb = jax.default_backend()\n')
  assert _platform_reads('import jax\nd = jax.devices()[0]\n')
  assert _platform_reads('p = device.platform\n')
  assert _platform_reads(pathlib.Path(platforms.__file__).read_text())


def test_no_model_source_reads_the_platform():
  sources = sorted(MODELS.glob('*.py'))
  assert MODELS / 'dcsfn.py' in sources
  violations = {path.name: _platform_reads(path.read_text())
                for path in sources}
  violations = {name: found for name, found in violations.items() if found}
  assert not violations, violations


def _type_name(annotation):
  """'int', 'layers.ConvFactory', ...: the annotation as written."""
  if isinstance(annotation, str):  # from __future__ import annotations
    return annotation
  return getattr(annotation, '__name__', str(annotation))


def _config_fields(cls):
  """Fields of a flax module class that take a whole config or an untyped
  value: named config, or annotated with a config type, object or Any."""
  found = []
  for field in dataclasses.fields(cls):
    annotation = _type_name(field.type)
    if field.name not in ('parent', 'name') and (
        field.name == 'config' or 'config' in annotation.lower()
        or annotation in ('object', 'Any', 'typing.Any')):
      found.append(f'{cls.__name__}.{field.name}: {annotation}')
  return found


def _model_module_classes():
  classes = []
  for path in sorted(MODELS.glob('*.py')):
    module = importlib.import_module(f'dcsfn_jax.models.{path.stem}')
    classes += [value for _, value in inspect.getmembers(module, inspect.isclass)
                if issubclass(value, nn.Module)
                and value.__module__ == module.__name__]
  return classes


def test_the_config_field_check_can_fail():
  class Bagged(nn.Module):
    config: object

  class Untyped(nn.Module):
    settings: object

  class Described(nn.Module):
    settings: 'ml_collections.FrozenConfigDict'

  class Typed(nn.Module):
    channels: int
    conv: 'layers.ConvFactory'

  for cls in (Bagged, Untyped, Described):
    assert _config_fields(cls), cls.__name__
  assert not _config_fields(Typed)


def test_no_model_module_takes_a_whole_config():
  classes = _model_module_classes()
  names = {cls.__name__ for cls in classes}
  assert {'DCSFN', 'DenseEncoder', 'DenseDecoder', 'InnerScaleConnectionBlock',
          'GRUCell', 'LSTMCell'} <= names, names
  violations = [found for cls in classes for found in _config_fields(cls)]
  assert not violations, violations
