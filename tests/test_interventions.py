"""Noise injection, block skipping and activation patching, on the tiny reference DiT."""

import copy

import pytest
import torch
from conftest import tiny_reference

from steplens.hooks import frame_tokens, hooks
from steplens.interventions import (NoiseAtFrame, NoiseAtStep, injection_noise, patch_activations, record_activations,
                                    skip_blocks)
from steplens.runner import SamplingConfig, generate
from steplens.sampling import StepEvent
from steplens.trace import TraceRecorder

CFG = SamplingConfig(steps=4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    return tiny_reference()


def _event(step, x_next, sigma_next=0.6):
    return StepEvent(step, 4, 0.8, sigma_next, x_next, x_next, x_next, x_next)


def _run(den, batch, seeds, callbacks=()):
    rec = TraceRecorder(("x", "x_next"))
    out = generate(den, batch, seeds, CFG, callback=[*callbacks, rec])
    return out, rec.events()


def test_noise_at_step_changes_only_later_steps(setup):
    den, batch = setup
    plain, ev = _run(den, batch, [5, 6])
    inj = NoiseAtStep((1,), seeds=(11, 12))
    out, ev2 = _run(den, batch, [5, 6], [inj])
    assert torch.equal(ev2["x"][:2], ev["x"][:2])  # steps 0 and 1 start from the same latents
    assert torch.equal(ev2["x_next"][0], ev["x_next"][0])
    assert all(not torch.equal(ev2["x"][s], ev["x"][s]) for s in (2, 3)) and not torch.equal(out, plain)
    noise = injection_noise(ev["x_next"][1], 1, seeds=(11, 12))
    want = den.reimpose(noise, batch.cond)  # the sampler puts the first frame back on the replacement
    assert torch.equal(ev2["x"][2], want) and torch.equal(ev2["x_next"][1], noise)  # the recorder saw the replacement
    assert torch.equal(_run(den, batch, [5, 6], [inj])[0], out)  # reproducible
    # add mode: x_next + strength * sigma_next * noise
    add = NoiseAtStep((1,), mode="add", strength=0.5, seed=3)
    sig_next = float(CFG.sigmas()[2])
    _, ev3 = _run(den, batch, [5, 6], [add])
    assert torch.allclose(ev3["x_next"][1], ev["x_next"][1] + 0.5 * sig_next * injection_noise(ev["x_next"][1], 1, seed=3))


def test_noise_is_per_sample(setup):
    x = torch.zeros(2, 3, 4, 5, 5)
    both = NoiseAtStep((2,), seeds=(1, 2))(_event(2, x))
    alone = NoiseAtStep((2,), seeds=(2,))(_event(2, x[:1]))
    assert torch.equal(both[1], alone[0])  # a sample's noise does not depend on its batch
    assert not torch.equal(both[0], both[1]) and both.std() > 0.5
    assert not torch.equal(NoiseAtStep((3,), seeds=(1, 2))(_event(3, x)), both)  # fresh noise per step
    assert NoiseAtStep(2, seed=0)(_event(1, x)) is None
    for kw, msg in [({}, "exactly one of seed"), ({"seed": 1, "seeds": (1, 2)}, "exactly one of seed"),
                    ({"seed": 1, "mode": "mul"}, "mode"), ({"seed": 1, "strength": float("nan")}, "finite")]:
        with pytest.raises(ValueError, match=msg):
            NoiseAtStep((0,), **kw)
    with pytest.raises(ValueError, match="one seed per sample"):
        NoiseAtStep((0,), seeds=(1,))(_event(0, x))


def test_noise_at_frame_touches_only_its_frames(setup):
    x = torch.randn(2, 3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    nf = NoiseAtFrame((2, -1), seeds=(1, 2))
    r = nf(_event(0, x))
    assert torch.equal(r[:, :, :2], x[:, :, :2]) and not torch.equal(r[:, :, 2], x[:, :, 2]) and not torch.equal(r[:, :, 3], x[:, :, 3])
    assert torch.equal(r[:, :, 2:], injection_noise(x, 0, seeds=(1, 2))[:, :, 2:])
    kept = x.clone()
    nf(_event(0, x))
    assert torch.equal(x, kept)  # the event's tensor is left untouched
    add = NoiseAtFrame((1,), mode="add", strength=2.0, seed=4)(_event(1, x, sigma_next=0.25))
    assert torch.allclose(add[:, :, 1], x[:, :, 1] + 0.5 * injection_noise(x, 1, seed=4)[:, :, 1])
    assert NoiseAtFrame((1,), seed=0)(_event(3, x, sigma_next=0.0)) is None  # the output itself is never overwritten
    assert NoiseAtFrame((1,), steps=(2,), seed=0)(_event(1, x)) is None
    with pytest.raises(ValueError, match="outside"):
        NoiseAtFrame((4,), seed=0)(_event(0, x))
    # in a run: every step's input differs from the clean run only in the chosen frame
    den, batch = setup
    _, ev = _run(den, batch, [5, 6])
    _, ev2 = _run(den, batch, [5, 6], [NoiseAtFrame((2,), steps=(0,), seeds=(7, 8))])
    d = (ev2["x"][1] - ev["x"][1]).abs().sum(dim=(0, 1, 3, 4))
    assert d[2] > 0 and torch.count_nonzero(d[[0, 1, 3]]) == 0
    out, _ = _run(den, batch, [5, 6], [NoiseAtFrame((0,), seeds=(7, 8))])
    assert torch.equal(out[:, :, 0], batch.cond.image)  # image-to-video: frame 0 is re-imposed by the sampler


def test_skip_block_is_identity(setup):
    den, batch = setup
    ins, outs = [], []
    with hooks(den, skip_blocks(1)), hooks(den, {"blocks.1.resid_pre": lambda t, point: ins.append(t),
                                                  "blocks.1.resid_post": lambda t, point: outs.append(t)}):
        skipped = generate(den, batch, [5, 6], CFG)
    # hooks run in registration order: the skip's post runs first, so the observer sees the identity output
    assert len(ins) == len(outs) == 4 and all(torch.equal(i, o) for i, o in zip(ins, outs))
    # equals the model with the block removed
    cut = copy.deepcopy(den)
    del cut.model.blocks[1]
    assert torch.equal(generate(cut, batch, [5, 6], CFG), skipped)
    # only at the chosen steps
    same = []
    with hooks(den, skip_blocks([0], steps=[2])), hooks(den, {"blocks.0.resid_pre": lambda t, point: ins.append(t),
                                                               "blocks.0.resid_post": lambda t, point: same.append(torch.equal(ins[-1], t))}):
        generate(den, batch, [5, 6], CFG)
    assert same == [False, False, True, False]


def test_self_patching_changes_nothing(setup):
    den, batch = setup
    points = ["blocks.0.attn_out", "blocks.1.mlp_out", "blocks.1.resid_post"]
    with record_activations(den, points) as store:
        a = generate(den, batch, [5, 6], CFG)
    assert len(store) == 4 * len(points) and {k[2] for k in store} == {"main"}
    with hooks(den, patch_activations(store, points)):
        assert torch.equal(generate(den, batch, [5, 6], CFG), a)
    with hooks(den, patch_activations(store, "blocks.[0].attn_out", steps=range(4))):  # a glob, explicit steps
        assert torch.equal(generate(den, batch, [5, 6], CFG), a)


def test_patching_writes_chosen_steps_and_tokens(setup):
    den, batch = setup
    with record_activations(den, "blocks.1.attn_out", steps=[1, 2]) as store:
        generate(den, batch, [5, 6], CFG)
    assert sorted(k[0] for k in store) == [1, 2]
    b_clean = generate(den, batch, [7, 8], CFG)
    tok = frame_tokens([1], den.token_grid((2, *batch.latent_shape)))
    before, after = {}, {}
    with hooks(den, {"blocks.1.attn_out": lambda t, point: before.__setitem__(point.step, t.clone())}), \
         hooks(den, patch_activations(store, ["blocks.1.attn_out"], steps=[2], tokens=tok)), \
         hooks(den, {"blocks.1.attn_out": lambda t, point: after.__setitem__(point.step, t.clone())}):
        patched = generate(den, batch, [7, 8], CFG)
    assert not torch.equal(patched, b_clean)
    assert all(torch.equal(before[s], after[s]) for s in (0, 1, 3))  # other steps untouched
    mask = torch.zeros(after[2].shape[1], dtype=torch.bool)
    mask[tok] = True
    assert torch.equal(after[2][:, mask], store[(2, "blocks.1.attn_out", "main")][:, mask])
    assert torch.equal(after[2][:, ~mask], before[2][:, ~mask])
    with hooks(den, patch_activations(store, ["blocks.1.attn_out"], steps=[3])):
        with pytest.raises(KeyError, match="no recorded activation at step 3"):
            generate(den, batch, [7, 8], CFG)
    _, one = tiny_reference(seeds=(1,))
    with hooks(den, patch_activations(store, ["blocks.1.attn_out"])):
        with pytest.raises(ValueError, match="same batch size"):
            generate(den, one, [7], CFG)


def test_patching_and_recording_skip_the_corrector(setup):
    den, batch = setup
    heun = SamplingConfig(sampler="heun", steps=3)
    with record_activations(den, ["blocks.0.resid_post"]) as store:
        a = generate(den, batch, [5, 6], heun)
    assert sorted(k[0] for k in store) == [0, 1, 2]
    with hooks(den, patch_activations(store, ["blocks.0.resid_post"])):
        assert torch.equal(generate(den, batch, [5, 6], heun), a)


def test_renoise_keeps_the_clean_estimate_at_the_samplers_level(setup):
    g = torch.Generator().manual_seed(0)
    x, x0_hat, x_next = (torch.randn(2, 3, 4, 5, 5, generator=g) for _ in range(3))
    e = StepEvent(1, 4, 0.8, 0.6, x, x, x0_hat, x_next)
    out = NoiseAtStep((1,), mode="renoise", seeds=(1, 2))(e)
    noise = injection_noise(x_next, 1, seeds=(1, 2))
    assert torch.allclose(out, 0.4 * x0_hat + 0.6 * noise)  # x_next itself plays no part: only its noise is new
    frame = NoiseAtFrame((2,), mode="renoise", seeds=(1, 2))(e)
    assert torch.allclose(frame[:, :, 2], 0.4 * x0_hat[:, :, 2] + 0.6 * noise[:, :, 2]) and torch.equal(frame[:, :, 3], x_next[:, :, 3])
    # Euler's last step lands on its clean estimate (sigma_next = 0): re-noising there changes nothing
    den, batch = setup
    plain, _ = _run(den, batch, [5, 6])
    last, _ = _run(den, batch, [5, 6], [NoiseAtStep((3,), mode="renoise", seeds=(11, 12))])
    assert torch.allclose(last, plain, atol=1e-6)
    assert not torch.allclose(_run(den, batch, [5, 6], [NoiseAtStep((2,), mode="renoise", seeds=(11, 12))])[0], plain, atol=1e-3)
