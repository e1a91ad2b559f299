"""Reading whatever a user's photo folder holds, and writing what they see."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dcsfn_jax.images import files as image_files
from dcsfn_jax.images import panels as image_panels
from dcsfn_jax import metrics


def _photo(height=24, width=40, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(tmp_path, name, image, **kwargs):
  path = tmp_path / name
  image.save(path, **kwargs)
  return path


def test_rgb_png_round_trips(tmp_path):
  photo = _photo()
  path = _save(tmp_path, 'rgb.png', Image.fromarray(photo))
  np.testing.assert_array_equal(image_files.read_image(path), photo)


def test_gray_and_bilevel_become_three_equal_channels(tmp_path):
  gray = _photo()[..., 0]
  read = image_files.read_image(_save(tmp_path, 'gray.png',
                                      Image.fromarray(gray)))
  assert read.shape == gray.shape + (3,)
  for channel in range(3):
    np.testing.assert_array_equal(read[..., channel], gray)
  bilevel = Image.fromarray(gray > 128).convert('1')
  read = image_files.read_image(_save(tmp_path, 'bw.png', bilevel))
  assert set(np.unique(read)) <= {0, 255}


def test_alpha_is_dropped_keeping_the_colours(tmp_path):
  photo = _photo()
  alpha = np.full(photo.shape[:2] + (1,), 7, np.uint8)
  rgba = Image.fromarray(np.concatenate([photo, alpha], -1), 'RGBA')
  np.testing.assert_array_equal(
      image_files.read_image(_save(tmp_path, 'rgba.png', rgba)), photo)
  gray_alpha = Image.fromarray(photo[..., 0]).convert('LA')
  np.testing.assert_array_equal(
      image_files.read_image(_save(tmp_path, 'la.png', gray_alpha))[..., 1],
      photo[..., 0])


def test_palette_images_with_and_without_transparency(tmp_path):
  photo = _photo()
  palette = Image.fromarray(photo).quantize(colors=16)
  expected = np.asarray(palette.convert('RGB'))
  np.testing.assert_array_equal(
      image_files.read_image(_save(tmp_path, 'p.png', palette)), expected)
  np.testing.assert_array_equal(
      image_files.read_image(_save(tmp_path, 'pt.png', palette,
                                   transparency=0)),
      expected)


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
  levels = _photo()[..., 0].astype(np.uint16)
  sixteen = Image.fromarray(levels * 257)  # 0..65535, mode I;16
  assert sixteen.mode.startswith('I')
  read = image_files.read_image(_save(tmp_path, 'g16.png', sixteen))
  np.testing.assert_array_equal(read[..., 0], levels)


def _write_png16_rgb(path, rgb16):
  """A 48-bit RGB PNG, written by hand (PIL cannot write one)."""
  height, width, _ = rgb16.shape
  rows = b''.join(b'\x00' + rgb16[y].astype('>u2').tobytes()
                  for y in range(height))

  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))

  path.write_bytes(b'\x89PNG\r\n\x1a\n'
                   + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height,
                                                16, 2, 0, 0, 0))
                   + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def test_sixteen_bit_colour_png_keeps_its_colours(tmp_path):
  levels = _photo()
  _write_png16_rgb(tmp_path / 'rgb16.png', levels.astype(np.uint16) * 257)
  read = image_files.read_image(tmp_path / 'rgb16.png')
  np.testing.assert_array_equal(read, levels)


def test_float_tiff_in_unit_range(tmp_path):
  plane = np.linspace(0, 1, 24 * 40, dtype=np.float32).reshape(24, 40)
  read = image_files.read_image(_save(tmp_path, 'f.tif', Image.fromarray(plane,
                                                                    'F')))
  np.testing.assert_array_equal(read[..., 0], metrics.to_uint8(plane))


def test_cmyk_jpeg_reads_as_the_rgb_it_shows(tmp_path):
  smooth = np.stack(np.meshgrid(np.linspace(30, 220, 40),
                                np.linspace(30, 220, 24)), -1)
  photo = np.concatenate([smooth, smooth[..., :1]], -1).astype(np.uint8)
  path = _save(tmp_path, 'cmyk.jpg', Image.fromarray(photo).convert('CMYK'),
               quality=95)
  assert Image.open(path).mode == 'CMYK'
  read = image_files.read_image(path)
  assert read.shape == photo.shape
  assert np.mean(np.abs(read.astype(int) - photo)) < 6


def test_exif_orientation_turns_camera_jpegs_upright(tmp_path):
  stored = np.zeros((24, 40, 3), np.uint8)
  stored[:8, :8] = [255, 0, 0]  # red mark at the stored top-left
  exif = Image.Exif()
  exif[0x0112] = 6  # display rotated 90 degrees clockwise
  path = _save(tmp_path, 'camera.jpg', Image.fromarray(stored), exif=exif,
               quality=95)
  read = image_files.read_image(path)
  assert read.shape == (40, 24, 3)
  # After a clockwise quarter turn the mark sits at the top-right.
  assert read[:6, -6:, 0].mean() > 200 and read[:6, :6, 0].mean() < 60


@pytest.mark.parametrize('content', [b'', b'not an image at all',
                                     b'\x89PNG\r\n\x1a\n' + b'\x00' * 20])
def test_unreadable_files_raise_naming_the_file(tmp_path, content):
  path = tmp_path / 'broken.png'
  path.write_bytes(content)
  with pytest.raises(image_files.UnreadableImageError, match='broken.png'):
    image_files.read_image(path)


def test_truncated_png_is_unreadable(tmp_path):
  buffer = io.BytesIO()
  Image.fromarray(_photo(64, 64)).save(buffer, format='PNG')
  path = tmp_path / 'truncated.png'
  path.write_bytes(buffer.getvalue()[:200])
  with pytest.raises(image_files.UnreadableImageError, match='truncated.png'):
    image_files.read_image(path)


def test_write_png_rounds_like_the_y_uint8_protocol(tmp_path):
  values = np.array([0.0, 0.49, 0.5, 0.51, 254.5, 255.0, 300.0, -3.0])
  image = np.tile((values / 255)[None, :, None], (2, 1, 3)).astype(np.float32)
  image_files.write_png(tmp_path / 'x.png', image)
  saved = image_files.read_image(tmp_path / 'x.png')
  np.testing.assert_array_equal(saved, np.asarray(metrics.to_uint8(image)))
  np.testing.assert_array_equal(saved[0, :, 0],
                                [0, 0, 1, 1, 255, 255, 255, 0])


def test_error_map_and_panel_layout():
  clean = np.full((10, 12, 3), 0.5, np.float32)
  derained = clean.copy()
  derained[:, 6:] += image_panels.ERROR_MAP_FULL_SCALE
  error = image_panels.error_map(derained, clean)
  assert error.shape == (10, 12, 3) and error.dtype == np.uint8
  assert error[:, :6].max() < 10  # no error: black
  assert error[:, 6:].min() > 150  # full-scale error: bright
  panel = image_panels.panel([metrics.to_uint8(clean), error],
                       ['clean', 'error'])
  assert panel.shape[1] == 12 + 4 + 12 and panel.shape[0] > 10
  with pytest.raises(ValueError, match='labels'):
    image_panels.panel([error], ['a', 'b'])


def test_output_names_are_flat_pngs():
  assert image_files.output_name('rain-001') == 'rain-001.png'
  assert image_files.output_name('Rain100H/test/rain-001.jpg') == (
      'Rain100H_test_rain-001.png')
