"""Building prepared datasets: `prepare` (any dataset) and `prepare_synthetic`."""
import dataclasses
import os
import pathlib
import shutil
import tempfile

import tensorflow_datasets as tfds

from dcsfn_jax.data import tfds_builder
from dcsfn_jax.data import catalog


def _default_manual_dir(dataset: str, data_dir) -> pathlib.Path:
  root = pathlib.Path(data_dir) if data_dir else pathlib.Path(
      os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')).expanduser()
  return root / 'downloads' / 'manual' / dataset


def summarize(builder: tfds.core.DatasetBuilder) -> dict:
  """{split: {'pairs', 'min_size', 'max_size'}} of a prepared dataset (H, W)."""
  summary = {}
  for split in builder.info.splits:
    stored = builder.as_data_source(split=split)
    sizes = [(int(stored[i]['height']), int(stored[i]['width']))
             for i in range(len(stored))]
    summary[split] = {'pairs': len(stored), 'min_size': min(sizes),
                      'max_size': max(sizes)}
  return summary


def prepare(dataset: str, *, manual_dir=None, data_dir=None,
            synthetic_options: tfds_builder.SyntheticOptions | None = None,
            overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds `dataset` into data_dir; returns its builder.

  Layout problems are found before anything is written; a failure while
  writing (a corrupt image, a size mismatch) leaves no dataset behind.
  """
  data_dir = data_dir or None  # '' (a config's unset data_dir): tfds default
  if dataset not in catalog.SPECS:
    raise ValueError(f'Unknown dataset {dataset!r}; choose one of '
                     f'{", ".join(catalog.SPECS)}.')
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
    return builder
  if dataset != 'synthetic_rain':
    builder.pairs = catalog.discover(dataset, pathlib.Path(manual_dir))
  # Folders this build creates; on failure the outermost goes, with all in it.
  version_dir = pathlib.Path(builder.data_dir)
  new_dirs = [d for d in (version_dir.parents[2], version_dir.parents[1],
                          version_dir.parent) if not d.exists()]
  mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  with tempfile.TemporaryDirectory() as download_dir:
    try:
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(download_mode=mode))
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
