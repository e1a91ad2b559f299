"""`score` reads the folders other methods ship: pairing by name, 16-bit
PNGs, size mismatches, border crops, and refusals that name the files.

The layouts mimic the repositories' own scripts:
  Restormer/MPRNet  Deraining/test.py saves results/DATASET/STEM.png for
                    Datasets/test/DATASET/input/STEM.(png|jpg); the MATLAB
                    evaluate_PSNR_SSIM.m reads Datasets/test/DATASET/target/.
  DRSformer         evaluations/Evaluation_DID-Data_DDN-Data/results/
                    N_DR.png with N_GT.png in one folder (statistic.m), and
                    results/Rain200H/N.png with Datasets/Rain200H/targets/.
  PReNet            rain-NNN.png outputs for norain-NNN.png ground truth.
  BasicSR           visualization/DATASET/STEM_{suffix}.png (sr_model.py).
"""
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from dcsfn_jax import metrics
from dcsfn_jax.evaluation import evaluator
from dcsfn_jax.evaluation import scoring
from dcsfn_jax.images import files as image_files


def _image(seed, height=24, width=32):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3),
                                              dtype=np.uint8)


def _write(path, image):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)
  return path


def _names(pairs):
  return [(p.name, p.clean.rsplit('/', 1)[-1],
           None if p.rainy is None else p.rainy.rsplit('/', 1)[-1])
          for p in pairs]


def test_restormer_results_against_its_dataset_folder(tmp_path):
  dataset = tmp_path / 'Datasets' / 'test' / 'Test2800'
  results = tmp_path / 'results' / 'Test2800'
  for stem in ('1', '2', '10'):
    _write(dataset / 'input' / f'{stem}.png', _image(1))
    # Test2800's targets are JPEGs; test.py saves every result as PNG.
    _write(dataset / 'target' / f'{stem}.jpg', _image(2))
    _write(results / f'{stem}.png', _image(3))
  pairs, folders, rules = scoring.find_pairs(results, dataset, dataset)
  assert _names(pairs) == [('1.png', '1.jpg', '1.png'),
                           ('10.png', '10.jpg', '10.png'),
                           ('2.png', '2.jpg', '2.png')]
  assert folders['clean'].endswith('target')
  assert folders['rainy'].endswith('input')
  assert rules == {'clean': 'identical stems', 'rainy': 'identical stems'}


def test_drsformer_dr_and_gt_files_in_one_folder(tmp_path):
  results = tmp_path / 'results'
  for n in (1, 2, 12):
    _write(results / f'{n}_DR.png', _image(n))
    _write(results / f'{n}_GT.png', _image(n + 50))
  pairs, _, rules = scoring.find_pairs(results, results)
  assert _names(pairs) == [('12_DR.png', '12_GT.png', None),
                           ('1_DR.png', '1_GT.png', None),
                           ('2_DR.png', '2_GT.png', None)]
  assert rules['clean'] == 'naming conventions'


def test_drsformer_rain200h_results_against_targets(tmp_path):
  for n in (1, 2, 3):
    _write(tmp_path / 'results' / 'Rain200H' / f'{n}.png', _image(n))
    _write(tmp_path / 'Datasets' / 'Rain200H' / 'targets' / f'{n}.png',
           _image(n))
  pairs, folders, _ = scoring.find_pairs(tmp_path / 'results' / 'Rain200H',
                                         tmp_path / 'Datasets' / 'Rain200H')
  assert [p.name for p in pairs] == ['1.png', '2.png', '3.png']
  assert folders['clean'].endswith('targets')


def test_prenet_rain_and_norain_names(tmp_path):
  for n in (1, 2, 100):
    _write(tmp_path / 'out' / f'rain-{n:03d}.png', _image(n))
    _write(tmp_path / 'Rain100H' / f'norain-{n:03d}.png', _image(n))
    _write(tmp_path / 'Rain100H' / f'rain-{n:03d}.png', _image(n))
  folder = tmp_path / 'Rain100H'  # PReNet keeps both in one folder
  pairs, _, rules = scoring.find_pairs(tmp_path / 'out', folder, folder)
  assert _names(pairs) == [(f'rain-{n:03d}.png', f'norain-{n:03d}.png',
                            f'rain-{n:03d}.png') for n in (1, 2, 100)]
  assert rules == {'clean': 'naming conventions',
                   'rainy': 'naming conventions'}


