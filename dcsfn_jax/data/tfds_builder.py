"""tfds builder with one config per deraining dataset, written as array_record.

Stored features (one example per rainy image):
  rainy_encoded  the rainy file's bytes exactly as found (PNG/JPEG/...);
  clean_encoded  the clean file's bytes, or b'' when the clean image is a half
                 of the side-by-side rainy file or there is none;
  clean_side     'file', 'left', 'right' (half of rainy_encoded) or 'none';
  name, height, width (of one image of the pair, px), density ('' unknown).

The bytes are stored undecoded (no re-encoding), which also keeps TensorFlow
out: tfds's Image feature would need TF to decode, so `sources.load_split`
decodes with PIL instead. Every image is fully decoded once while writing, so
corrupt files and size mismatches fail the build, and tfds writes into a
temporary folder that only becomes the dataset when every split succeeded.

Next to tfds's files, the version folder holds `prepared_from.json`,
{"manual_dir": absolute path or null}: the folder the dataset was built from
(for synthetic_rain its photos folder; null for scikit-image's photos), and
for synthetic_rain the options that shape it (max_size, num_train, num_test,
seed). It is written into the same temporary folder, so every finished build
has one; `prepared_from` reads it back.
"""
import dataclasses
import io
import json
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from dcsfn_jax.data import catalog
from dcsfn_jax.data import layouts
from dcsfn_jax.data import synthetic
from dcsfn_jax.data.layouts import DatasetLayoutError, PrepareError
from dcsfn_jax.images import files as image_files
from dcsfn_jax.images.files import Pair

# scikit-image's photos, split so that no scene is in both sets (the two
# motorcycle views show one scene, so both are train).
TRAIN_PHOTOS = ('astronaut.png', 'brick.png', 'cell.png', 'chelsea.png',
                'coins.png', 'grass.png', 'hubble_deep_field.jpg', 'ihc.png',
                'moon.png', 'motorcycle_left.png', 'motorcycle_right.png',
                'retina.jpg')
TEST_PHOTOS = ('camera.png', 'coffee.png', 'gravel.png', 'rocket.jpg')


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
  """How `synthetic_rain` is generated.

  Train pair i uses train photo i mod len(photos) and alternates the 'light'
  and 'heavy' presets per pass over the photos; test likewise. The streak
  angle of each pair is drawn uniformly from [-max_angle, max_angle].
  """
  photos_dir: str | None = None   # None: scikit-image's photos
  max_size: int = 512             # longer side, px; larger photos are shrunk
  num_train: int = 48
  num_test: int = 8
  max_angle: float = 20.0
  seed: int = 0

  def __post_init__(self):
    minimum = {'max_size': 1, 'num_train': 1, 'num_test': 1, 'seed': 0}
    for field, least in minimum.items():
      value = getattr(self, field)
      if value < least:
        raise PrepareError(
            f'--{field}={value} is out of range: synthetic_rain needs '
            f'{field} >= {least}; pass --{field} {least} or more.')


def skimage_photo_dir() -> pathlib.Path:
  import skimage.data  # pylint: disable=g-import-not-at-top
  return pathlib.Path(os.path.dirname(skimage.data.__file__))


def _photo_split(options: SyntheticOptions) -> dict[str, list[pathlib.Path]]:
  if options.photos_dir is None:
    folder = skimage_photo_dir()
    return {'train': [folder / n for n in TRAIN_PHOTOS],
            'test': [folder / n for n in TEST_PHOTOS]}
  photos = image_files.list_images(options.photos_dir)
  if len(photos) < 2:
    raise DatasetLayoutError(
        f'synthetic_rain: {layouts.describe_folder(pathlib.Path(options.photos_dir))}; '
        'it needs at least two clean photos (train and test come from '
        'different photos).')
  num_test = max(1, len(photos) // 5)
  return {'train': photos[:-num_test], 'test': photos[-num_test:]}


def _load_photo(path: pathlib.Path, max_size: int) -> np.ndarray:
  with layouts.open_image(
      path, 'Replace it with a good copy, or delete it from the photos '
      'folder.') as image:
    image = image.convert('RGB')
    scale = max_size / max(image.size)
    if scale < 1:
      size = (max(1, round(image.width * scale)),
              max(1, round(image.height * scale)))
      image = image.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image)


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG')
  return buffer.getvalue()


