"""The released learning-rate recipe: Adam, lr / 10 at 3/5 and 4/5 of training.

The released loop steps PyTorch's MultiStepLR once per iteration *before*
`optimizer.step()`, so update i (0-based) already runs at the rate the
scheduler gives for iteration i + 1: each decay lands one update earlier than
the milestone's face value.
"""
import jax.numpy as jnp


def released_steps(epochs, num_pairs, batch_size):
  """(total_steps, milestones) as the released settings compute them.

  Args:
    epochs: E (800 in the release).
    num_pairs: N, training pairs in the split.
    batch_size: B, the global batch.

  Returns:
    total = int(E * N / B) and (int(3/5 * E * N / B), int(4/5 * E * N / B)),
    evaluated in the same float order as the release.
  """
  total = int((epochs * num_pairs) / batch_size)
  milestones = (int(3 / 5 * epochs * num_pairs / batch_size),
                int(4 / 5 * epochs * num_pairs / batch_size))
  return total, milestones


def milestones_at_fractions(total_steps, fractions=(3 / 5, 4 / 5)):
  """Milestones int(f * total_steps), for runs whose length is set directly."""
  return tuple(int(f * total_steps) for f in fractions)


def multistep_lr(base_lr, milestones, gamma=0.1):
  """An optax-style schedule: update count -> learning rate.

  Matches the released loop: update i runs at base_lr * gamma**k, with k the
  number of milestones m such that m <= i + 1 (MultiStepLR after i + 1 calls
  to scheduler.step()).

  Args:
    base_lr: learning rate before the first milestone.
    milestones: increasing iteration numbers (MultiStepLR's milestones).
    gamma: factor applied at each milestone.
  """
  milestones = tuple(int(m) for m in milestones)
  if list(milestones) != sorted(milestones):
    raise ValueError(f'milestones must be increasing, got {milestones}.')
  # Python floats, multiplied in the order PyTorch multiplies them.
  rates = [float(base_lr)]
  for _ in milestones:
    rates.append(rates[-1] * gamma)
  rates = jnp.asarray(rates, jnp.float32)
  milestones_array = jnp.asarray(milestones, jnp.int32)

  def schedule(count):
    passed = jnp.sum(jnp.asarray(count, jnp.int32) + 1 >= milestones_array)
    return rates[passed]

  return schedule
