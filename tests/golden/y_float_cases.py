"""The image pairs behind the y_float golden values: integer formulas, so
numpy builds them bit for bit on any machine (no random generator whose
stream could change between versions)."""
import numpy as np

# name -> (height, width, seed, noise amplitude in levels)
CASES = {
    'texture_37x53': (37, 53, 1, 30),
    'flat_regions_48x64': (48, 64, 2, 12),
    'small_9x12': (9, 12, 3, 20),
    'strip_5x16': (5, 16, 4, 40),
}


def _hash(i, j, c, seed):
  """Deterministic pseudo-random 0..255 per pixel, int64 arithmetic."""
  value = (i * 7919 + j * 104729 + c * 1299709 + seed * 15485863) % (2**32)
  return ((value * 2654435761) % (2**32)) >> 24


def pair(name):
  """(derained, clean): uint8 RGB [H, W, 3] for case `name`."""
  height, width, seed, amplitude = CASES[name]
  i, j, c = np.meshgrid(np.arange(height, dtype=np.int64),
                        np.arange(width, dtype=np.int64),
                        np.arange(3, dtype=np.int64), indexing='ij')
  clean = 30 + (3 * i * i + 7 * j + 50 * c + 4 * ((i * j + seed) % 17)
                + (_hash(i, j, c, seed) % 23)) % 190
  noise = _hash(i, j, c, seed + 100) % (2 * amplitude + 1) - amplitude
  derained = np.clip(clean + noise, 0, 255)
  if name == 'flat_regions_48x64':
    # Saturated sky and a flat wall, identical in both: MATLAB's float64
    # finds zero variance there, float32 E[x^2] - mu^2 would not.
    clean[:16, :24] = derained[:16, :24] = 255
    clean[30:, 40:] = derained[30:, 40:] = 97
    derained[20:28, 0:10] = 255  # a flat patch only in the output
  return derained.astype(np.uint8), clean.astype(np.uint8)
