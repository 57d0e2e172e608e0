"""End-to-end probe runs on a tiny random model: every probe writes its data, plots and summary."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from steplens.models.dit import PRESETS, VideoDiT
from steplens.models.serialize import export


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    m = VideoDiT(PRESETS["tiny"]())
    for p in m.parameters():  # adaLN-Zero gives a zero model: randomise so probes see real effects
        nn.init.normal_(p, std=0.1)
    prefix = tmp_path_factory.mktemp("m") / "model"
    export(m, prefix)
    return str(prefix)


def cfg(model_path, **kw):
    from steplens.probes.common import ProbeConfig
    from steplens.runner import SamplingConfig

    base = dict(model=model_path, size=3, n=4, batch=4, sampling=SamplingConfig(steps=6))
    base.update(kw)
    return ProbeConfig(**base)


def _check_run(out, *files):
    figs = json.loads((out / "figures.json").read_text())
    assert figs and all((out / f["path"]).stat().st_size > 0 for f in figs)
    for f in files:
        assert (out / f).exists(), f
    return json.loads((out / "summary.json").read_text())


def test_cos(model_path, tmp_path):
    from steplens.models.registry import load
    from steplens.probes.cos import run_cos

    s = run_cos(load(model_path), cfg(model_path), str(tmp_path), progress=False, n_views=2)
    _check_run(tmp_path, "cos_steps.npz", "cos_curves.png", "summary.txt")
    assert len(s["per_step"]["all"]["off_solution_mass"]) == 6
    assert sum(s["commit_step"]["histogram"]) == 4
    steps = np.load(tmp_path / "cos_steps.npz")["x0_hat"]
    assert steps.shape == (4, 6, 4, 7, 7, 3)
    assert len(list((tmp_path / "steps").glob("*/step_*.png"))) == 2 * 6


def test_perturb_and_cka(model_path, tmp_path):
    from steplens.models.registry import load
    from steplens.probes.perturb import run_cka, run_perturb
    from steplens.sampling import flow_sigmas

    den = load(model_path)
    s = run_perturb(den, cfg(model_path), str(tmp_path / "p"), every=2, mode="replace,renoise", frame_window="1:3", progress=False)
    _check_run(tmp_path / "p", "perturb.npz", "perturb.png", "frame_recovery.png")
    sig = flow_sigmas(6).tolist()
    assert s["modes"] == ["replace", "renoise"] and s["step_sigmas"] == sig
    for m, r in s["by_mode"].items():
        assert [(p["index"], p["sigma"]) for p in r["noise_at_step"]] == [(0, sig[1]), (2, sig[3]), (4, sig[5])]
        assert all(0 <= p["lo"] <= p["mean"] <= p["hi"] <= 1 for p in r["noise_at_step"] + r["noise_at_frame"])
        assert [p["index"] for p in r["noise_at_frame"]] == [1, 2, 3] and r["answer_frame"] == 3
        low = min(p["mean"] for p in r["noise_at_step"])  # every step at the minimum is named, not just the first
        assert r["worst_step"]["tied"] == [p["index"] for p in r["noise_at_step"] if p["mean"] == low]
        assert [t["steps"] for t in r["step_by_third"]] == [[0], [2], [4]]
        lo, hi = r["step_minus_frame_drop_ci95"]
        assert lo <= r["step_minus_frame_drop"] <= hi
        sel = r["selection"]  # the worst step and frame are chosen on one half, the difference measured on the other
        assert sel["calibration_n"] == sel["held_out_n"] == r["step_minus_frame_drop_n"] == 2 and "held-out" in sel["how"]
        assert sel["step"] in [p["index"] for p in r["noise_at_step"]] and sel["frame"] in [1, 2]
        ws, wf = r["worst_step_held_out"], r["worst_frame_before_answer_held_out"]  # the chosen points' rates on the held-out half
        assert (ws["index"], wf["index"], ws["n"], wf["n"]) == (sel["step"], sel["frame"], 2, 2)
        assert r["step_minus_frame_drop"] == pytest.approx(wf["mean"] - ws["mean"])
        assert r["step_minus_frame_drop_stats"]["method"] == "paired_rates" and sum(r["step_minus_frame_drop_stats"]["table"]) == 2
        w = r["frame_window"]
        assert w["window"] == [1, 3] and w["released_from_step"] == 3 and [p["index"] for p in w["scores"]] == [1, 2, 3]
        assert [p["step"] for p in w["recovery"][0]["distance_after_release"]] == [3, 4, 5, "final"]
    assert "cka" not in s  # a 3-channel latent comparison is only reported beside block activations
    text = (tmp_path / "p" / "summary.txt").read_text()
    assert "[replace]" in text and "[renoise]" in text and "level-matched control" in text

    c = run_cka(den, cfg(model_path), str(tmp_path / "c"), every=2, mode="replace,renoise", progress=False)
    _check_run(tmp_path / "c", "cka_flow.npz", "cka_flow.png", "cka_flow.json")
    doc = json.loads((tmp_path / "c" / "cka_flow.json").read_text())
    assert doc["observed_steps"] == [0, 1, 2, 3, 4, 5, "final"] and doc["injection_steps"] == [0, 2, 4]
    assert set(doc["modes"]) == {"replace", "renoise"}
    assert set(doc["modes"]["replace"]) == set(doc["matrices"]) == {"x0_hat", "x0_hat_change", "blocks.1.resid_post"}
    for m in doc["modes"].values():
        for name, mat in m.items():
            mean = np.array(mat["mean"], dtype=float)  # (injections, steps + 1)
            for i, step in enumerate(doc["injection_steps"]):
                assert np.isnan(mean[i, : step + 1]).all()  # at and before the injection: not observed
                later = mean[i, step + 1 : 6]
                assert np.isfinite(later).all() and ((later >= -1e-9) & (later <= 1 + 1e-9)).all()
            assert np.isnan(mean[:, 6]).all() == name.startswith("blocks")  # no block activations for the output
    assert c["cka"]["modes"]["renoise"]["x0_hat"]["observed"] == "final output"
    with pytest.raises(ValueError, match="Euler"):
        from steplens.runner import SamplingConfig

        run_perturb(den, cfg(model_path, sampling=SamplingConfig(sampler="heun", steps=4)), str(tmp_path / "h"), progress=False)
    for kw, msg in [({"mode": "mul"}, "--mode takes"), ({"frame_window": "3:1"}, "0 <= A < B"), ({"frame_window": "2:6"}, "steps - 1"),
                    ({"frame_window": "a"}, "A:B")]:
        with pytest.raises(ValueError, match=msg):
            run_perturb(den, cfg(model_path), str(tmp_path / "bad"), progress=False, **kw)


class IgnoresNoise:
    """A denoiser whose clean estimate ignores the latent: x0_hat is fixed by the puzzle; its blocks still run on x.

    Any injection then changes nothing the sampler outputs or estimates, by construction."""

    def __init__(self, den):
        self.den = den

    def __getattr__(self, name):
        return getattr(self.den, name)

    def __call__(self, x, sigma, cond):
        from steplens.models.protocol import Prediction, velocity_from_x0

        self.den(x, sigma, cond)  # hooks see the blocks work on the (perturbed) latent
        ramp = 1.0 + torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)  # frames differ: a non-zero change from frame 0
        return Prediction(velocity_from_x0(x, sigma.view(-1, 1, 1, 1, 1), cond.image[:, :, None] * ramp))


def _batch(den, n=2, steps=6):
    from steplens.probes.common import ProbeConfig, make_batch
    from steplens.runner import SamplingConfig

    # a spec without a seen-set (the default, the shipped maze model, drew every 3x3 maze in training)
    c = ProbeConfig(model="null:noise", size=3, n=n, batch=n, sampling=SamplingConfig(steps=steps))
    return (*make_batch(den, c, c.seeds()), c)


def test_injections_change_nothing_for_a_denoiser_that_ignores_the_noise_part():
    from steplens.models.dit import ReferenceDenoiser, random_tiny
    from steplens.probes.perturb import perturb_batch

    den = IgnoresNoise(ReferenceDenoiser(random_tiny(seed=0).eval()))
    batch, noise, c = _batch(den)
    modes = ["replace", "renoise"]
    recs = perturb_batch(den, batch, noise, c, inject_steps=[0, 2, 4], frames=[1, 3], modes=modes, cka_layers=[1], frame_window=(1, 3))
    for r in recs:
        for m in modes:
            assert r[f"step:{m}"] == [r["clean"]] * 3 and r[f"frame:{m}"] == r[f"window:{m}"] == [r["clean"]] * 2
            assert np.allclose(r[f"recovery__{m}"], 0, atol=1e-5)  # the frame's clean estimate never moved
            for key in ("x0_hat", "x0_hat_change"):
                f = r[f"flow__{m}__{key}"]
                seen = np.isfinite(f)
                assert seen.sum() == 6 + 4 + 2 and np.abs(f[seen]).max() < 1e-6  # 1 - CKA = 0 wherever observed
            blocks = r[f"flow__{m}__layer_1"]
            assert np.nanmax(blocks) > 0.01  # the blocks did see the injected latent
        assert np.abs(r["flow__seed__x0_hat"][np.isfinite(r["flow__seed__x0_hat"])]).max() < 1e-6  # another seed: same estimate


def test_a_frame_that_nothing_repairs_stays_at_its_distance_after_release():
    """A fresh DiT (adaLN-Zero) predicts zero velocity: the sampler never moves, so a released frame keeps its noise."""
    from steplens.models.dit import PRESETS, ReferenceDenoiser, VideoDiT
    from steplens.probes.perturb import perturb_batch

    torch.manual_seed(0)
    den = ReferenceDenoiser(VideoDiT(PRESETS["tiny"]()).eval())
    batch, noise, c = _batch(den)
    for m in ("replace", "renoise"):
        recs = perturb_batch(den, batch, noise, c, inject_steps=[], frames=[2], modes=[m], frame_window=(1, 3))
        for r in recs:
            d = r[f"recovery__{m}"][0]  # (steps + 1,): corrupted after steps 1 and 2, released from step 3
            assert (d[:2] == 0).all() and d[2] > 0.1 and np.allclose(d[3:], d[3]) and d[3] > 0.1


def test_identical_runs_give_zero_dissimilarity_and_an_empty_lower_triangle(model_path, tmp_path):
    from steplens.models.registry import load
    from steplens.probes.perturb import run_cka

    s = run_cka(load(model_path), cfg(model_path, n=2, batch=2), str(tmp_path), every=2, mode="add", strength=0.0, layers=[0, 1],
                progress=False)
    doc = json.loads((tmp_path / "cka_flow.json").read_text())
    r = s["by_mode"]["add"]
    assert all(p["mean"] == s["clean_solve_rate"] for p in r["noise_at_step"])
    for name, mat in doc["modes"]["add"].items():
        for i, step in enumerate(doc["injection_steps"]):
            row = mat["mean"][i]
            assert row[: step + 1] == [None] * (step + 1)
            later = [v for v in row[step + 1 :] if v is not None]
            assert len(later) == (6 - step if name.startswith("x0_hat") else 5 - step) and max(map(abs, later)) < 1e-9, name


def test_worst_names_every_tied_index():
    from steplens.probes.perturb import _worst, _worst_text

    curve = [{"index": i, "sigma": 1 - i / 10, "mean": m, "lo": 0.0, "hi": 0.5} for i, m in enumerate([0.5, 0.0, 0.25, 0.0])]
    w = _worst(curve)
    assert w["index"] is None and w["tied"] == [1, 3] and "steps 1, 3 tie" in _worst_text(w, "step")
    one = _worst(curve[:3])
    assert one["index"] == 1 and one["tied"] == [1] and _worst_text(one, "step").startswith("step 1 (sigma 0.900)")


def test_perturb_and_cka_commands(model_path, tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    base = ["--model", model_path, "--size", "3", "--n", "2", "--batch", "2", "--steps", "4", "--every", "2"]
    r = CliRunner().invoke(app, ["probe", "perturb", *base, "--mode", "renoise", "--frame-window", "1:3", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    s = _check_run(tmp_path / "p", "frame_recovery.png", "perturb.png")
    assert s["modes"] == ["renoise"] and s["by_mode"]["renoise"]["frame_window"]["window"] == [1, 3] and "[renoise]" in r.output
    r = CliRunner().invoke(app, ["probe", "cka", *base, "--layers", "1", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    s = _check_run(tmp_path / "c", "cka_flow.png", "cka_flow.json")
    assert s["modes"] == ["replace", "renoise"] and set(s["cka"]["modes"]["replace"]) == {"x0_hat", "x0_hat_change", "blocks.1.resid_post"}
    for args, msg in [(["--mode", "nope"], "--mode takes"), (["--frame-window", "3:3"], "0 <= A < B")]:
        r = CliRunner().invoke(app, ["probe", "perturb", *base, *args, "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


def test_layers(model_path, tmp_path):
    from steplens.models.registry import load
    from steplens.probes.layers import run_layers

    s = run_layers(load(model_path), cfg(model_path), str(tmp_path), progress=False)
    _check_run(tmp_path, "layers.npz", "layers_summary.png", "layers_norm.png", "layers_pca.png", "token_maps.json", "token_maps.png")
    assert s["depth"] == 2 and len(s["skip_drop"]) == 2
    top = s["skip_drop_held_out"]  # the text names the block chosen on the calibration half with its held-out drop
    assert f"most important block L{top['layer']}: drop {top['drop']:+.2f}" in (tmp_path / "summary.txt").read_text()
    cka = np.array(s["layer_cka"])
    assert np.allclose(np.diag(cka), 1.0, atol=1e-6)
    assert s["patching"]["variant"] == "resid" and set(s["patching"]["per_layer"]) == {"0", "1"}
    tm = json.loads((tmp_path / "token_maps.json").read_text())
    assert tm["layers"] == ["input", "0", "1"] and np.array(tm["reasoning"]["accuracy"]).shape == (6, 3)
    w = run_layers(load(model_path), cfg(model_path), str(tmp_path / "w"), patch="writes", skip=False, token_maps=False, progress=False)
    assert w["patching"]["variant"] == "writes" and "skip_drop" not in w and "token_maps" not in w
    with pytest.raises(ValueError, match="leaves a batch of one"):  # the last sample would be patched from itself
        run_layers(load(model_path), cfg(model_path, n=5, batch=2), str(tmp_path / "odd"), progress=False)
    assert not (tmp_path / "odd").exists()


def test_behaviour(model_path, tmp_path):
    from steplens.models.registry import load
    from steplens.probes.behaviour import run_behaviour

    s = run_behaviour(load(model_path), cfg(model_path), str(tmp_path), progress=False)
    _check_run(tmp_path, "behaviour_per_step.png", "perception_vs_action.png")
    assert sum(s["self_correction"].values()) == 4 and len(s["memory"]["markers_present_per_step"]) == 6
    assert "in the conditioning" in s["memory"]["verdict"] and {"pruning", "correction", "perception"} <= set(s)


def test_layers_cli_patch_options(model_path, tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    base = ["probe", "layers", "--model", model_path, "--size", "3", "--n", "2", "--batch", "2", "--steps", "4", "--no-skip"]
    r = CliRunner().invoke(app, base + ["--patch", "resid", "--patch-window", "0:4", "--out", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["patching"]["window"] == [0, 4] and "flip/keep/break per layer" in r.output
    r = CliRunner().invoke(app, base + ["--patch", "everything", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--patch must be one of" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, base + ["--patch-window", "3", "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "--patch-window must be START:END" in r.output


def test_probe_cli_rejects_bad_input(model_path, tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    r = CliRunner().invoke(app, ["probe", "cos", "--model", model_path, "--task", "nope", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown task" in r.output
    r = CliRunner().invoke(app, ["probe", "perturb", "--model", "no-such-model", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no model" in r.output


def test_the_change_from_frame_0_separates_answers_that_whole_latents_hide():
    """Two runs with the same scene (frame 0 everywhere) and different small drawings on top of it."""
    import torch

    from steplens.probes.perturb import _change, _cka_rows

    g = torch.Generator().manual_seed(0)
    scene = torch.randn(2, 3, 1, 12, 12, generator=g).expand(2, 3, 4, 12, 12) * 3  # shared by both runs, large
    a, b = scene.clone(), scene.clone()
    a[:, :, 1:, 2:5, 2:5] += torch.randn(2, 3, 3, 3, 3, generator=g)  # run A draws here
    b[:, :, 1:, 7:10, 7:10] += torch.randn(2, 3, 3, 3, 3, generator=g)  # run B draws somewhere else
    whole = _cka_rows(a[:, :, 1:], b[:, :, 1:])
    change = _cka_rows(_change(a), _change(b))
    assert max(whole) < 0.2 and min(change) > 0.8
    assert max(_cka_rows(_change(a), _change(a.clone()))) < 1e-6


def test_cka_read_off_a_perturb_run_equals_its_own_run(model_path, tmp_path):
    """The demo's CKA stage reads the perturb stage's clean runs and step injections: the same numbers as `probe cka`."""
    from steplens.models.registry import load
    from steplens.probes.perturb import cka_from_perturb, default_cka_layers, run_cka, run_perturb

    den = load(model_path)
    layers = default_cka_layers(den)
    p = run_perturb(den, cfg(model_path), str(tmp_path / "p"), every=2, mode="replace,renoise", cka_layers=layers, progress=False)
    shared = cka_from_perturb(p, tmp_path / "p", tmp_path / "shared", cfg(model_path), every=2, mode="renoise", layers=layers)
    own = run_cka(den, cfg(model_path), str(tmp_path / "own"), every=2, mode="renoise", progress=False)
    _check_run(tmp_path / "shared", "cka_flow.npz", "cka_flow.png", "cka_flow.json")
    assert shared["modes"] == own["modes"] == ["renoise"] and shared["n"] == own["n"]
    a, b = shared["cka"]["modes"]["renoise"], own["cka"]["modes"]["renoise"]
    assert set(a) == set(b)
    for key in a:
        fa, fb = a[key].get("first_minus_last_injection"), b[key].get("first_minus_last_injection")
        assert (fa is None) == (fb is None)
        if fa:
            assert fa["diff"] == pytest.approx(fb["diff"], abs=1e-6) and fa["ci95"] == pytest.approx(fb["ci95"], abs=1e-6)
        assert a[key]["fresh_seed"]["mean"] == pytest.approx(b[key]["fresh_seed"]["mean"], abs=1e-6)


def test_perturb_scores_every_frame_beside_the_final_one(tmp_path):
    """The process score sees what the final-frame scorer cannot (an end-jump video), and the destroy mode's card
    numbers come with it."""
    from steplens.findings import SPECS, evaluate
    from steplens.models.registry import load as load_model
    from steplens.probes.common import ProbeConfig
    from steplens.probes.perturb import _scores, run_perturb
    from steplens.runner import SamplingConfig, prepare
    from steplens.tasks import get_task
    from steplens.tasks.process import end_jump

    den, task = load_model("null:shrink"), get_task("maze")
    insts = [task.generate(s, 4, n_frames=4, cell_px=1) for s in (40_000, 40_001)]
    batch = prepare(den, task, insts)
    truth = np.stack([task.blocks(i) for i in insts])
    assert _scores(den, batch, den.encode(truth)) == ([1.0, 1.0], [1.0, 1.0])
    assert _scores(den, batch, den.encode(np.stack([end_jump(v) for v in truth]))) == ([1.0, 1.0], [0.0, 0.0])

    pcfg = ProbeConfig(model="null:shrink", size=4, n=4, sampling=SamplingConfig(steps=6), batch=4)
    s = run_perturb(den, pcfg, str(tmp_path / "p"), every=2, mode="renoise,destroy", progress=False)
    for m in ("renoise", "destroy"):
        proc = s["by_mode"][m]["process"]
        assert proc["clean_rate"] == 1.0 and proc["step_minus_frame_drop"] == 0.0  # the null ignores its state
    card = next(f for f in evaluate({"perturb": s}) if f["id"] == "noise_step_vs_frame")
    labels = {e["label"] for e in card["extras"]}
    assert any("destroy" in l and "process" in l for l in labels) and any(l.startswith("same difference, SNR-matched") for l in labels)