def _decoded_size(path: pathlib.Path) -> tuple[int, int]:
  """(width, height) after a full decode; a clear error if it fails."""
  with layouts.open_image(path) as image:
    return image.size


def _example(pair: Pair) -> dict:
  width, height = _decoded_size(pair.rainy)
  clean_bytes = b''
  if pair.clean_side == 'file':
    clean_width, clean_height = _decoded_size(pair.clean)
    if (clean_width, clean_height) != (width, height):
      raise DatasetLayoutError(
          f'Pair sizes differ: rainy {pair.rainy} is {width}x{height} but '
          f'clean {pair.clean} is {clean_width}x{clean_height} (width x '
          'height). Replace the wrong file with the matching one.')
    clean_bytes = pair.clean.read_bytes()
  elif pair.clean_side in ('left', 'right'):
    if width % 2:
      raise DatasetLayoutError(
          f'{pair.rainy} is {width}x{height}: a side-by-side pair needs an '
          'even width (two equal halves). It is probably not a side-by-side '
          'pair, or it was cropped; replace it.')
    width //= 2
  return {
      'rainy_encoded': pair.rainy.read_bytes(),
      'clean_encoded': clean_bytes,
      'clean_side': pair.clean_side,
      'name': pair.name,
      'height': height,
      'width': width,
      'density': pair.density,
  }


SOURCE_FILE = 'prepared_from.json'
# The SyntheticOptions fields recorded in SOURCE_FILE: those a prepare flag
# sets.
RECORDED_OPTIONS = ('max_size', 'num_train', 'num_test', 'seed')


def prepared_from(builder: tfds.core.DatasetBuilder) -> dict | None:
  """The recorded source of a prepared dataset: {'manual_dir': str | None}
  and, for synthetic_rain, the RECORDED_OPTIONS; None for a dataset built
  before sources were recorded. A PrepareError names a record that is not
  such a JSON object."""
  record = pathlib.Path(builder.data_dir) / SOURCE_FILE
  if not record.exists():
    return None
  try:
    recorded = json.loads(record.read_text())
  except (OSError, ValueError, RecursionError) as error:
    recorded = ('nested too deeply' if isinstance(error, RecursionError)
                else 'unreadable' if isinstance(error, OSError)
                else 'not valid JSON')
  if not isinstance(recorded, dict):
    reason = recorded if isinstance(recorded, str) else type(recorded).__name__
    raise PrepareError(
        f'{record} is not the JSON object prepare writes ({reason}); pass '
        '--overwrite to rebuild the dataset.')
  return recorded


def recorded_options(options: SyntheticOptions) -> dict:
  """The RECORDED_OPTIONS of `options`, as SOURCE_FILE holds them."""
  return {field: getattr(options, field) for field in RECORDED_OPTIONS}


class DerainConfig(tfds.core.BuilderConfig):
  """One deraining dataset; `spec` says where its files are."""

  def __init__(self, *, spec: catalog.DatasetSpec):
    super().__init__(name=spec.name, description=spec.description)
    self.spec = spec


