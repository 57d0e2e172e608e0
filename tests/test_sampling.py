import pytest
import torch

from steplens.context import current_call
from steplens.models.protocol import Cond, DenoiserBase, Prediction, eps_from_velocity, velocity_from_eps, velocity_from_x0, x0_from_velocity
from steplens.sampling import StepEvent, flow_sigmas, iter_euler, run, sample, seeded_noise


class Straight(DenoiserBase):
    """Exact velocity for data concentrated on one point x0: v = (x - x0) / sigma."""

    def __init__(self, x0):
        self.x0 = x0
        self.calls = []

    def __call__(self, x, sigma, cond):
        self.calls.append(current_call())
        s = sigma.view(-1, *[1] * (x.ndim - 1))
        return Prediction(velocity_from_x0(x, s, self.x0))


def test_flow_sigmas_endpoints_and_shift():
    s = flow_sigmas(10)
    assert s[0] == 1 and s[-1] == 0 and torch.all(s[1:] < s[:-1])
    shifted = flow_sigmas(10, shift=5.0)
    assert torch.all(shifted[1:-1] > s[1:-1])  # a shift > 1 spends more steps at high noise
    with pytest.raises(ValueError):
        flow_sigmas(0)


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    sigma = 0.3
    x = (1 - sigma) * x0 + sigma * eps
    v = eps - x0
    assert torch.allclose(x0_from_velocity(x, sigma, v), x0, atol=1e-6)
    assert torch.allclose(eps_from_velocity(x, sigma, v), eps, atol=1e-6)
    assert torch.allclose(velocity_from_x0(x, sigma, x0), v, atol=1e-5)
    assert torch.allclose(velocity_from_eps(x, sigma, eps), v, atol=1e-5)


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_samplers_reach_the_point_mass(sampler):
    x0 = torch.full((2, 3, 2, 4, 4), 0.25)
    den = Straight(x0)
    out = sample(den, seeded_noise((3, 2, 4, 4), [1, 2]), flow_sigmas(8, 3.0), Cond(), sampler=sampler)
    assert torch.allclose(out, x0, atol=1e-5)
    phases = {c.phase for c in den.calls}
    assert phases == ({"main"} if sampler == "euler" else {"main", "corrector"})
    assert [c.step for c in den.calls if c.phase == "main"] == list(range(8))


def test_events_and_replacement():
    x0 = torch.zeros(1, 3, 2, 2, 2)
    den = Straight(x0)
    gen = iter_euler(den, seeded_noise((3, 2, 2, 2), [0]), flow_sigmas(4), Cond())
    events: list[StepEvent] = []

    def cb(e):
        events.append(e)
        return torch.ones_like(e.x_next) if e.step == 1 else None

    out = run(gen, cb)
    assert [e.step for e in events] == [0, 1, 2, 3]
    assert torch.allclose(events[0].x0_hat, x0, atol=1e-6)
    assert torch.equal(events[2].x, torch.ones_like(x0))  # step 2 starts from the replacement
    assert torch.allclose(events[-1].x0_hat, out, atol=1e-6)


def test_image_to_video_reimposed():
    class I2V(Straight):
        pass

    x0 = torch.zeros(2, 3, 3, 2, 2)
    img = torch.full((2, 3, 2, 2), 0.7)
    seen = []
    out = sample(I2V(x0), seeded_noise((3, 3, 2, 2), [0, 1]), flow_sigmas(3), Cond(image=img), callback=lambda e: seen.append(e.x))
    assert all(torch.equal(x[:, :, 0], img) for x in seen)
    assert torch.equal(out[:, :, 0], img)


def test_seeded_noise_independent_of_batch():
    a = seeded_noise((2, 3), [5, 6, 7])
    b = seeded_noise((2, 3), [7])
    assert torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])
