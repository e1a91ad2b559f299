"""DCSFN single-image deraining in JAX/Flax."""

__version__ = "0.1.0"
