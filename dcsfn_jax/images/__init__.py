"""Image files and panels: the one owner of reading, writing and pairing
image files (`files`), and of the panels made from images (`panels`).

A lower room: it imports numpy, PIL and `dcsfn_jax.metrics.pixels` only.
"""
