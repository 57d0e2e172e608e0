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

    den = load(model_path)
    s = run_perturb(den, cfg(model_path), str(tmp_path / "p"), every=2, progress=False)
    _check_run(tmp_path / "p", "perturb.npz", "perturb.png")
    assert [r["index"] for r in s["noise_at_step"]] == [0, 2, 4]
    assert [r["index"] for r in s["noise_at_frame"]] == [1, 2, 3]
    assert s["answer_frame"] == 3 and s["worst_frame_before_answer"]["index"] in (1, 2)
    assert s["worst_drop_frame_before_answer"] <= s["worst_drop_frame"]
    lo, hi = s["step_minus_frame_drop_ci95"]
    assert lo <= s["step_minus_frame_drop"] <= hi
    assert abs(s["step_minus_frame_drop"] - (s["worst_drop_step"] - s["worst_drop_frame_before_answer"])) < 1e-9
    c = run_cka(den, cfg(model_path), str(tmp_path / "c"), every=2, progress=False)
    _check_run(tmp_path / "c", "cka_flow.npz", "cka_flow.png")
    flow = np.array(c["flow_latent"], dtype=float)
    assert np.isnan(flow[0, 0]) and np.all((flow[0, 1:] >= 0) & (flow[0, 1:] <= 1))  # only later steps are observed
    assert set(c["flow_layers_last_step"]) == {"latent", "latent_change", "blocks.1.resid_post"}  # image-to-video: the change too
    change = np.array(c["flow_layers_last_step"]["latent_change"][1:], dtype=float)
    assert np.all((change >= 0) & (change <= 1))
    fml = c["flow_first_minus_last_injection"]
    assert set(fml) == {"latent", "latent_change", "blocks.1.resid_post"}
    for name, r in fml.items():  # the difference of the first and last observed last-step values, per state
        row = [v for v in c["flow_layers_last_step"][name] if v is not None]
        assert abs(r["diff"] - (row[0] - row[-1])) < 1e-9 and r["ci95"][0] <= r["diff"] <= r["ci95"][1]
    # added noise scaled by sigma disturbs less than fresh noise: the flow is smaller everywhere it is observed
    weak = run_cka(den, cfg(model_path), str(tmp_path / "a"), every=2, mode="add", strength=0.1, progress=False)
    assert weak["mode"] == "add"
    weak_flow = np.array(weak["flow_latent"], dtype=float)
    seen = np.isfinite(flow)
    assert np.all(weak_flow[seen] <= flow[seen] + 1e-6) and weak_flow[seen].mean() < flow[seen].mean()
    with pytest.raises(ValueError, match="Euler"):
        from steplens.runner import SamplingConfig

        run_perturb(den, cfg(model_path, sampling=SamplingConfig(sampler="heun", steps=4)), str(tmp_path / "h"), progress=False)


def test_layers(model_path, tmp_path):
    from steplens.models.registry import load
    from steplens.probes.layers import run_layers

    s = run_layers(load(model_path), cfg(model_path), str(tmp_path), progress=False)
    _check_run(tmp_path, "layers.npz", "layers_summary.png", "layers_norm.png", "layers_pca.png", "token_maps.json", "token_maps.png")
    assert s["depth"] == 2 and len(s["skip_drop"]) == 2
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
    assert s["memory"]["verdict"].startswith("copying") and {"pruning", "correction", "perception"} <= set(s)


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
