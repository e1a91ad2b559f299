"""Geometric self-ensemble: the 8 flips and rotations, each undone, averaged.

For an image x and the dihedral group's 8 elements g (rotations by 0, 90,
180, 270 degrees, each with and without a horizontal flip), the ensemble is
mean_g g^-1(f(g(x))). It costs 8 forward passes. Rotations by 90 degrees swap
height and width, so a non-square image runs at two shapes.
"""
import jax.numpy as jnp

# (quarter turns, flip) for each of the 8 transforms; the identity first.
TRANSFORMS = tuple((turns, flip) for flip in (False, True)
                   for turns in range(4))


def apply(images, turns, flip):
  """NHWC images flipped left-right (if flip), then rotated by `turns`
  quarter turns counter-clockwise."""
  if flip:
    images = images[:, :, ::-1]
  return jnp.rot90(images, turns, axes=(1, 2))


def invert(images, turns, flip):
  """The inverse of `apply(., turns, flip)`."""
  images = jnp.rot90(images, -turns, axes=(1, 2))
  return images[:, :, ::-1] if flip else images


def _pairwise_mean(values):
  """Mean of 2^k arrays summed as a balanced tree: equal inputs give exactly
  their value back (each sum only doubles)."""
  while len(values) > 1:
    values = [a + b for a, b in zip(values[::2], values[1::2])]
  return values[0] / len(TRANSFORMS)


def self_ensemble(fn):
  """NHWC images -> images function `fn` -> its 8-transform ensemble."""

  def ensembled(images):
    return _pairwise_mean([invert(fn(apply(images, turns, flip)), turns, flip)
                           for turns, flip in TRANSFORMS])

  return ensembled