def test_basicsr_suffix_with_underscores_in_the_run_name(tmp_path):
  for stem in ('1', '2', 'rain-3'):
    _write(tmp_path / 'visualization' / 'Rain100H'
           / f'{stem}_Deraining_Restormer.png', _image(1))
  for stem in ('1', '2', 'norain-3'):
    _write(tmp_path / 'gt' / f'{stem}.png', _image(2))
  pairs, _, rules = scoring.find_pairs(
      tmp_path / 'visualization' / 'Rain100H', tmp_path / 'gt')
  assert _names(pairs) == [
      ('1_Deraining_Restormer.png', '1.png', None),
      ('2_Deraining_Restormer.png', '2.png', None),
      ('rain-3_Deraining_Restormer.png', 'norain-3.png', None)]
  assert "'_Deraining_Restormer'" in rules['clean']


def test_unmatched_files_are_listed_from_both_sides(tmp_path):
  for n in range(1, 14):
    _write(tmp_path / 'out' / f'{n}.png', _image(n))
  for n in range(3, 16):
    _write(tmp_path / 'gt' / f'{n}.png', _image(n))
  _write(tmp_path / 'gt' / 'extra.png', _image(0))
  with pytest.raises(ValueError) as error:
    scoring.find_pairs(tmp_path / 'out', tmp_path / 'gt')
  message = str(error.value)
  assert '\n' not in message
  assert '2 in --derained without a partner: 1.png, 2.png' in message
  assert '3 in --clean without a partner: 14.png, 15.png, extra.png' in message
  assert 'pairs 11 of 13 and 14 files' in message


def test_long_lists_are_cut_and_clashing_names_named(tmp_path):
  for n in range(20):
    _write(tmp_path / 'out' / f'a{n:02d}.png', _image(n))
    _write(tmp_path / 'gt' / f'b{n:02d}.png', _image(n))
  with pytest.raises(ValueError, match=r'a07\.png \(\+12 more\)'):
    scoring.find_pairs(tmp_path / 'out', tmp_path / 'gt')
  _write(tmp_path / 'one' / '1.png', _image(1))
  _write(tmp_path / 'two' / '1.png', _image(1))
  _write(tmp_path / 'two' / '1.jpg', _image(1))
  with pytest.raises(ValueError, match='named like another file'):
    scoring.find_pairs(tmp_path / 'one', tmp_path / 'two')


def test_folders_that_cannot_be_read_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='--derained .*nothing'):
    scoring.find_pairs(tmp_path / 'nothing', tmp_path)
  _write(tmp_path / 'out' / '1.png', _image(1))
  (tmp_path / 'empty' / 'target').mkdir(parents=True)
  with pytest.raises(ValueError, match='--clean .*empty holds no images.*'
                     'target/'):
    scoring.find_pairs(tmp_path / 'out', tmp_path / 'empty')
  with pytest.raises(NotADirectoryError, match='--clean'):
    scoring.find_pairs(tmp_path / 'out', tmp_path / 'out' / '1.png')
  with pytest.raises(ValueError, match='none of its files is named as a '
                     'clean image'):
    scoring.find_pairs(tmp_path / 'out', tmp_path / 'out')


def test_a_size_mismatch_names_both_files(tmp_path):
  _write(tmp_path / 'out' / '1.png', _image(1, 24, 32))
  _write(tmp_path / 'gt' / '1.png', _image(2, 24, 31))
  pairs, _, _ = scoring.find_pairs(tmp_path / 'out', tmp_path / 'gt')
  with pytest.raises(ValueError) as error:
    _ = scoring.ScoredImages(pairs)[0]
  message = str(error.value)
  assert str(tmp_path / 'out' / '1.png') in message
  assert str(tmp_path / 'gt' / '1.png') in message
  assert '32x24' in message and '31x24' in message


