"""pyproject's accelerator extras: `pip install -e '.[cuda12]'`, '.[cuda13]'
and '.[tpu]' bring jax's matching build at the base pin.

The pin checks read pyproject.toml and the installed jax's metadata, offline.
One test asks pip to resolve what the extras pull in (`pip install --dry-run
--no-deps`, metadata only); it skips when the package index cannot be
reached, probed first with the base pin itself.
"""
import importlib.metadata
import pathlib
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ACCELERATOR_EXTRAS = ('cuda12', 'cuda13', 'tpu')


def _project():
  return tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']


def _pin(requirement: Requirement) -> str:
  specifiers = list(requirement.specifier)
  assert len(specifiers) == 1 and specifiers[0].operator == '==', (
      f'{requirement} is not pinned with ==')
  return specifiers[0].version


def _base_pins():
  return {Requirement(line).name: _pin(Requirement(line))
          for line in _project()['dependencies']}


def test_each_accelerator_extra_is_jax_of_the_base_pin():
  base = _base_pins()
  assert base['jax'] == base['jaxlib'], 'jax and jaxlib are pinned apart'
  extras = _project()['optional-dependencies']
  for extra in ACCELERATOR_EXTRAS:
    (line,) = extras[extra]
    requirement = Requirement(line)
    assert requirement.name == 'jax', f'[{extra}] installs {line}'
    assert requirement.extras == {extra}, f'[{extra}] installs {line}'
    assert _pin(requirement) == base['jax'], (
        f'[{extra}] pins jax {_pin(requirement)}, the base pin is '
        f'{base["jax"]}')


def test_the_installed_jax_is_the_pin_and_offers_those_extras():
  installed = importlib.metadata.distribution('jax')
  assert installed.version == _base_pins()['jax']
  offered = set(installed.metadata.get_all('Provides-Extra') or ())
  assert set(ACCELERATOR_EXTRAS) <= offered, offered


def test_dm_pix_is_a_runtime_dependency():
  assert _base_pins().get('dm-pix') == '0.4.5'
  assert not any(Requirement(line).name == 'dm-pix'
                 for line in _project()['optional-dependencies']['test'])


def _extra_requirements(extra):
  """What jax's own metadata installs for `extra` (jaxlib, plugin/libtpu)."""
  found = []
  for line in importlib.metadata.requires('jax') or ():
    requirement = Requirement(line)
    marker = requirement.marker
    if (marker and marker.evaluate({'extra': extra})
        and not marker.evaluate({'extra': ''})):
      requirement.marker = None
      found.append(str(requirement))
  return found


def _resolve(requirements):
  return subprocess.run(
      [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-deps',
       '--ignore-installed', '--quiet', '--timeout', '15', '--retries', '1',
       '--no-input', '--disable-pip-version-check', *requirements],
      capture_output=True, text=True, timeout=240, check=False)


@pytest.mark.parametrize('extra', ACCELERATOR_EXTRAS)
def test_pip_resolves_what_each_extra_installs(extra):
  probe = _resolve([f'jax=={_base_pins()["jax"]}'])
  if probe.returncode:
    pytest.skip('the package index is not reachable: '
                f'{probe.stderr.strip().splitlines()[-1:]}')
  requirements = _extra_requirements(extra)
  assert requirements, f'jax declares nothing for [{extra}]'
  result = _resolve(requirements)
  assert result.returncode == 0, result.stderr[-2000:]
