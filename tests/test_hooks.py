"""Named hook points: selection, observe/replace, nesting and removal, on real modules (no mocks)."""

import pytest
import torch
from torch import nn

from steplens import context
from conftest import tiny_reference
from steplens.hooks import HookPointError, frame_tokens, grid_to_tokens, hook_points, hooks, select_points, tokens_to_grid
from steplens.runner import SamplingConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy:
    """A real (tiny) module stack with the hook contract: y = block1(block0(x))."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(2))
        with torch.no_grad():
            for p in self.blocks.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def hook_blocks(self):
        return list(self.blocks)

    def hook_sites(self):
        return {"lin_out": "0"}

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def _no_hooks(toy):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in toy.blocks.modules())


@pytest.fixture(params=["fp32", "bf16"])
def ref(request):
    """The tiny reference model in each precision: hooks see the network's own dtype, and work the same."""
    return tiny_reference(precision=request.param)


def test_points_and_selection():
    toy = Toy()
    pts = hook_points(toy)
    assert list(pts) == [f"blocks.{i}.{s}" for i in range(2) for s in ("resid_pre", "lin_out", "resid_post")]
    p = pts["blocks.1.lin_out"]
    assert (p.layer, p.site, p.kind, p.module) == (1, "lin_out", "post", toy.blocks[1][0])
    assert pts["blocks.0.resid_pre"].kind == "pre"
    assert [p.name for p in select_points(pts, "blocks.*.resid_post")] == ["blocks.0.resid_post", "blocks.1.resid_post"]
    assert [p.name for p in select_points(pts, "blocks.[0-1].lin_out")] == ["blocks.0.lin_out", "blocks.1.lin_out"]
    assert len(select_points(pts, ["blocks.0.lin_out", "blocks.[1].resid_pre", "blocks.0.lin_out"])) == 2  # deduplicated
    assert len(select_points(pts, ("blocks.0.lin_out",))) == 1
    assert len(select_points(pts, lambda p: p.layer == 1)) == 3
    assert select_points(pts, lambda p: False) == []


def test_unknown_names_error_with_examples():
    pts = hook_points(Toy())
    with pytest.raises(HookPointError) as err:
        select_points(pts, "blocks.9.resid_post")
    msg = str(err.value)
    assert "blocks.9.resid_post" in msg and "blocks.0.resid_pre" in msg and "lin_out" in msg and "blocks.{0..1}" in msg
    assert isinstance(err.value, KeyError)
    with pytest.raises(HookPointError, match="attn"):
        select_points(pts, ["blocks.0.resid_post", "blocks.*.attn"])  # a glob matching nothing too
    toy = Toy()
    with pytest.raises(HookPointError):  # resolved before attaching: nothing is left behind
        with hooks(toy, [("blocks.0.resid_post", lambda t, point: None), ("nope", lambda t, point: None)]):
            pass
    assert _no_hooks(toy)


def test_observe_replace_and_shape_check():
    toy = Toy()
    x = torch.randn(3, 4)
    plain = toy(x)
    seen = []
    with hooks(toy, {"blocks.*.resid_post": lambda t, *, point: seen.append((point.name, point.layer, point.site))}) as attached:
        assert torch.equal(toy(x), plain)
    assert [p.name for p in attached] == ["blocks.0.resid_post", "blocks.1.resid_post"]
    assert seen == [("blocks.0.resid_post", 0, "resid_post"), ("blocks.1.resid_post", 1, "resid_post")]
    with hooks(toy, {"blocks.1.resid_post": lambda t, point: torch.zeros_like(t)}):
        assert torch.count_nonzero(toy(x)) == 0
    want = toy.blocks[1](toy.blocks[0](torch.zeros(3, 4)))
    with hooks(toy, {"blocks.0.resid_pre": lambda t, point: torch.zeros_like(t)}):  # pre-hook replaces the block input
        assert torch.equal(toy(x), want)
    want = toy.blocks[1](torch.relu(-toy.blocks[0][0](x)))
    with hooks(toy, {"blocks.0.lin_out": lambda t, point: -t}):  # a sub-module site
        assert torch.equal(toy(x), want)
    with hooks(toy, {"blocks.0.resid_post": lambda t, point: t[:, :2]}):
        with pytest.raises(ValueError, match=r"blocks\.0\.resid_post returned shape \(3, 2\), expected \(3, 4\)"):
            toy(x)
    with hooks(toy, {"blocks.0.resid_pre": lambda t, point: t.unsqueeze(0)}):
        with pytest.raises(ValueError, match="shape"):
            toy(x)
    with hooks(toy, {"blocks.0.resid_post": lambda t, point: 1.0}):
        with pytest.raises(TypeError, match="return None to observe"):
            toy(x)
    assert _no_hooks(toy)


