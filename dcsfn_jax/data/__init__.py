"""Deraining datasets (tfds, array_record, no TensorFlow) and the grain pipeline."""
from dcsfn_jax.data.catalog import SPECS as DATASETS
from dcsfn_jax.data.layouts import DatasetLayoutError
from dcsfn_jax.data.building import prepare
from dcsfn_jax.data.building import prepare_synthetic
from dcsfn_jax.data.sources import DatasetNotPreparedError
from dcsfn_jax.data.sources import load_split
