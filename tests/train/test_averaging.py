"""The moving average of the weights (trainer.ema_decay): its arithmetic, and the config's range."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kws.config import load_config
from kws.errors import ConfigError
from kws.train.averaging import WeightAverage
from tests.helpers import SMOKE


def test_the_average_moves_a_fraction_of_the_way_each_step_and_copies_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.75)
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model(torch.randn(8, 3))  # training mode: the running statistics move
    average.update(model)
    w1 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(-2.0)
    average.update(model)
    w2 = model[0].weight.detach()
    expected = 0.75 * (0.75 * w0 + 0.25 * w1) + 0.25 * w2
    torch.testing.assert_close(average.model[0].weight, expected)
    assert torch.equal(average.model[1].running_mean, model[1].running_mean)
    assert int(average.model[1].num_batches_tracked) == 1
    assert not any(p.requires_grad for p in average.model.parameters())
    assert model[0].weight.requires_grad  # the model trained is left as it was


@pytest.mark.parametrize("decay", ["-0.1", "1.0", "1.5"])
def test_a_decay_outside_0_1_is_a_config_error(decay: str) -> None:
    with pytest.raises(ConfigError, match="trainer.ema_decay"):
        load_config(SMOKE, [f"trainer.ema_decay={decay}"])
