"""`dcsfn_jax.images.files`, the one owner of image files: the pixel budget
read from the header, output names every file system takes, and the pairing
step layouts and score share."""
import numpy as np
from PIL import Image
import pytest

from dcsfn_jax.images import files as image_files


def test_the_pixel_budget_is_checked_from_the_header(tmp_path, monkeypatch):
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / 'a.png')

  def no_decoding(*args, **kwargs):
    raise AssertionError('decoded an image above the budget')

  with monkeypatch.context() as patch:
    patch.setattr(Image.Image, 'load', no_decoding)
    with pytest.raises(image_files.TooManyPixelsError,
                       match=r'a.png: 30x20 is 0.0 megapixels, above the '
                             'limit of 599.') as refused:
      image_files.read_image(tmp_path / 'a.png', max_pixels=599)
  assert refused.value.size == (30, 20)
  assert image_files.read_image(tmp_path / 'a.png',
                                max_pixels=600).shape == (20, 30, 3)
  # 0 is no limit, and PIL's own bomb guard is off for that read only.
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  assert image_files.read_image(tmp_path / 'a.png',
                                max_pixels=0).shape == (20, 30, 3)
  assert Image.MAX_IMAGE_PIXELS == 100


def test_output_names_fit_every_file_system_and_stay_distinct():
  assert image_files.output_name('rain/rain-001.jpg') == 'rain_rain-001.png'
  long_names = ['a' * 300 + '.jpg', 'a' * 300 + 'b.jpg', 'é' * 200]
  names = [image_files.output_name(name) for name in long_names]
  assert len(set(names)) == 3
  assert all(len(name.encode()) <= 205 and name.endswith('.png')
             for name in names), names
  assert names[0].startswith('a' * 150)


def test_match_keys_pairs_by_key_and_names_the_rest():
  matched, first_only, second_only = image_files.match_keys(
      {2: 'rain-2', 1: 'rain-1', 5: 'rain-5'},
      {1: 'norain-1', 2: 'norain-2', 3: 'norain-3'})
  assert matched == [(1, 'rain-1', 'norain-1'), (2, 'rain-2', 'norain-2')]
  assert first_only == ['rain-5'] and second_only == ['norain-3']