class Derain(tfds.core.GeneratorBasedBuilder):
  """Rainy/clean image pairs of every common deraining benchmark."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Original encoded bytes, array_record.'}
  BUILDER_CONFIGS = [DerainConfig(spec=spec) for spec in catalog.SPECS.values()]
  # tfds looks for URL checksums next to the builder's code, and on Python
  # >= 3.9 that look-up imports the absent `importlib_resources` for editable
  # installs. This builder downloads nothing, so it has no checksums file.
  code_path = None
  MANUAL_DOWNLOAD_INSTRUCTIONS = '\n\n'.join(
      f'{spec.name}:\n{spec.instructions}' for spec in catalog.SPECS.values())

  def __init__(self, *, manual_dir: str | os.PathLike | None = None,
               pairs: dict[str, list[Pair]] | None = None,
               synthetic_options: SyntheticOptions | None = None, **kwargs):
    """`pairs` ({split: pairs}, from `catalog.discover`) skips discovery."""
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    self.manual_dir = manual_dir
    self.pairs = pairs
    self.synthetic_options = synthetic_options or SyntheticOptions()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.builder_config.spec.instructions,
        features=tfds.features.FeaturesDict({
            'rainy_encoded': tfds.features.Tensor(shape=(), dtype=np.object_),
            'clean_encoded': tfds.features.Tensor(shape=(), dtype=np.object_),
            'clean_side': tfds.features.Text(),
            'name': tfds.features.Text(),
            'height': tfds.features.Scalar(dtype=np.int32),
            'width': tfds.features.Scalar(dtype=np.int32),
            'density': tfds.features.Text(),
        }),
        # Keep name order on disk; the training pipeline shuffles itself.
        disable_shuffling=True,
    )

  def source_dir(self) -> str | None:
    """Absolute path of the folder this build reads (None: scikit-image's
    photos)."""
    if self.builder_config.name == 'synthetic_rain':
      source = self.synthetic_options.photos_dir
    else:
      source = self.manual_dir
    return None if source is None else os.path.abspath(os.fspath(source))

  def _log_download_bytes(self):
    """Silent: tfds would print "Downloading and preparing dataset", but this
    builder downloads nothing (prepare prints its own summary)."""

  def _log_download_done(self):
    """Silent, as `_log_download_bytes`."""

  def _download_and_prepare(self, dl_manager, download_config=None):
    super()._download_and_prepare(dl_manager=dl_manager,
                                  download_config=download_config)
    # data_dir is tfds's temporary folder here, renamed once all is written.
    record = {'manual_dir': self.source_dir()}
    if self.builder_config.name == 'synthetic_rain':
      record.update(recorded_options(self.synthetic_options))
    (pathlib.Path(self.data_dir) / SOURCE_FILE).write_text(
        json.dumps(record) + '\n')

  def _split_generators(self, dl_manager):
    if self.builder_config.name == 'synthetic_rain':
      photos = _photo_split(self.synthetic_options)
      counts = {'train': self.synthetic_options.num_train,
                'test': self.synthetic_options.num_test}
      return {split: self._generate_synthetic(split, photos[split],
                                              counts[split])
              for split in ('train', 'test')}
    found = self.pairs or catalog.discover(
        self.builder_config.name, self.manual_dir or dl_manager.manual_dir)
    return {split: self._generate_examples(pairs)
            for split, pairs in found.items()}

  def _generate_examples(self, pairs: list[Pair]):
    for index, pair in enumerate(pairs):
      yield index, _example(pair)

  def _generate_synthetic(self, split: str, photos: list[pathlib.Path],
                          count: int):
    options = self.synthetic_options
    split_code = {'train': 0, 'test': 1}[split]
    cache = {}
    for index in range(count):
      photo = photos[index % len(photos)]
      if photo not in cache:
        cache[photo] = _load_photo(photo, options.max_size)
      clean = cache[photo]
      preset = ('light', 'heavy')[(index // len(photos)) % 2]
      rng = np.random.default_rng([options.seed, split_code, index])
      style = dataclasses.replace(
          synthetic.PRESETS[preset],
          angle=float(rng.uniform(-options.max_angle, options.max_angle)))
      rainy = synthetic.add_rain(clean, style, seed=int(rng.integers(2**31)))
      yield index, {
          'rainy_encoded': _png(rainy),
          'clean_encoded': _png(clean),
          'clean_side': 'file',
          'name': f'{photo.stem}_{index:04d}_{preset}',
          'height': clean.shape[0],
          'width': clean.shape[1],
          'density': preset,
      }
