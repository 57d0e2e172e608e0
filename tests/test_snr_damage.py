"""SNR-matched damage (`--mode destroy`): a fraction of the signal replaced by noise, the sampler's own noise kept."""

from __future__ import annotations

import pytest
import torch

from steplens.interventions import NoiseAtFrame, NoiseAtStep, injection_noise
from steplens.sampling import StepEvent


def event(sigma_next: float = 0.4) -> tuple[StepEvent, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 5, 5, generator=g)
    eps = torch.randn(2, 3, 4, 5, 5, generator=g)
    x_next = (1 - sigma_next) * x0 + sigma_next * eps
    e = StepEvent(3, 10, 0.5, sigma_next, x_next, torch.zeros_like(x0), x0, x_next)
    return e, x0, eps


def test_destroy_keeps_the_sampler_noise_and_loses_a_fraction_of_signal():
    e, x0, eps = event()
    assert torch.allclose(NoiseAtStep((3,), mode="destroy", strength=0.0, seed=1)(e), e.x_next)
    d, s = 0.3, e.sigma_next
    out = NoiseAtStep((3,), mode="destroy", strength=d, seed=1)(e)
    xi = injection_noise(e.x_next, 3, seed=1)
    assert torch.allclose(out, (1 - s) * ((1 - d) * x0 + d * xi) + s * eps, atol=1e-6)


def test_the_same_damage_per_frame_at_a_step_or_at_a_frame():
    e, _, _ = event()
    step = NoiseAtStep((3,), mode="destroy", strength=0.5, seed=1)(e)
    frame = NoiseAtFrame((2,), mode="destroy", strength=0.5, seed=1)(e)
    assert torch.allclose(frame[:, :, 2], step[:, :, 2])  # the damaged frame is damaged identically
    assert torch.equal(frame[:, :, [0, 1, 3]], e.x_next[:, :, [0, 1, 3]])  # the others untouched
    with pytest.raises(ValueError):
        NoiseAtStep((3,), mode="destroy", strength=1.5, seed=1)
