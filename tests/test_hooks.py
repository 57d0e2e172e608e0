import pytest
import torch
from torch import nn

from steplens.hooks import hook_points, hooks, select_points, tokens_to_grid
from steplens.interventions import NoiseAtFrame, NoiseAtStep, patch_activations, record_activations, skip_blocks
from steplens.models.dit import PRESETS, ReferenceDenoiser, VideoDiT
from steplens.runner import SamplingConfig, generate, prepare
from steplens.sampling import StepEvent
from steplens.tasks import get_task


class Toy:
    """A real (tiny) module stack with the hook contract: y = block2(block1(x))."""

    def __init__(self):
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(2))

    def hook_blocks(self):
        return list(self.blocks)

    def hook_sites(self):
        return {"lin_out": "0"}

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return x


@pytest.fixture
def ref():
    torch.manual_seed(0)
    m = VideoDiT(PRESETS["tiny"]())
    for p in m.parameters():  # adaLN-Zero starts at zero output: randomise so hooks have effects to see
        nn.init.normal_(p, std=0.2)
    den = ReferenceDenoiser(m)
    task = get_task("maze")
    batch = prepare(den, task, [task.generate(s, 3, n_frames=4, cell_px=1) for s in (1, 2)])
    return den, batch


def test_points_and_selection():
    toy = Toy()
    pts = hook_points(toy)
    assert set(pts) == {f"blocks.{i}.{s}" for i in range(2) for s in ("resid_pre", "resid_post", "lin_out")}
    assert [p.name for p in select_points(pts, "blocks.*.resid_post")] == ["blocks.0.resid_post", "blocks.1.resid_post"]
    assert len(select_points(pts, ["blocks.0.lin_out", "blocks.[1].resid_pre"])) == 2
    assert len(select_points(pts, lambda p: p.layer == 1)) == 3
    with pytest.raises(KeyError, match="no hook point"):
        select_points(pts, "blocks.9.resid_post")


def test_observe_replace_and_removal_even_on_error():
    toy = Toy()
    x = torch.randn(3, 4)
    plain = toy(x)
    seen = []
    with hooks(toy, {"blocks.*.resid_post": lambda t, point: seen.append(point.name)}):
        assert torch.equal(toy(x), plain)
    assert seen == ["blocks.0.resid_post", "blocks.1.resid_post"]
    with hooks(toy, {"blocks.1.resid_post": lambda t, point: torch.zeros_like(t)}):
        assert torch.count_nonzero(toy(x)) == 0
        with hooks(toy, {"blocks.0.resid_pre": lambda t, point: t * 0}):  # nested
            assert torch.count_nonzero(toy(x)) == 0
    with pytest.raises(RuntimeError):
        with hooks(toy, {"blocks.0.resid_post": lambda t, point: t + 1}):
            raise RuntimeError("boom")
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in toy.blocks)
    assert torch.equal(toy(x), plain)
    with hooks(toy, {"blocks.0.resid_post": lambda t, point: t[:, :2]}):
        with pytest.raises(ValueError, match="shape"):
            toy(x)


def test_noop_hooks_are_bit_identical_and_see_steps(ref):
    den, batch = ref
    cfg = SamplingConfig(steps=3)
    plain = generate(den, batch, [5, 6], cfg)
    steps = set()
    with hooks(den, {lambda p: True: lambda t, point: steps.add(point.step)}):
        hooked = generate(den, batch, [5, 6], cfg)
    assert torch.equal(plain, hooked)
    assert steps == {0, 1, 2}
    grid = den.token_grid((2, *batch.latent_shape))
    shapes = []
    with hooks(den, {"blocks.0.resid_post": lambda t, point: shapes.append(tokens_to_grid(t, grid).shape)}):
        generate(den, batch, [5, 6], cfg)
    assert shapes[0][:4] == (2, *grid)


def test_self_patching_changes_nothing_and_other_patching_does(ref):
    den, batch = ref
    cfg = SamplingConfig(steps=3)
    points = ["blocks.0.attn_out", "blocks.1.mlp_out"]
    with record_activations(den, points) as store:
        a = generate(den, batch, [5, 6], cfg)
    assert len(store) == 3 * len(points)
    with hooks(den, patch_activations(store, points)):
        assert torch.equal(generate(den, batch, [5, 6], cfg), a)
    with hooks(den, patch_activations(store, points)):
        other = generate(den, batch, [7, 8], cfg)
    assert not torch.equal(other, generate(den, batch, [7, 8], cfg))


def test_skip_block_is_identity(ref):
    den, batch = ref
    ins, outs = [], []
    with hooks(den, skip_blocks([1])), hooks(den, {"blocks.1.resid_pre": lambda t, point: ins.append(t),
                                                     "blocks.1.resid_post": lambda t, point: outs.append(t)}):
        generate(den, batch, [5, 6], SamplingConfig(steps=2))
    # hooks run in registration order: skip's post runs first, so the observer sees the identity output
    assert all(torch.equal(i, o) for i, o in zip(ins, outs))


def _event(step, x_next):
    return StepEvent(step, 4, 0.8, 0.6, x_next, x_next, x_next, x_next)


def test_noise_at_step_and_frame():
    x = torch.zeros(2, 3, 4, 5, 5)
    ns = NoiseAtStep((2,), seeds=(1, 2))
    assert ns(_event(1, x)) is None
    r = ns(_event(2, x))
    assert r.shape == x.shape and r.std() > 0.5 and torch.equal(r, ns(_event(2, x)))  # reproducible
    add = NoiseAtStep((2,), mode="add", strength=0.5, seeds=(1, 2))(_event(2, x))
    assert torch.allclose(add, 0.5 * 0.6 * r)
    nf = NoiseAtFrame((2,), seeds=(1, 2))(_event(0, x))
    assert torch.count_nonzero(nf[:, :, [0, 1, 3]]) == 0 and torch.count_nonzero(nf[:, :, 2]) > 0
    last = StepEvent(3, 4, 0.2, 0.0, x, x, x, x)
    assert NoiseAtFrame((2,), seeds=(1, 2))(last) is None  # the output itself is never overwritten
    with pytest.raises(ValueError, match="seed"):
        NoiseAtStep((0,))(_event(0, x))