def test_nested_contexts_and_removal_on_error():
    toy = Toy()
    x = torch.randn(3, 4)
    plain = toy(x)
    order = []
    first = toy.blocks[0](x)
    with hooks(toy, {"blocks.0.resid_post": lambda t, point: t + 1}):
        once = toy(x)
        with hooks(toy, {"blocks.0.resid_post": lambda t, point: order.append(t.clone())}):  # sees the outer replacement
            assert torch.equal(toy(x), once)
        assert len(toy.blocks[0]._forward_hooks) == 1  # the inner context removed only its own hook
        assert torch.equal(order[0], first + 1)
        with pytest.raises(RuntimeError, match="boom"):
            with hooks(toy, {"blocks.*.resid_pre": lambda t, point: t * 2, "blocks.1.lin_out": lambda t, point: None}):
                raise RuntimeError("boom")
        assert len(toy.blocks[0]._forward_hooks) == 1 and not toy.blocks[0]._forward_pre_hooks
        assert torch.equal(toy(x), once)
    with pytest.raises(ZeroDivisionError):  # an error raised inside a hook, mid-forward
        with hooks(toy, {"blocks.1.resid_post": lambda t, point: 1 / 0}):
            toy(x)
    assert _no_hooks(toy)
    assert torch.equal(toy(x), plain)


def test_pre_hook_on_keyword_call():
    class Kw(nn.Module):
        def forward(self, *, x):
            return x * 2

    class Den:
        def __init__(self):
            self.blocks = [Kw()]

        def hook_blocks(self):
            return self.blocks

        def hook_sites(self):
            return {}

    den = Den()
    with hooks(den, {"blocks.0.resid_pre": lambda t, point: t + 1}):
        assert torch.equal(den.blocks[0](x=torch.ones(2)), torch.full((2,), 4.0))


def test_hook_info_reads_the_call_in_flight():
    toy = Toy()
    infos = []
    with hooks(toy, {"blocks.0.resid_post": lambda t, point: infos.append(point)}):
        toy(torch.randn(1, 4))
        with context.model_call(3, 0.25, phase="corrector"), context.branch("uncond"):
            toy(torch.randn(1, 4))
    bare, inside = infos
    assert bare.step == -1 and bare.sigma != bare.sigma and bare.branch == "main" and bare.phase == "main"
    assert (inside.name, inside.layer, inside.site) == ("blocks.0.resid_post", 0, "resid_post")
    assert (inside.step, inside.sigma, inside.branch, inside.phase) == (3, 0.25, "uncond", "corrector")
    with pytest.raises(AttributeError):
        inside.step = 4  # frozen


def test_noop_hooks_everywhere_are_bit_identical(ref):
    den, batch = ref
    cfg = SamplingConfig(steps=3)
    plain = generate(den, batch, [5, 6], cfg)
    seen = set()
    with hooks(den, {lambda p: True: lambda t, point: seen.add((point.step, point.name, point.phase, point.branch))}) as pts:
        hooked = generate(den, batch, [5, 6], cfg)
    assert torch.equal(plain, hooked)
    assert len(pts) == 2 * 4  # tiny preset: 2 blocks x (resid_pre, attn_out, mlp_out, resid_post)
    assert {s for s, *_ in seen} == {0, 1, 2} and {(ph, b) for *_, ph, b in seen} == {("main", "main")}
    assert len(seen) == 3 * len(pts)
    phases = []
    with hooks(den, {"blocks.0.resid_post": lambda t, point: phases.append((point.step, point.phase))}):
        generate(den, batch, [5, 6], SamplingConfig(sampler="heun", steps=2))
    assert phases == [(0, "main"), (0, "corrector"), (1, "main")]  # Heun's last step is Euler
    assert torch.equal(generate(den, batch, [5, 6], cfg), plain)  # and nothing is left attached


def test_a_float32_replacement_runs_in_the_networks_dtype():
    den, batch = tiny_reference(precision="bf16")
    x = torch.randn(2, *batch.latent_shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((2,), 0.5)
    got = []
    with torch.no_grad():
        with hooks(den, {"blocks.0.resid_pre": lambda t, point: got.append(t.dtype)}):
            plain = den(x, sigma, batch.cond).velocity
        with hooks(den, {"blocks.0.attn_out": lambda t, point: t.float()}):  # the same values, upcast
            upcast = den(x, sigma, batch.cond).velocity
    assert got == [torch.bfloat16] and plain.dtype == torch.float32
    assert torch.equal(plain, upcast)


def test_token_grid_order(ref):
    den, batch = ref
    grid = den.token_grid((2, *batch.latent_shape))
    assert grid == (4, 7, 7)
    t = torch.arange(2 * 4 * 7 * 7 * 3).reshape(2, 4 * 7 * 7, 3)
    g = tokens_to_grid(t, grid)
    assert g.shape == (2, 4, 7, 7, 3) and torch.equal(g[1, 2, 3, 5], t[1, 2 * 49 + 3 * 7 + 5])
    assert torch.equal(grid_to_tokens(g), t)
    assert frame_tokens([1], grid) == list(range(49, 98)) and frame_tokens([-1], grid)[0] == 3 * 49
    with pytest.raises(ValueError, match="tokens"):
        tokens_to_grid(t[:, :10], grid)
    # the model's own order: a latent pixel changed at (frame 2, row 1, col 5) changes exactly that token of the block input
    x = torch.randn(1, *batch.latent_shape, generator=torch.Generator().manual_seed(0))
    x2 = x.clone()
    x2[0, :, 2, 1, 5] += 1.0
    got = []
    with hooks(den, {"blocks.0.resid_pre": lambda t, point: got.append(t)}), torch.no_grad():
        cond = batch.cond.index([0])
        den(x, torch.tensor([0.5]), cond)
        den(x2, torch.tensor([0.5]), cond)
    changed = (tokens_to_grid(got[1] - got[0], grid).abs().sum(-1) > 0)[0]
    assert changed.nonzero().tolist() == [[2, 1, 5]]
