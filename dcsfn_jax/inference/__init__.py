"""Running the network on images.

  runner     the sharded jitted forward pass, shape buckets, tiling
  ensemble   the geometric self-ensemble (8 flips and rotations)
  derainer   photos of any size and mode in, derained PNGs out
"""
