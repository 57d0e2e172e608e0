"""Capture plans, reducers, the recorder, traces and their on-disk format, on the tiny reference DiT."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import tiny_reference

from steplens import context
from steplens.config import ConfigError
from steplens.hooks import frame_tokens, hooks
from steplens.models.protocol import DenoiserBase, Prediction
from steplens.runner import SamplingConfig, generate
from steplens.trace import (FORMAT, Cache, CacheKey, Capture, CaptureBudgetError, CapturePlan, Recorder, Trace, TraceError,
                            TraceRecorder, check_budget, describe, estimate_bytes, projection, record, reduce_tokens)

N = 4 * 7 * 7  # tokens of a 3x3 maze (7x7 blocks) over 4 frames
D = 32  # tiny preset width


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    return tiny_reference()


class TwoBranch(DenoiserBase):
    """A real CFG-style wrapper around the reference model: a conditional and an image-free branch."""

    def __init__(self, ref):
        self.ref, self.name, self.hidden_dim, self.do_cfg = ref, "two-branch", ref.hidden_dim, True

    def __call__(self, x, sigma, cond):
        with context.branch("cond"):
            vc = self.ref(x, sigma, cond).velocity
        with context.branch("uncond"):
            vu = self.ref(x, sigma, replace(cond, image=torch.zeros_like(cond.image))).velocity
        return Prediction(vu + 2.0 * (vc - vu), {"cond": vc, "uncond": vu})

    def hook_blocks(self):
        return self.ref.hook_blocks()

    def hook_sites(self):
        return self.ref.hook_sites()

    def token_grid(self, shape):
        return self.ref.token_grid(shape)

    def reimpose(self, x, cond):
        return self.ref.reimpose(x, cond)

    def decode(self, latents):
        return self.ref.decode(latents)


def test_parse_plan():
    plan = CapturePlan.parse("blocks.*.resid_post:norm,proj16; blocks.1.attn_out:full@0-2,5 ;blocks.0.mlp_out:mean@steps=3@tokens=0-2,7")
    a, b, c = plan.captures
    assert a == Capture("blocks.*.resid_post", ("norm", "proj16"))
    assert b.reducers == ("full",) and b.steps == (0, 1, 2, 5) and b.tokens is None
    assert c.steps == (3,) and c.tokens == (0, 1, 2, 7)
    assert CapturePlan.parse(plan.spec()) == plan  # spec strings round-trip
    assert CapturePlan.parse("").captures == ()
    assert CapturePlan.parse("blocks.0.mlp_out:norm", 10, dtype="float16").dtype == "float16"
    for bad, msg in [("blocks.0.attn_out:full", "explicit steps"), ("blocks.0.attn_out:median", "unknown reducer"),
                     ("blocks.0.attn_out:proj0", "unknown reducer"), ("blocks.0.attn_out", "needs reducers"),
                     ("blocks.0.attn_out:norm@layers=1", "qualifier"), ("blocks.0.attn_out:norm@steps=a-b", "bad steps"),
                     ("blocks.0.attn_out:norm,norm", "repeats"), (":norm", "selector")]:
        with pytest.raises(ConfigError, match=msg):
            CapturePlan.parse(bad)
    with pytest.raises(ConfigError, match="budget"):
        CapturePlan((), budget_mb=0)
    with pytest.raises(ConfigError, match="dtype"):
        CapturePlan((), dtype="int8")


def test_reducers():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 50, 12, generator=g)
    assert torch.allclose(reduce_tokens(t, "norm"), t.norm(dim=-1))
    assert torch.equal(reduce_tokens(t, "mean"), t.mean(dim=1))
    full = reduce_tokens(t, "full")
    assert torch.equal(full, t) and full.data_ptr() != t.data_ptr()
    p = projection(12, 4, seed=3)
    assert p.shape == (12, 4) and torch.equal(p, projection(12, 4, seed=3)) and not torch.equal(p, projection(12, 4, seed=4))
    assert torch.allclose(reduce_tokens(t, "proj4", seed=3), t @ p)
    # PCA: the per-sample SVD's scores, up to each component's sign; both Gram branches (N > D and N < D)
    for x in (t, t[:, :8]):
        got = reduce_tokens(x, "pca3")
        for b in range(2):
            xc = x[b] - x[b].mean(0)
            u, s, _ = torch.linalg.svd(xc, full_matrices=False)
            want = u[:, :3] * s[:3]
            assert torch.allclose(got[b].abs(), want.abs(), atol=1e-3), b
            assert (got[b].gather(0, got[b].abs().argmax(0, keepdim=True)) > 0).all()  # sign convention
    assert reduce_tokens(t[:, :2], "pca5").shape == (2, 2, 5)  # fewer components than asked: zero padded
    with pytest.raises(ValueError, match="B, N, D"):
        reduce_tokens(t[0], "norm")


def test_recording_is_exact_and_shapes(setup):
    den, batch = setup
    cfg = SamplingConfig(steps=4)
    plain = generate(den, batch, [3, 4], cfg)
    plan = CapturePlan.parse("blocks.*.resid_post:norm,mean,proj8,pca3;blocks.0.mlp_out:full@1;"
                             "blocks.1.attn_out:norm,full@steps=2@tokens=0-9")
    tr = record(den, batch, [3, 4], cfg, plan, fields=("x0_hat", "x_next", "x", "velocity"))
    assert torch.equal(tr.events["x_next"][-1], plain)  # recording changed nothing
    assert torch.allclose(tr.events["x0_hat"][-1], plain, atol=1e-6)  # Euler's last step: x_next = x0_hat
    assert torch.equal(tr.events["x0_hat"][-1][:, :, 0], batch.cond.image)  # the re-imposed first frame
    assert torch.equal(tr.events["step"], torch.arange(4)) and torch.equal(tr.events["sigma"], cfg.sigmas()[:-1])
    assert tr.events["x"].shape == (4, 2, 3, 4, 7, 7) and "velocity/cond" not in tr.events
    assert tr.get(2, 1, "resid_post", "main", "norm").shape == (2, N)
    assert tr.get(2, 1, "resid_post", "main", "mean").shape == (2, D)
    assert tr.get(2, 1, "resid_post", "main", "proj8").shape == (2, N, 8)
    assert tr.get(2, 1, "resid_post", "main", "pca3").shape == (2, N, 3)
    assert tr.get(2, 1, "attn_out", "main", "full").shape == (2, 10, D)
    assert tr.stack(0, "mlp_out", "full").shape == (1, 2, N, D) and tr.steps(0, "mlp_out", "full") == [1]
    assert tr.stack(1, "resid_post", "norm").shape == (4, 2, N)
    assert set(tr.captures) == {CacheKey(s, layer, "resid_post", "main") for s in range(4) for layer in (0, 1)} | {
        CacheKey(1, 0, "mlp_out", "main"), CacheKey(2, 1, "attn_out", "main")}
    assert "s1/blocks.0.mlp_out/main/full" in tr.keys() and len(tr.keys()) == 4 * 2 * 4 + 1 + 2
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for slot in tr.captures.values() for t in slot.values())
    assert tr.captures.nbytes() == estimate_bytes(plan, den, batch.latent_shape, 2, 4)  # the estimate is exact
    with pytest.raises(KeyError, match="nothing captured"):
        tr.get(3, 0, "mlp_out", "main", "full")
    # the reductions are of the real activations: compare with a plain hook at the same point and step
    seen = {}

    def grab(t, *, point):
        if point.step == 2:
            seen[point.name] = t.clone()

    with hooks(den, {"blocks.*.resid_post": grab, "blocks.1.attn_out": grab}):
        generate(den, batch, [3, 4], cfg)
    assert torch.equal(tr.get(2, 1, "resid_post", "main", "norm"), torch.linalg.vector_norm(seen["blocks.1.resid_post"], dim=-1))
    assert torch.equal(tr.get(2, 1, "attn_out", "main", "full"), seen["blocks.1.attn_out"][:, :10])
    for layer in (0, 1):  # one matrix for every layer of width D
        assert torch.allclose(tr.get(2, layer, "resid_post", "main", "proj8"), seen[f"blocks.{layer}.resid_post"] @ projection(D, 8))
    assert "blocks.1.resid_post" in describe(tr)


def test_recorder_skips_corrector_and_keys_branches(setup):
    den, batch = setup
    plan = CapturePlan.parse("blocks.0.resid_post:norm")
    with Recorder(den, plan) as rec:
        generate(den, batch, [3, 4], SamplingConfig(sampler="heun", steps=3))
    assert sorted(rec.cache) == [CacheKey(s, 0, "resid_post", "main") for s in range(3)]  # 5 model calls, 3 main ones
    two = TwoBranch(den)
    tr = record(two, batch, [3, 4], SamplingConfig(steps=2), CapturePlan.parse("blocks.*.mlp_out:norm,proj4@tokens=1,3"),
                fields=("velocity",))
    assert {k.branch for k in tr.captures} == {"cond", "uncond"} and len(tr.captures) == 2 * 2 * 2
    assert not torch.equal(tr.get(1, 1, "mlp_out", "cond", "norm"), tr.get(1, 1, "mlp_out", "uncond", "norm"))
    assert tr.get(1, 1, "mlp_out", "cond", "proj4").shape == (2, 2, 4)
    assert tr.captures.nbytes() == tr.config["capture_estimate_bytes"]  # branches counted (do_cfg)
    v = tr.events["velocity"]
    assert torch.allclose(v, tr.events["velocity/uncond"] + 2 * (tr.events["velocity/cond"] - tr.events["velocity/uncond"]))


def test_budget_refused_before_sampling(setup):
    den, batch = setup
    calls = []
    handle = den.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        plan = CapturePlan.parse("blocks.*.resid_post:full@0-3", budget_mb=0.1)
        est = estimate_bytes(plan, den, batch.latent_shape, 2, 4)
        assert est == 2 * 4 * 2 * N * D * 4
        with pytest.raises(CaptureBudgetError, match=rf"about {est / 2**20:.1f} MB \({est} bytes\).*0\.1 MB budget"):
            record(den, batch, [3, 4], SamplingConfig(steps=4), plan)
        assert calls == []  # refused before any model call
        assert check_budget(replace(plan, budget_mb=1.0), den, (2, *batch.latent_shape), 2, 4) == est
        assert estimate_bytes(replace(plan, dtype="float16"), den, batch.latent_shape, 2, 4) == est // 2
    finally:
        handle.remove()
    # an unchecked plan is stopped while recording, and its hooks still come off
    with pytest.raises(CaptureBudgetError, match="while recording"):
        with Recorder(den, CapturePlan.parse("blocks.*.resid_post:full@0-3", budget_mb=0.1)):
            generate(den, batch, [3, 4], SamplingConfig(steps=4))
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in den.hook_blocks())
    with pytest.raises(ConfigError, match="two captures"):
        with Recorder(den, CapturePlan.parse("blocks.*.resid_post:norm;blocks.1.resid_post:norm,mean@2")):
            pass


def test_float16_and_latents_none(setup):
    den, batch = setup
    tr = record(den, batch, [3, 4], SamplingConfig(steps=2), CapturePlan.parse("blocks.1.resid_post:proj4", dtype="float16"),
                latents="none")
    assert set(tr.events) == {"step", "sigma", "sigma_next"} and tr.events["sigma_next"][-1] == 0
    assert tr.get(1, 1, "resid_post", "main", "proj4").dtype == torch.float16
    with pytest.raises(ConfigError, match="unknown event fields"):
        TraceRecorder(("x0",))
    with pytest.raises(ConfigError, match="latents"):
        TraceRecorder(latents="some")


def test_save_load_round_trip(setup, tmp_path):
    den, batch = setup
    plan = CapturePlan.parse("blocks.*.resid_post:norm,pca2;blocks.0.attn_out:full@1@tokens=" + ",".join(map(str, frame_tokens([1], (4, 7, 7)))))
    tr = record(den, batch, [3, 4], SamplingConfig(steps=3), plan, fields=("x0_hat", "x"), config={"note": "unit"})
    out = tr.save(tmp_path / "t")
    assert sorted(p.name for p in out.iterdir()) == ["captures.safetensors", "events.safetensors", "manifest.json"]
    back = Trace.load(out)
    assert back.keys() == tr.keys() and isinstance(back.captures, Cache)
    assert all(torch.equal(back.captures[k][r], v) for k, slot in tr.captures.items() for r, v in slot.items())
    assert set(back.events) == set(tr.events) and all(torch.equal(back.events[k], v) for k, v in tr.events.items())
    assert back.config == tr.config and back.config["note"] == "unit" and back.config["sampling"]["steps"] == 3
    assert back.config["capture_plan"]["spec"] == plan.spec()
    mf = json.loads((out / "manifest.json").read_text())
    assert mf["format"] == FORMAT == "steplens-trace-v1" and mf["version"] == 1
    assert mf["events"]["x0_hat"] == {"shape": [3, 2, 3, 4, 7, 7], "dtype": "float32"}
    assert mf["captures"]["s1/blocks.0.attn_out/main/full"] == {"shape": [2, 49, D], "dtype": "float32"}
    assert "x0_hat" in mf["docs"]["events"] and "pcaK" in mf["docs"]["reducers"]
    # saving again over it replaces it atomically, leaving no temporary folders behind
    tr2 = Trace(tr.config, {"sigma": tr.events["sigma"]}, Cache())
    tr2.save(out)
    assert Trace.load(out).keys() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(TraceError, match="not a trace folder"):
        tr2.save(tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").exists()


def test_corrupt_or_missing_files(setup, tmp_path):
    den, batch = setup
    tr = record(den, batch, [3, 4], SamplingConfig(steps=2), CapturePlan.parse("blocks.0.resid_post:norm"))

    def fresh(name):
        return tr.save(tmp_path / name)

    with pytest.raises(TraceError, match="no such trace folder"):
        Trace.load(tmp_path / "nothing")
    p = fresh("a")
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(TraceError, match=r"manifest\.json: unreadable trace manifest"):
        Trace.load(p)
    p = fresh("b")
    (p / "manifest.json").unlink()
    with pytest.raises(TraceError, match=r"manifest\.json: missing"):
        Trace.load(p)
    p = fresh("c")
    (p / "captures.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(TraceError, match=r"captures\.safetensors: unreadable"):
        Trace.load(p)
    p = fresh("d")
    (p / "events.safetensors").unlink()
    with pytest.raises(TraceError, match=r"events\.safetensors: missing"):
        Trace.load(p)
    for name, edit, msg in [("e", lambda m: m | {"format": "other"}, "not a steplens-trace-v1"),
                            ("f", lambda m: m | {"version": 99}, "version 99"),
                            ("g", lambda m: {k: v for k, v in m.items() if k != "captures"}, "no 'captures'"),
                            ("h", lambda m: m | {"captures": {}}, "keys differ"),
                            ("i", lambda m: m | {"events": m["events"] | {"sigma": {"shape": [7], "dtype": "float32"}}}, "shape")]:
        p = fresh(name)
        m = json.loads((p / "manifest.json").read_text())
        (p / "manifest.json").write_text(json.dumps(edit(m)))
        with pytest.raises(TraceError, match=msg):
            Trace.load(p)


def test_cli_trace_then_show(setup, tmp_path):
    """`steplens trace --model ... --out RUN` (the default `run` subcommand), then `trace show RUN`, as a user types them."""
    from typer.testing import CliRunner

    from steplens.cli import app
    from steplens.models.serialize import export

    den, _ = setup
    export(den.model, tmp_path / "model")
    runner = CliRunner()
    args = ["--model", str(tmp_path / "model"), "--task", "maze", "--size", "3", "--n", "2", "--seed", "5", "--steps", "3",
            "--capture", "blocks.*.resid_post:norm,proj16", "--out", str(tmp_path / "run")]
    r = runner.invoke(app, ["trace", *args])
    assert r.exit_code == 0, r.output
    tr = Trace.load(tmp_path / "run")
    assert set(tr.captures) == {CacheKey(s, l, "resid_post", "main") for l in range(2) for s in range(3)}
    assert all(set(slot) == {"norm", "proj16"} and slot["proj16"].shape == (2, N, 16) for slot in tr.captures.values())
    assert tr.config["seed"] == 5 and tr.events["x0_hat"].shape == (3, 2, 3, 4, 7, 7)
    shown = runner.invoke(app, ["trace", "show", str(tmp_path / "run")])
    assert shown.exit_code == 0 and "blocks.1.resid_post" in shown.output and "proj16" in shown.output
    bad = runner.invoke(app, ["trace", *args[:-2], "--capture", "blocks.9.resid_post:norm", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "no hook point matches" in bad.output and not (tmp_path / "bad").exists()
    assert runner.invoke(app, ["trace", "show", str(tmp_path / "nothing")]).exit_code == 2
    ens = runner.invoke(app, ["trace", *args[:-2], "--k", "3", "--window", "0:1", "--out", str(tmp_path / "ens")])
    assert ens.exit_code == 0, ens.output
    tr = Trace.load(tmp_path / "ens")
    assert tr.config["ensemble"] == {"k": 3, "window": [0, 1], "rule": "mean_xt", "norm_correct": False, "after": "single",
                                     "select": "first"} and len(tr.config["noise_seeds"]) == 6
    assert tr.events["x0_hat"].shape == (3, 2, 3, 4, 7, 7)
    bad = runner.invoke(app, ["trace", *args[:-2], "--k", "3", "--window", "0:9", "--out", str(tmp_path / "bad2")])
    assert bad.exit_code == 2 and "exceeds" in bad.output


@pytest.mark.parametrize("rule,after", [("mean_xt", "single"), ("mean_v", "all")])
def test_an_ensemble_is_recorded_like_any_run(setup, rule, after):
    """The trace follows the trajectory the ensemble returns; captures see every trajectory computed."""
    from steplens.ensemble import EnsembleConfig, ensemble_latents
    from steplens.sampling import seeded_noise

    den, batch = setup
    ens = EnsembleConfig(k=3, window=(0, 2), rule=rule, after=after)
    seeds = [10 + i for i in range(6)]
    cfg = SamplingConfig(steps=4)
    tr = record(den, batch, seeds, cfg, CapturePlan.parse("blocks.0.resid_post:norm"), fields=("x0_hat", "x_next"), ensemble=ens)
    want = ensemble_latents(den, seeded_noise(batch.latent_shape, seeds), cfg.sigmas(), batch.cond.repeat(3), ens)
    want = want if after == "single" else want[::3]
    assert tr.events["x0_hat"].shape == (4, 2, 3, 4, 7, 7) and torch.equal(tr.events["x_next"][-1], want)
    assert torch.allclose(tr.events["x0_hat"][-1], want, atol=1e-6)  # sigma 0 at the end: x0_hat is the output
    rows = {k.step: slot["norm"].shape[0] for k, slot in tr.captures.items()}
    assert rows[0] == 6 and rows[3] == (2 if rule == "mean_xt" else 6)  # mean_xt collapses the K after its first merge
    assert tr.config["ensemble"]["k"] == 3 and tr.config["noise_seeds"] == seeds
    with pytest.raises(ValueError, match="needs 6 noise seeds"):
        record(den, batch, seeds[:2], cfg, CapturePlan.parse(""), ensemble=ens)