def test_crop_border_crops_every_image_and_refuses_too_much(tmp_path):
  derained, clean, rainy = _image(1), _image(2), _image(3)
  _write(tmp_path / 'out' / '1.png', derained)
  _write(tmp_path / 'gt' / '1.png', clean)
  _write(tmp_path / 'in' / '1.png', rainy)
  pairs, _, _ = scoring.find_pairs(tmp_path / 'out', tmp_path / 'gt',
                                   tmp_path / 'in')
  example = scoring.ScoredImages(pairs, crop_border=4)[0]
  too_much = scoring.ScoredImages(pairs, crop_border=12)
  for key, image in (('derained', derained), ('clean', clean),
                     ('rainy', rainy)):
    np.testing.assert_array_equal(example[key], image[4:-4, 4:-4])
  with pytest.raises(ValueError, match='--crop_border=12 leaves nothing'):
    _ = too_much[0]


def _png_chunk(kind, payload):
  return (struct.pack('>I', len(payload)) + kind + payload
          + struct.pack('>I', zlib.crc32(kind + payload) & 0xffffffff))


def _write_png16(path, pixels, exif=None):
  """A 16-bit RGB(A) PNG, cycling the five PNG row filters (Pillow cannot
  write 16-bit colour)."""
  height, width, channels = pixels.shape
  rows = np.frombuffer(pixels.astype('>u2').tobytes(), np.uint8).reshape(
      height, -1).astype(np.int64)
  step = 2 * channels
  encoded = []
  for y, row in enumerate(rows):
    above = rows[y - 1] if y else np.zeros_like(row)
    left = np.concatenate([np.zeros(step, np.int64), row[:-step]])
    above_left = np.concatenate([np.zeros(step, np.int64), above[:-step]])
    kind = y % 5
    if kind == 4:
      estimate = left + above - above_left
      near = [np.abs(estimate - v) for v in (left, above, above_left)]
      predictor = np.where((near[0] <= near[1]) & (near[0] <= near[2]), left,
                           np.where(near[1] <= near[2], above, above_left))
    else:
      predictor = [0 * row, left, above, (left + above) // 2][kind]
    encoded.append(bytes([kind]) + ((row - predictor) % 256).astype(
        np.uint8).tobytes())
  header = struct.pack('>IIBBBBB', width, height, 16,
                       2 if channels == 3 else 6, 0, 0, 0)
  chunks = _png_chunk(b'IHDR', header)
  if exif is not None:
    chunks += _png_chunk(b'eXIf', exif)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunks
                   + _png_chunk(b'IDAT', zlib.compress(b''.join(encoded)))
                   + _png_chunk(b'IEND', b''))


