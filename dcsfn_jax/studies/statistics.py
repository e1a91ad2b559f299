"""Spread over seeds, and whether two variants differ by more than it.

The t quantiles and the Welch test are scipy.stats'; below 2 values a
spread is unknown (None), never 0.
"""
import dataclasses
import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Spread:
  """The seeds' figures of one metric: count, mean, sample standard
  deviation (ddof=1) and the CONFIDENCE interval of the mean (Student's t);
  std and interval are None below 2 values."""
  n: int
  mean: float
  std: float = None
  low: float = None
  high: float = None


def spread(values):
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return Spread(0, None)
  mean = float(values.mean())
  if values.size < 2:
    return Spread(1, mean)
  std = float(values.std(ddof=1))
  low, high = stats.t.interval(CONFIDENCE, values.size - 1, loc=mean,
                               scale=stats.sem(values))
  if std == 0:  # scipy gives nan for a zero scale: the interval is the mean
    low = high = mean
  return Spread(int(values.size), mean, std, float(low), float(high))


@dataclasses.dataclass(frozen=True)
class Difference:
  """mean(a) - mean(b) with its CONFIDENCE interval (Welch's t, unequal
  variances); interval and p None when either side has under 2 values."""
  difference: float
  low: float = None
  high: float = None
  p_value: float = None

  @property
  def resolved(self):
    """True/False: whether the interval excludes 0; None when unknown."""
    if self.low is None:
      return None
    return self.low > 0 or self.high < 0


def difference(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size == 0 or b.size == 0:
    return None
  delta = float(a.mean() - b.mean())
  if a.size < 2 or b.size < 2:
    return Difference(delta)
  result = stats.ttest_ind(a, b, equal_var=False)
  interval = result.confidence_interval(CONFIDENCE)
  low, high = float(interval.low), float(interval.high)
  if math.isnan(low):  # both sides without spread
    return Difference(delta, delta, delta, 0.0 if delta else 1.0)
  return Difference(delta, low, high, float(result.pvalue))
