"""Regenerates the y_float golden values of tests/test_metrics_y_float.py.

  python tests/golden/make_y_float_golden.py

Needs GNU Octave with the image package (made with Octave 7.3.0 and
octave-image 2.14.0, Debian 12: `apt-get install octave octave-image`); CI
has neither, so the values it prints are pasted into the test as GOLDEN.
Writes each case of y_float_cases.py as NAME_DR.png / NAME_GT.png (the
DRSformer statistic.m naming) into a temporary folder and runs
y_float_golden.m on them.
"""
import os
import pathlib
import pprint
import subprocess
import sys
import tempfile

from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import y_float_cases  # pylint: disable=wrong-import-position

FIELDS = ('mean_y_derained', 'mean_y_clean', 'y_derained_first',
          'y_derained_last', 'psnr', 'ssim')


def main():
  with tempfile.TemporaryDirectory() as folder:
    for name in y_float_cases.CASES:
      derained, clean = y_float_cases.pair(name)
      Image.fromarray(derained).save(os.path.join(folder, f'{name}_DR.png'))
      Image.fromarray(clean).save(os.path.join(folder, f'{name}_GT.png'))
    version = subprocess.run(
        ['octave', '--no-gui', '--quiet', '--eval',
         "pkg load image; v = ver('image'); printf('Octave %s, image %s', "
         "OCTAVE_VERSION, v.Version)"],
        capture_output=True, text=True, check=True).stdout.strip()
    result = subprocess.run(
        ['octave', '--no-gui', '--quiet', str(HERE / 'y_float_golden.m'),
         folder, *y_float_cases.CASES],
        capture_output=True, text=True, check=True)
  golden = {}
  for line in result.stdout.splitlines():
    name, *values = line.split()
    golden[name] = dict(zip(FIELDS, (float(v) for v in values)))
  print(f'# {version}')
  print('GOLDEN = ', end='')
  pprint.pprint(golden, sort_dicts=False)


if __name__ == '__main__':
  main()
