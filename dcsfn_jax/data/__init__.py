"""Deraining datasets (tfds, array_record, no TensorFlow) and the grain pipeline.

  catalog        every benchmark: its layouts, splits and citation
  layouts        finding rainy/clean pairs in a downloaded folder
  tfds_builder   the tfds builder that writes array_record files
  preparation    building a dataset into a data_dir
  sources        random access to prepared splits, subsets of them
  synthetic      rain streaks drawn onto clean photos
  pipeline       augmented training batches (grain)
"""
from dcsfn_jax.data.catalog import SPECS
from dcsfn_jax.data.layouts import DatasetLayoutError
from dcsfn_jax.data.layouts import PrepareError
from dcsfn_jax.data.preparation import prepare
from dcsfn_jax.data.preparation import prepare_synthetic
from dcsfn_jax.data.sources import DatasetNotPreparedError
from dcsfn_jax.data.sources import load_split
