"""The learning-rate schedule decays exactly where the released loop does."""
import numpy as np
import pytest

from dcsfn_jax.training import schedules


def test_released_step_counts():
  # Rain100H: 1800 pairs, 800 epochs, batch 24.
  assert schedules.released_steps(800, 1800, 24) == (60000, (36000, 48000))
  # Rain100L: 200 pairs.
  assert schedules.released_steps(800, 200, 24) == (6666, (4000, 5333))


def test_table_for_a_short_run():
  # E=5, N=12, B=2: total 30, milestones 18 and 24. The released loop steps
  # the scheduler before each update, so updates 17 and 23 are the first at
  # the decayed rates.
  total, milestones = schedules.released_steps(5, 12, 2)
  assert (total, milestones) == (30, (18, 24))
  expected = [5e-4] * 17 + [5e-5] * 6 + [5e-6] * 7
  schedule = schedules.multistep_lr(5e-4, milestones)
  got = [float(schedule(i)) for i in range(total)]
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.filterwarnings('ignore:Detected call of:UserWarning')
def test_matches_torch_multisteplr_in_the_released_loop_order():
  torch = pytest.importorskip('torch')
  milestones = (7, 11)
  param = torch.nn.Parameter(torch.zeros(1))
  optimizer = torch.optim.Adam([param], lr=5e-4)
  scheduler = torch.optim.lr_scheduler.MultiStepLR(
      optimizer, milestones=list(milestones), gamma=0.1)
  torch_rates = []
  for _ in range(16):
    scheduler.step()  # before optimizer.step(), as released
    torch_rates.append(optimizer.param_groups[0]['lr'])
    optimizer.step()
  schedule = schedules.multistep_lr(5e-4, milestones)
  np.testing.assert_allclose([float(schedule(i)) for i in range(16)],
                             torch_rates, rtol=1e-6)


def test_rejects_unsorted_milestones():
  with pytest.raises(ValueError, match='increasing'):
    schedules.multistep_lr(1e-3, (10, 5))