def _im2uint8(pixels16):
  return ((pixels16.astype(np.uint32) + 128) // 257).astype(np.uint8)


def test_sixteen_bit_colour_pngs_are_rounded_not_truncated(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 65536, (13, 17, 3)).astype(np.uint16)
  rgb[0, :3] = [[0, 128, 129], [65535, 65406, 32896], [384, 385, 257]]
  _write_png16(tmp_path / 'rgb.png', rgb)
  decoded, sixteen_bit = image_files.read_scored_image(tmp_path / 'rgb.png')
  assert sixteen_bit
  np.testing.assert_array_equal(decoded, _im2uint8(rgb))
  np.testing.assert_array_equal(decoded[0, :3], [[0, 0, 1], [255, 254, 128],
                                                 [1, 1, 1]])
  # What plain Pillow gives: the top byte, off by one level in many pixels.
  truncated = image_files.read_image(tmp_path / 'rgb.png')
  np.testing.assert_array_equal(truncated, (rgb >> 8).astype(np.uint8))
  assert np.mean(truncated != decoded) > 0.2

  rgba = rng.integers(0, 65536, (6, 5, 4)).astype(np.uint16)
  _write_png16(tmp_path / 'rgba.png', rgba)
  np.testing.assert_array_equal(
      image_files.read_scored_image(tmp_path / 'rgba.png')[0],
      _im2uint8(rgba[..., :3]))


def test_sixteen_bit_pngs_keep_their_exif_orientation_and_gray(tmp_path):
  rgb = np.random.default_rng(1).integers(0, 65536, (7, 9, 3)).astype(
      np.uint16)
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
  _write_png16(tmp_path / 'rotated16.png', rgb, exif=exif.tobytes()[6:])
  Image.fromarray(_im2uint8(rgb)).save(tmp_path / 'rotated8.png',
                                       exif=exif.tobytes())
  decoded, _ = image_files.read_scored_image(tmp_path / 'rotated16.png')
  assert decoded.shape == (9, 7, 3)
  np.testing.assert_array_equal(decoded,
                                image_files.read_image(
                                    tmp_path / 'rotated8.png'))

  gray = np.random.default_rng(2).integers(0, 65536, (5, 6)).astype(np.uint16)
  Image.fromarray(gray).save(tmp_path / 'gray16.png')
  decoded, sixteen_bit = image_files.read_scored_image(tmp_path / 'gray16.png')
  assert sixteen_bit
  np.testing.assert_array_equal(decoded[..., 0], _im2uint8(gray))


def test_eight_bit_jpeg_and_bmp_read_as_images_does(tmp_path):
  image = _image(5)
  for name in ('a.jpg', 'a.bmp', 'a.png'):
    _write(tmp_path / name, image)
    decoded, sixteen_bit = image_files.read_scored_image(tmp_path / name)
    assert not sixteen_bit
    np.testing.assert_array_equal(decoded,
                                  image_files.read_image(tmp_path / name))


def test_dataset_and_split_are_catalog_names():
  assert scoring.check_dataset(None, None) == (None, None)
  assert scoring.check_dataset('rain100h', None) == ('rain100h', 'test')
  assert scoring.check_dataset('rain13k', 'test100') == ('rain13k', 'test100')
  with pytest.raises(ValueError, match='no test split.*test100'):
    scoring.check_dataset('rain13k', None)
  with pytest.raises(ValueError, match='not one of'):
    scoring.check_dataset('rain100', None)
  with pytest.raises(ValueError, match='not a split of rain100h'):
    scoring.check_dataset('rain100h', 'test100')
  with pytest.raises(ValueError, match='--split needs --dataset'):
    scoring.check_dataset(None, 'test')


def test_score_folders_crops_before_every_protocol(tmp_path):
  derained = [_image(n, 30, 40) for n in range(3)]
  clean = [np.clip(d.astype(int) + 9 * (n + 1), 0, 255).astype(np.uint8)
           for n, d in enumerate(derained)]
  for n in range(3):
    _write(tmp_path / 'out' / f'{n}_DR.png', derained[n])
    _write(tmp_path / 'out' / f'{n}_GT.png', clean[n])
  summary = scoring.score_folders(
      tmp_path / 'out', tmp_path / 'out', crop_border=3,
      output_dir=tmp_path / 'report', progress=False)
  assert summary['crop_border'] == 3 and not summary['rainy_baseline']

  def cropped(arrays):
    return metrics.to_float(np.stack([a[3:-3, 3:-3] for a in arrays]))

  expected = metrics.image_metrics(cropped(derained), cropped(clean))
  for name, values in expected.items():
    np.testing.assert_allclose(summary['means'][name],
                               float(np.mean(values)), atol=1e-4)
  assert not any(name.endswith('_rainy') for name in summary['means'])
  header = (tmp_path / 'report' / 'per_image.csv').read_text().splitlines()[0]
  assert 'rainy' not in header and 'y_float/ssim' in header
  table = (tmp_path / 'report' / 'results.md').read_text()
  assert 'rainy input' not in table and '3 px cropped' in table


def test_a_broken_sixteen_bit_png_is_named(tmp_path):
  rgb = np.random.default_rng(3).integers(0, 65536, (40, 40, 3)).astype(
      np.uint16)
  _write_png16(tmp_path / 'whole.png', rgb)
  data = (tmp_path / 'whole.png').read_bytes()
  (tmp_path / 'broken.png').write_bytes(data[:len(data) // 2])
  with pytest.raises(image_files.UnreadableImageError, match='broken.png'):
    image_files.read_scored_image(tmp_path / 'broken.png')


def test_an_unusable_output_is_refused_before_scoring(tmp_path):
  _write(tmp_path / 'out' / '1.png', _image(1))
  _write(tmp_path / 'gt' / '1.png', _image(1))
  (tmp_path / 'notes.txt').write_text('a file')
  for output, error in ((tmp_path / 'notes.txt', NotADirectoryError),
                        (tmp_path / 'notes.txt' / 'report', NotADirectoryError),
                        (tmp_path / 'gt', FileExistsError)):
    with pytest.raises(error, match='--output|--overwrite'):
      scoring.score_folders(tmp_path / 'out', tmp_path / 'gt',
                            output_dir=output, progress=False)
  with pytest.raises(ValueError, match='--crop_border=-1'):
    scoring.score_folders(tmp_path / 'out', tmp_path / 'gt', crop_border=-1)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['gt', 'notes.txt',
                                                        'out']


def test_an_output_that_cannot_be_created_is_found_before_any_image_is_read(
    tmp_path, monkeypatch):
  _write(tmp_path / 'out' / '1.png', _image(1))
  _write(tmp_path / 'gt' / '1.png', _image(1))

  def read(path):
    raise AssertionError(f'{path} read before --output was checked')

  monkeypatch.setattr(image_files, 'read_scored_image', read)
  output = tmp_path / ('x' * 300) / 'report'  # a name no file system takes
  with pytest.raises(OSError, match='--output .* cannot be created'):
    scoring.score_folders(tmp_path / 'out', tmp_path / 'gt',
                          output_dir=output, progress=False)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['gt', 'out']


def test_overwrite_replaces_only_an_earlier_report(tmp_path):
  for n in range(2):
    _write(tmp_path / 'out' / f'{n}.png', _image(n))
    _write(tmp_path / 'gt' / f'{n}.png', _image(n + 5))
  report = tmp_path / 'report'
  scoring.score_folders(tmp_path / 'out', tmp_path / 'gt', output_dir=report,
                        progress=False)
  scoring.score_folders(tmp_path / 'out', tmp_path / 'gt', output_dir=report,
                        overwrite=True, progress=False)  # its own: replaced
  (report / 'results.md').write_text('my notes on the run\n')
  with pytest.raises(FileExistsError,
                     match='results.md exists and was not written by '
                           'dcsfn_jax; --overwrite replaces only earlier'):
    scoring.score_folders(tmp_path / 'out', tmp_path / 'gt',
                          output_dir=report, overwrite=True, progress=False)
  assert (report / 'results.md').read_text() == 'my notes on the run\n'


class _RecordingBar:
  """Stands in for tqdm.tqdm: records the label and every update."""
  made = []

  def __init__(self, *args, desc=None, total=None, **kwargs):
    del args, kwargs
    self.desc, self.total, self.n = desc, total, 0
    _RecordingBar.made.append(self)

  def update(self, count):
    self.n += count

  def close(self):
    pass


def test_the_progress_bar_says_score_and_counts_scored_images(
    tmp_path, monkeypatch):
  for n in range(3):
    _write(tmp_path / 'out' / f'{n}.png', _image(n))
    _write(tmp_path / 'gt' / f'{n}.png', _image(n + 5))
  monkeypatch.setattr(evaluator.tqdm, 'tqdm', _RecordingBar)
  _RecordingBar.made = []
  seen = []
  pairs, _, _ = scoring.find_pairs(tmp_path / 'out', tmp_path / 'gt')
  scorer = evaluator.Evaluator(None, batch_size=2, baseline=False)
  scorer.run(None, scoring.ScoredImages(pairs), progress=True,
             progress_label='score',
             on_image=lambda scored: seen.append(_RecordingBar.made[-1].n))
  (bar,) = _RecordingBar.made
  assert bar.desc == 'score' and bar.total == 3 and bar.n == 3
  # Counted when scored (after each batch), never ahead of the images
  # handed on.
  assert all(count <= index for index, count in enumerate(seen)), seen
  _RecordingBar.made = []
  scoring.score_folders(tmp_path / 'out', tmp_path / 'gt',
                        output_dir=tmp_path / 'report', progress=True)
  assert [bar.desc for bar in _RecordingBar.made] == ['score']
