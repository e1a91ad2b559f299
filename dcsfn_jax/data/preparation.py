"""Building prepared datasets: `prepare` (any dataset) and `prepare_synthetic`.

Problems with the request itself (a data_dir that is a file, a dataset
already prepared from another folder) raise `layouts.PrepareError`, of which
the layout and image problems (`DatasetLayoutError`) are a kind.
"""
import dataclasses
import os
import pathlib
import shutil
import sys
import tempfile
import uuid

from absl import logging
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants

from dcsfn_jax.data import tfds_builder
from dcsfn_jax.data import catalog
from dcsfn_jax.data.layouts import PrepareError


def _default_manual_dir(dataset: str, data_dir) -> pathlib.Path:
  root = pathlib.Path(data_dir) if data_dir else pathlib.Path(
      os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')).expanduser()
  return root / 'downloads' / 'manual' / dataset


def summarize(builder: tfds.core.DatasetBuilder) -> dict:
  """{split: {'examples', 'min_size', 'max_size'}} of a prepared dataset
  (sizes as H, W)."""
  summary = {}
  for split in builder.info.splits:
    stored = builder.as_data_source(split=split)
    sizes = [(int(stored[i]['height']), int(stored[i]['width']))
             for i in range(len(stored))]
    summary[split] = {'examples': len(stored),
                      'min_size': min(sizes, default=(0, 0)),
                      'max_size': max(sizes, default=(0, 0))}
  return summary


def _check_data_dir(data_dir, for_writing: bool) -> None:
  """A PrepareError if `data_dir`, or the folder it would be made in, is a
  file, or (`for_writing`) cannot be written to."""
  if data_dir is None or '://' in os.fspath(data_dir):
    return
  path = pathlib.Path(data_dir)
  folder = next(f for f in (path, *path.parents) if f.exists())
  if not folder.is_dir():
    where = 'is a file' if folder == path else (
        f'cannot be created: {folder} is a file')
    raise PrepareError(f'--data_dir {path} {where}; pass a folder (it is '
                       'created if missing).')
  if for_writing and not os.access(folder, os.W_OK | os.X_OK):
    raise PrepareError(f'--data_dir {path}: {folder} is not writable; pass '
                       'a folder you can write to.')


def remove_incomplete_builds(builder: tfds.core.DatasetBuilder
                             ) -> list[pathlib.Path]:
  """Deletes the `incomplete.*` folders that killed builds of this dataset
  left in its own folder (data_dir/derain/<dataset>); returns them."""
  dataset_dir = pathlib.Path(builder.data_dir).parent
  if not dataset_dir.is_dir():
    return []
  removed = []
  for entry in sorted(dataset_dir.iterdir()):
    if (entry.name.startswith(tfds_constants.INCOMPLETE_PREFIX)
        and entry.is_dir() and not entry.is_symlink()):
      try:
        shutil.rmtree(entry)
      except OSError as error:
        logging.warning('Could not remove %s, left by an interrupted build '
                        'of %s: %s', entry, builder.builder_config.name, error)
        continue
      logging.warning('Removed %s, left by an interrupted build of %s.',
                      entry, builder.builder_config.name)
      removed.append(entry)
  return removed


def _describe_source(manual_dir: str | None) -> str:
  return "scikit-image's photos" if manual_dir is None else manual_dir


def source_of(builder: tfds.core.DatasetBuilder) -> str:
  """The folder a prepared dataset was built from, in words."""
  record = tfds_builder.prepared_from(builder)
  if record is None:
    return 'a folder that was not recorded (an older build)'
  return _describe_source(record.get('manual_dir'))


def _same_folder(first: str | None, second: str | None) -> bool:
  if first is None or second is None:
    return first is second
  return os.path.realpath(first) == os.path.realpath(second)


def _check_same_source(builder: tfds_builder.Derain) -> None:
  """A PrepareError if the prepared dataset came from another folder than
  the one this build names."""
  record = tfds_builder.prepared_from(builder)
  wanted = builder.source_dir()
  if record is not None and _same_folder(record.get('manual_dir'), wanted):
    return
  raise PrepareError(
      f'{builder.builder_config.name} is already prepared at '
      f'{builder.data_dir} from {source_of(builder)}; pass --overwrite to '
      f'rebuild it from {_describe_source(wanted)}.')


def _flags(options: dict) -> str:
  return ' '.join(f'--{field}={value}' for field, value in options.items())


def _check_same_options(builder: tfds_builder.Derain) -> None:
  """A PrepareError if synthetic_rain was prepared with other max_size,
  num_train, num_test or seed than this build asks for."""
  record = tfds_builder.prepared_from(builder) or {}
  wanted = tfds_builder.recorded_options(builder.synthetic_options)
  differing = [field for field in wanted if record.get(field) != wanted[field]]
  if not differing:
    return
  recorded = {field: record.get(field) for field in differing}
  found = (_flags(recorded) if None not in recorded.values()
           else 'options that were not recorded (an older build)')
  raise PrepareError(
      f'synthetic_rain is already prepared at {builder.data_dir} with '
      f'{found}; pass --overwrite to rebuild it with '
      f'{_flags({field: wanted[field] for field in differing})}, or another '
      '--data_dir.')


def _swap_in(built: pathlib.Path, version_dir: pathlib.Path) -> None:
  """Puts the finished build `built` where `version_dir` is: two renames on
  one file system, the old build restored if the second fails."""
  retired = version_dir.parent / (
      f'{tfds_constants.INCOMPLETE_PREFIX}replaced.{uuid.uuid4().hex}')
  os.rename(version_dir, retired)
  try:
    os.rename(built, version_dir)
  except OSError:
    os.rename(retired, version_dir)
    raise
  shutil.rmtree(retired, ignore_errors=True)


def _build(builder: tfds_builder.Derain) -> None:
  """Runs tfds's build of `builder` (which downloads nothing); a full disk
  or an unwritable folder is a PrepareError. tfds's progress bars show only
  on a terminal: in a log they are lines of carriage returns."""
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory() as download_dir:
    try:
      builder.download_and_prepare(download_dir=download_dir)
    except OSError as error:
      raise PrepareError(
          f'writing {builder.builder_config.name} into {builder.data_dir} '
          f'failed ({error.strerror or error}); free some space or pass '
          'another --data_dir.') from error


def _rebuild_beside(builder: tfds_builder.Derain, data_dir
                    ) -> tfds_builder.Derain:
  """Builds the dataset again in a staging folder beside the prepared one
  and swaps it in only once it is complete: a failure, a kill or a full disk
  leaves the prepared dataset as it was (a killed build's staging folder is
  an `incomplete.*` one, removed by the next run)."""
  version_dir = pathlib.Path(builder.data_dir)
  staging = pathlib.Path(tempfile.mkdtemp(
      prefix=f'{tfds_constants.INCOMPLETE_PREFIX}rebuild.',
      dir=version_dir.parent))
  try:
    staged = tfds_builder.Derain(
        config=builder.builder_config.name, data_dir=os.fspath(staging),
        manual_dir=builder.manual_dir, pairs=builder.pairs,
        synthetic_options=builder.synthetic_options)
    _build(staged)
    _swap_in(pathlib.Path(staged.data_dir), version_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return tfds_builder.Derain(
      config=builder.builder_config.name, data_dir=data_dir,
      manual_dir=builder.manual_dir, synthetic_options=builder.synthetic_options)


def prepare(dataset: str, *, manual_dir=None, data_dir=None,
            synthetic_options: tfds_builder.SyntheticOptions | None = None,
            overwrite: bool = False, layout: str = 'auto'
            ) -> tfds.core.DatasetBuilder:
  """Builds `dataset` into data_dir; returns its builder.

  A dataset already prepared there is reused, unless `overwrite`; if
  `manual_dir` (or, for synthetic_rain, `synthetic_options`) is given and
  differs from the recorded one (see `tfds_builder.prepared_from`), that is a
  PrepareError. Leftovers of killed builds of the dataset are removed first.
  Layout problems are found before anything is written; a failure while
  writing (a corrupt image, a size mismatch, a full disk) leaves no new
  dataset behind, and with `overwrite` the prepared one stays as it was: the
  rebuild happens beside it and replaces it only once complete. `layout`: see
  `catalog.LAYOUT_MODES`.
  """
  data_dir = data_dir or None  # '' (a config's unset data_dir): tfds default
  if dataset not in catalog.SPECS:
    raise ValueError(f'Unknown dataset {dataset!r}; choose one of '
                     f'{", ".join(catalog.SPECS)}.')
  catalog.check_layout(dataset, layout)
  _check_data_dir(data_dir, for_writing=False)
  photos_dir = synthetic_options.photos_dir if synthetic_options else None
  source_named = manual_dir is not None or photos_dir is not None
  options_named = synthetic_options is not None
  if dataset == 'synthetic_rain':
    synthetic_options = synthetic_options or tfds_builder.SyntheticOptions()
    if manual_dir is not None:
      synthetic_options = dataclasses.replace(
          synthetic_options, photos_dir=os.fspath(manual_dir))
  elif manual_dir is None:
    manual_dir = _default_manual_dir(dataset, data_dir)
  builder = tfds_builder.Derain(config=dataset, data_dir=data_dir,
                                manual_dir=manual_dir,
                                synthetic_options=synthetic_options)
  if builder.is_prepared() and not overwrite:
    if source_named:
      _check_same_source(builder)
    if options_named and dataset == 'synthetic_rain':
      _check_same_options(builder)
    remove_incomplete_builds(builder)
    return builder
  _check_data_dir(data_dir, for_writing=True)
  remove_incomplete_builds(builder)
  if dataset != 'synthetic_rain':
    builder.pairs = catalog.discover(dataset, pathlib.Path(manual_dir), layout)
  if builder.is_prepared():
    return _rebuild_beside(builder, data_dir)
  # Folders this build creates; on failure the outermost goes, with all in it.
  version_dir = pathlib.Path(builder.data_dir)
  new_dirs = [d for d in (version_dir.parents[2], version_dir.parents[1],
                          version_dir.parent) if not d.exists()]
  try:
    _build(builder)
  except BaseException:
    if new_dirs:
      shutil.rmtree(new_dirs[0], ignore_errors=True)
    raise
  return builder


def prepare_synthetic(data_dir, *, photos_dir=None, max_size: int = 512,
                      num_train: int = 48, num_test: int = 8, seed: int = 0,
                      overwrite: bool = False) -> pathlib.Path:
  """Builds synthetic_rain into data_dir (no download) and returns data_dir."""
  options = tfds_builder.SyntheticOptions(
      photos_dir=None if photos_dir is None else os.fspath(photos_dir),
      max_size=max_size, num_train=num_train, num_test=num_test, seed=seed)
  prepare('synthetic_rain', data_dir=data_dir, synthetic_options=options,
          overwrite=overwrite)
  return pathlib.Path(data_dir)
