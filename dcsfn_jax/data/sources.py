"""Random access to prepared datasets, decoded to uint8 RGB (`images.files`)."""
import os

from dcsfn_jax.data import tfds_builder
from dcsfn_jax.data import catalog
from dcsfn_jax.images import files as image_files


class DatasetNotPreparedError(FileNotFoundError):
  """The dataset has not been written to data_dir yet."""


def decode_example(stored: dict) -> dict:
  """The stored record (see `tfds_builder`) as {'rainy', 'clean'?, 'name', ...}."""
  rainy = image_files.decode_rgb(stored['rainy_encoded'])
  side = _text(stored['clean_side'])
  example = {'name': _text(stored['name']),
             'height': int(stored['height']),
             'width': int(stored['width'])}
  if side == 'file':
    example['rainy'] = rainy
    example['clean'] = image_files.decode_rgb(stored['clean_encoded'])
  elif side in ('left', 'right'):
    half = rainy.shape[1] // 2
    left, right = rainy[:, :half], rainy[:, half:]
    example['rainy'], example['clean'] = (
        (right, left) if side == 'left' else (left, right))
  else:
    example['rainy'] = rainy
  density = _text(stored['density'])
  if density:
    example['density'] = density
  return example


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


class DecodedSource:
  """len() and [i] over a prepared split, each item a decoded example dict."""

  def __init__(self, stored_source, dataset: str, split: str):
    self._stored = stored_source
    self.dataset = dataset
    self.split = split

  def __len__(self) -> int:
    return len(self._stored)

  def __getitem__(self, index: int) -> dict:
    return decode_example(self._stored[index])

  def __repr__(self) -> str:
    return f'DecodedSource({self.dataset}/{self.split}, {len(self)} examples)'


def prepare_command(dataset: str, data_dir) -> str:
  manual = '' if dataset == 'synthetic_rain' else ' --manual_dir DIR'
  location = f' --data_dir {data_dir}' if data_dir else ''
  return (f'python -m dcsfn_jax.prepare --dataset {dataset}'
          f'{manual}{location}')


def load_split(dataset: str, split: str,
               data_dir: str | os.PathLike | None = None) -> DecodedSource:
  """Random-access source of one prepared split.

  Items are dicts: 'rainy' uint8 [H, W, 3] RGB, 'clean' likewise (absent for
  real_rain), 'name', 'height', 'width' and, where known, 'density'.
  """
  if dataset not in catalog.SPECS:
    raise ValueError(f'Unknown dataset {dataset!r}; choose one of '
                     f'{", ".join(catalog.SPECS)}.')
  data_dir = data_dir or None  # '' (a config's unset data_dir): tfds default
  builder = tfds_builder.Derain(config=dataset, data_dir=data_dir)
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f'{dataset} is not prepared in {builder.data_dir}. Prepare it with:\n'
        f'  {prepare_command(dataset, data_dir)}')
  splits = list(builder.info.splits.keys())
  if split not in splits:
    raise ValueError(f'{dataset} has no split {split!r}; it has '
                     f'{", ".join(splits)}.')
  return DecodedSource(builder.as_data_source(split=split), dataset, split)


class Subset:
  """len() and [i] over chosen examples of a random-access source."""

  def __init__(self, source, indices):
    self._source = source
    self._indices = range(len(source))[indices] if isinstance(
        indices, slice) else list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict:
    return self._source[self._indices[index]]


def first(source, count: int) -> Subset:
  """The first `count` examples of `source` (all of them if it has fewer)."""
  return Subset(source, slice(0, count))


def process_share(source, process_index: int, process_count: int) -> Subset:
  """This process's share: every process_count-th example from
  process_index, so the shares are disjoint and cover the source."""
  return Subset(source, slice(process_index, None, process_count))
