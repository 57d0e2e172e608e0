"""Latent trajectory ensembles: merge rules, the documented seed collapse, norm correction, selection, NFE, CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from steplens.cli import app
from steplens.config import ConfigError
from steplens.ensemble import (EnsembleConfig, Method, baselines, choose, compare, ensemble_latents, matched_steps,
                               nfe_per_instance, run_ensemble, run_trajectories, spread, step_nfe, sweep, sweep_methods,
                               vote_keys)
from steplens.evaluate import eval_seeds
from steplens.models.dit import BlockCodec, ReferenceDenoiser
from steplens.models.protocol import Cond, DenoiserBase, Prediction, velocity_from_x0
from steplens.runner import SamplingConfig, generate, noise_seed, prepare
from steplens.sampling import flow_sigmas, seeded_noise
from steplens.tasks import PALETTE, Score, get_task
from steplens.models.dit import random_tiny

pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = [11, 12]


@pytest.fixture(scope="module")
def den():
    """The tiny reference DiT with its adaLN-Zero (all-zero) weights randomised, so it predicts non-zero velocities."""
    return ReferenceDenoiser(random_tiny(scale=0.05).eval(), name="tiny-random")


def _batch(den, seeds, k):
    task = get_task("maze")
    insts = [task.generate(s, 3, n_frames=4, cell_px=1) for s in seeds]
    batch = prepare(den, task, insts)
    x = seeded_noise(batch.latent_shape, [noise_seed(s, j) for s in seeds for j in range(k)])
    return batch, x, batch.cond.repeat(k)


def _groups(lat, k):
    return lat.reshape(-1, k, *lat.shape[1:])


def test_config_validation():
    for bad in (dict(k=0), dict(window=(2, 1)), dict(window=(-1, 1)), dict(rule="median"), dict(after="some"),
                dict(select="best"), dict(rule="mean_v", norm_correct=True), dict(after="single", select="vote")):
        with pytest.raises(ConfigError):
            EnsembleConfig(**bad)
    ens = EnsembleConfig(window=[0, 4])
    assert ens.window == (0, 4)
    ens.check(4)
    with pytest.raises(ConfigError, match="exceeds"):
        ens.check(3)


def test_k1_equals_plain_sampler(den):
    cfg = SamplingConfig(steps=4)
    batch, x, cond = _batch(den, SEEDS, 1)
    for rule in ("mean_xt", "mean_v", "mean_x0_renoise"):
        ens = EnsembleConfig(k=1, window=(0, 4), rule=rule)
        got = ensemble_latents(den, x, cfg.sigmas(), cond, ens)
        assert torch.equal(got, generate(den, batch, [noise_seed(s) for s in SEEDS], cfg))
    plain = eval_seeds(den, "maze", 3, SEEDS, cfg)
    ours = run_ensemble(den, "maze", 3, SEEDS, cfg, EnsembleConfig(k=1))
    assert [(r["success"], r["score"]) for r in ours] == [(r["success"], r["score"]) for r in plain]
    assert all(r["chosen"] == 0 and r["nfe"] == 4 and "traj_score" not in r for r in ours)


def test_mean_xt_collapses_the_seeds(den):
    """The documented collapse: after merging x_t, a deterministic sampler continues K identical trajectories."""
    k, cfg = 3, SamplingConfig(steps=5)
    _, x, cond = _batch(den, SEEDS, k)
    seen = []
    ens = EnsembleConfig(k=k, window=(0, 2))
    out = ensemble_latents(den, x, cfg.sigmas(), cond, ens, callback=lambda e: seen.append(e), dedupe=False)
    assert not torch.allclose(_groups(seen[0].x, k)[:, 0], _groups(seen[0].x, k)[:, 1])  # distinct seeds before
    for e in seen[2:]:
        g = _groups(e.x, k)
        assert torch.allclose(g, g[:, :1].expand_as(g), atol=1e-6)
    g = _groups(out, k)
    assert torch.allclose(g, g[:, :1].expand_as(g), atol=1e-6)
    assert all(spread(g[b]) < 1e-5 for b in range(len(SEEDS)))
    # so one trajectory per instance after the first merge gives the same result with fewer evaluations
    rows = []

    def count(e):
        rows.append(e.x.shape[0])

    fast = ensemble_latents(den, x, cfg.sigmas(), cond, ens, callback=count)
    assert rows == [k * len(SEEDS)] + [len(SEEDS)] * (cfg.steps - 1)
    assert fast.shape == out.shape and torch.allclose(fast, out, atol=1e-5)
    single = ensemble_latents(den, x, cfg.sigmas(), cond, replace(ens, after="single"))
    assert torch.allclose(single, out[::k], atol=1e-5)
    assert nfe_per_instance(ens, cfg) == k + cfg.steps - 1 == sum(rows) // len(SEEDS)


@pytest.mark.parametrize("rule", ["mean_x0_renoise", "mean_v"])
def test_diversity_preserving_rules_keep_trajectories_distinct(den, rule):
    k, cfg = 3, SamplingConfig(steps=5)
    _, x, cond = _batch(den, SEEDS, k)
    seen = []
    out = ensemble_latents(den, x, cfg.sigmas(), cond, EnsembleConfig(k=k, window=(0, 2), rule=rule), callback=lambda e: seen.append(e))
    g = _groups(out, k)
    assert all(spread(g[b]) > 1e-3 for b in range(len(SEEDS)))
    if rule == "mean_x0_renoise":  # merged steps share one clean estimate: x_next - s' eps_k is the same for all k
        e = seen[0]
        from steplens.models.protocol import eps_from_velocity

        shared = _groups(e.x_next - e.sigma_next * eps_from_velocity(e.x, e.sigma, e.velocity), k)[:, :, :, 1:]
        assert torch.allclose(shared, shared[:, :1].expand_as(shared), atol=1e-5)


class ConstantVelocity(DenoiserBase):
    def __init__(self, value: float = 0.3):
        self.value = value

    def __call__(self, x, sigma, cond):
        return Prediction(torch.full_like(x, self.value))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_norm_correction_restores_noise_std(k):
    """Step 0 merges K independent noises: the plain mean's noise part has std s'/sqrt(K); corrected, s'."""
    x = seeded_noise((3, 2, 32, 32), list(range(k)))  # one instance, K seeds, text-to-video
    sigmas = flow_sigmas(4)
    s1 = float(sigmas[1])
    stds = {}
    for nc in (False, True):
        seen = []
        ensemble_latents(ConstantVelocity(), x, sigmas, Cond(), EnsembleConfig(k=k, window=(0, 1), norm_correct=nc),
                         callback=lambda e: seen.append(e))
        e = seen[0]  # the event of step 0, with the merged x_next
        noise_part = e.x_next[0] - (1 - s1) * e.x0_hat.mean(0)
        stds[nc] = float(noise_part.std())
    assert stds[False] == pytest.approx(s1 / k**0.5, rel=0.08)
    assert stds[True] == pytest.approx(s1, rel=0.05)


def test_after_single_keeps_one_trajectory_and_counts_nfe(den):
    k, m, steps = 3, 2, 5
    cfg = SamplingConfig(steps=steps)
    single = EnsembleConfig(k=k, window=(0, m), rule="mean_x0_renoise", after="single")
    res = run_ensemble(den, "maze", 3, SEEDS, cfg, single)
    assert len(res) == len(SEEDS) and all(r["nfe"] == k * m + (steps - m) and r["chosen"] == 0 for r in res)
    assert nfe_per_instance(single, cfg) == k * m + (steps - m)

    class Counting(ReferenceDenoiser):
        rows = 0

        def __call__(self, x, sigma, cond):
            Counting.rows += x.shape[0]
            return super().__call__(x, sigma, cond)

    counter = Counting(den.model)
    traj = run_trajectories(counter, "maze", 3, SEEDS, cfg, single)
    assert traj.finals.shape[1] == 1 and Counting.rows == len(SEEDS) * (k * m + steps - m)
    # continuing all K and taking the first gives the same answer (only more compute)
    full = run_trajectories(den, "maze", 3, SEEDS, cfg, EnsembleConfig(k=k, window=(0, m), rule="mean_x0_renoise"))
    assert torch.allclose(full.finals[:, 0], traj.finals[:, 0], atol=1e-5)


def test_nfe_accounting_and_matched_steps():
    euler, heun = SamplingConfig(steps=20), SamplingConfig(sampler="heun", steps=20)
    assert nfe_per_instance(EnsembleConfig(k=1), euler) == 20
    assert nfe_per_instance(EnsembleConfig(k=3), euler) == 3 + 19  # mean_xt, window 0:2: K only at step 0
    assert nfe_per_instance(EnsembleConfig(k=3, window=(0, 0)), euler) == 60  # K unmerged seeds
    assert nfe_per_instance(EnsembleConfig(k=4, window=(0, 2), after="single"), euler) == 4 + 19  # mean_xt collapses
    assert nfe_per_instance(EnsembleConfig(k=4, window=(2, 4), rule="mean_v", after="single"), euler) == 4 * 4 + 16
    assert step_nfe("heun", 3) == [2, 2, 1]  # Heun's last step (to sigma 0) is Euler
    assert nfe_per_instance(EnsembleConfig(k=2), heun) == 2 * 2 + 37
    assert nfe_per_instance(EnsembleConfig(k=2, window=(0, 0)), heun) == 2 * 39
    assert matched_steps(60, "euler") == 60 and matched_steps(78, "heun") == 39
    names = [m.name for m in baselines(EnsembleConfig(k=3), euler)]
    assert names == ["single", "single_matched", "best_of_k_oracle", "best_of_k_agreement", "majority_vote", "single_cold", "ensemble"]
    assert [m.name for m in baselines(EnsembleConfig(k=3, rule="mean_x0_renoise"), euler)][-2:] == ["single_cold", "ensemble"]
    assert "single_cold" not in [m.name for m in baselines(EnsembleConfig(k=1), euler)]
    assert baselines(EnsembleConfig(k=3), euler)[1].steps == 22


@pytest.mark.parametrize("rule,nc", [("mean_xt", False), ("mean_xt", True), ("mean_v", False), ("mean_x0_renoise", False)])
def test_batched_equals_each_instance_alone(den, rule, nc):
    k, cfg = 3, SamplingConfig(steps=4)
    ens = EnsembleConfig(k=k, window=(0, 2), rule=rule, norm_correct=nc)
    _, x, cond = _batch(den, SEEDS, k)
    together = ensemble_latents(den, x, cfg.sigmas(), cond, ens)
    for b, s in enumerate(SEEDS):
        _, xb, cb = _batch(den, [s], k)
        alone = ensemble_latents(den, xb, cfg.sigmas(), cb, ens)
        assert torch.allclose(together[b * k : (b + 1) * k], alone, atol=1e-5)


class FixedX0(DenoiserBase):
    """Exact velocity towards a fixed clean video per batch row: Euler lands on it."""

    def __init__(self, x0):
        self.x0 = x0

    def __call__(self, x, sigma, cond):
        return Prediction(velocity_from_x0(x, sigma.view(-1, 1, 1, 1, 1), self.x0))


def _colour(name, shape=(3, 2, 4, 4)):
    c = torch.tensor(PALETTE[name], dtype=torch.float32) / 127.5 - 1
    return c.view(3, 1, 1, 1).expand(shape).clone()


def _select(x0s, select, scores=None):
    x0 = torch.stack(x0s)
    final = ensemble_latents(FixedX0(x0), seeded_noise(x0.shape[1:], range(len(x0s))), flow_sigmas(3), Cond(),
                             EnsembleConfig(k=len(x0s), window=(0, 0)))
    assert torch.allclose(final, x0, atol=1e-5)
    return choose(select, final, BlockCodec.decode(final), scores)


def test_vote_and_agreement_pick_the_majority():
    a = _colour("white")
    b = _colour("black")
    a_close = a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))  # snaps to the same answer
    x0s = [b, a, a_close]
    assert _select(x0s, "first") == 0
    assert _select(x0s, "vote") in (1, 2)
    assert _select(x0s, "agreement") in (1, 2)
    # a tie between two answers (2 vs 2) goes to the tighter pair, by agreement
    b_far = b.clone()
    b_far[:, 0] = _colour("yellow")[:, 0]  # the same final-frame answer as b, far from it in frame 0
    assert vote_keys(torch.stack([b, b_far]))[0] == vote_keys(torch.stack([b, b_far]))[1]
    assert _select([b, b_far, a, a_close], "vote") in (2, 3)
    assert _select([a, a_close, b, b_far], "vote") in (0, 1)
    scores = [Score(False, 0.2), Score(True, 0.9), Score(True, 0.95)]
    assert _select(x0s, "oracle", scores) == 2
    with pytest.raises(ValueError):
        _select(x0s, "oracle")


def test_compare_and_sweep_write_run_folders(den, tmp_path):
    cfg = SamplingConfig(steps=3)
    ens = EnsembleConfig(k=2, window=(0, 1), rule="mean_x0_renoise")
    methods = baselines(ens, cfg)
    s = compare(den, "maze", 3, 3, 40_000, cfg, methods, tmp_path / "c", progress=False)
    assert set(s["methods"]) == {m.name for m in methods}
    assert s["methods"]["best_of_k_oracle"]["needs_ground_truth"] is True
    assert s["methods"]["best_of_k_oracle"]["solve_rate"] >= s["methods"]["single"]["solve_rate"]
    assert "diff_vs_single" in s["methods"]["ensemble"]
    for c in ("single_cold", "single_matched"):  # the ensemble's own paired CI against each control
        d = s["methods"]["ensemble"]["diff_vs_" + c]["solve_rate"]
        assert d[1] <= d[0] <= d[2]
    assert "ensemble minus single_cold (paired" in (tmp_path / "c" / "summary.txt").read_text()
    assert len((tmp_path / "c" / "results.jsonl").read_text().splitlines()) == 3 * len(methods)
    figs = json.loads((tmp_path / "c" / "figures.json").read_text())
    assert figs[0]["path"] == "compare.png" and (tmp_path / "c" / "compare.png").exists()
    again = compare(den, "maze", 3, 3, 40_000, cfg, methods, tmp_path / "c", progress=False)  # resumes: nothing to do
    assert again["methods"] == s["methods"]
    with pytest.raises(ConfigError):
        compare(den, "maze", 3, 3, 40_000, cfg, [Method("single"), Method("single")], tmp_path / "d", progress=False)

    out = tmp_path / "s"
    summary = sweep(den, "maze", 3, 3, 40_000, cfg, out, ks=(2, 3), windows=((0, 1),), progress=False)
    for f in ("sweep.json", "sweep.md", "sweep.png", "figures.json", "summary.json", "summary.txt", "manifest.json"):
        assert (out / f).exists(), f
    data = json.loads((out / "sweep.json").read_text())
    nfes = sorted({p["nfe"] for p in data["points"] if p["k"] > 1 and p["window"]} - {data["baseline"]["nfe"]})
    assert len(data["points"]) == 2 * 4 + 2 + len(nfes) and summary["recommended"]["name"] in {p["name"] for p in data["points"]}
    matched = {p["name"]: p for p in data["points"] if p["rule"] == "single_matched"}
    assert set(matched) == {f"single_nfe{v}" for v in nfes} and all(p["nfe"] <= int(n[10:]) for n, p in matched.items())
    for p in data["points"]:  # every merging setting carries its own paired CI against its K's cold start and its NFE's single seed
        if p["window"]:
            assert p["diff_vs_cold"] is not None and p["diff_vs_cold"]["solve_rate"][1] <= p["diff_vs_cold"]["solve_rate"][0]
            assert (p["diff_vs_matched"] is not None) == (p["nfe"] in nfes)
    assert "diff vs single_cold" in (out / "sweep.md").read_text()
    assert [(p["k"], p["window"]) for p in data["points"] if p["rule"] == "single_cold"] == [(2, None), (3, None)]
    # the best setting that merges trajectories is named apart from the cold-start controls (single seeds)
    merged = {p["name"] for p in data["points"] if p["window"]}
    assert summary["recommended_ensemble"]["name"] in merged and data["recommended_ensemble"] == summary["recommended_ensemble"]
    if summary["recommended"]["name"] in merged:
        assert summary["recommended_ensemble"] == summary["recommended"]


def test_cli_rejects_bad_arguments(tmp_path):
    runner = CliRunner()
    base = ["ensemble", "run", "--out", str(tmp_path / "r"), "--model", "no-such-model"]
    for extra, msg in ((["--window", "0:9", "--steps", "4"], "exceeds"), (["--k", "0"], "--k"),
                       (["--window", "two"], "START:END"), (["--rule", "median"], "unknown rule")):
        r = runner.invoke(app, base + extra)
        assert r.exit_code == 2, r.output
        assert msg in r.output
    r = runner.invoke(app, ["ensemble", "sweep", "--out", str(tmp_path / "s"), "--windows", "0:2,0:30", "--steps", "20"])
    assert r.exit_code == 2 and "exceeds" in r.output
    r = runner.invoke(app, base)  # valid arguments, unknown model: still one clear line and exit 2
    assert r.exit_code == 2 and "no-such-model" in r.output
    assert not (tmp_path / "r" / "manifest.json").exists()  # nothing written for rejected arguments


def test_cli_run_and_sweep_end_to_end(den, tmp_path):
    from steplens.models.serialize import export

    export(den.model, tmp_path / "model")
    runner = CliRunner()
    common = ["--model", str(tmp_path / "model"), "--size", "3", "--n", "2", "--seed", "7", "--steps", "3"]
    r = runner.invoke(app, ["ensemble", "run", "--out", str(tmp_path / "r"), "--k", "2", "--window", "0:1", "--rule", "mean_v",
                            "--select", "agreement", *common])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["methods"]["ensemble"]["nfe"] == 6 and summary["methods"]["single_matched"]["steps"] == 6
    # the spelling, without the subcommand: `ensemble` defaults to `ensemble run`
    r2 = runner.invoke(app, ["ensemble", "--out", str(tmp_path / "r2"), "--k", "2", "--window", "0:1", "--rule", "mean_v",
                             "--select", "agreement", *common])
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout[r2.stdout.index("{"):]) == summary
    r = runner.invoke(app, ["ensemble", "sweep", "--out", str(tmp_path / "s"), "--ks", "2", "--windows", "0:1",
                            "--rules", "mean_xt", "--no-norm-correct", *common])
    assert r.exit_code == 0, r.output
    assert "recommended" in r.output and (tmp_path / "s" / "sweep.png").exists()


def test_cold_single_scales_the_initial_noise(den):
    """single_cold starts one seed from noise * 1/sqrt(K): the same distribution as the mean of K noises."""
    from steplens.ensemble import cold_single, run_trajectories

    cfg = SamplingConfig(steps=3)
    m = cold_single(4)
    assert m.noise_scale == pytest.approx(0.5)
    first = []
    cold = run_trajectories(den, "maze", 3, SEEDS, cfg, m.ens, noise_scale=m.noise_scale)
    plain = run_trajectories(den, "maze", 3, SEEDS, cfg, m.ens)
    assert not torch.allclose(cold.finals, plain.finals)
    # the same thing by hand: scaled noise through the plain sampler
    batch, x, cond = _batch(den, SEEDS, 1)
    from steplens.sampling import get_sampler, run

    want = run(get_sampler("euler")(den, x * 0.5, cfg.sigmas(), cond), lambda e: first.append(e.x))
    assert torch.allclose(cold.finals[:, 0], want, atol=1e-6)
    assert torch.allclose(first[0][:, :, 1:], (x * 0.5)[:, :, 1:])  # frame 0 is the given image
    with pytest.raises(ConfigError):
        Method("bad", noise_scale=0.0)
    names = [mm.name for mm in sweep_methods(ks=(2, 4), windows=((0, 1),), rules=("mean_xt",), norm_correct=(False,))]
    assert names[:3] == ["single", "k2_single_cold", "k4_single_cold"]


def test_sweep_recommendation_is_reported_on_held_out_instances():
    from steplens.ensemble.report import held_out, recommend, split_results

    seeds = list(range(8))
    # "lucky" wins every calibration (even) instance and nothing held out; "steady" wins 3 of 4 on both halves
    results = {"single": [{"seed": s, "success": False} for s in seeds],
               "lucky": [{"seed": s, "success": s % 2 == 0} for s in seeds],
               "steady": [{"seed": s, "success": s not in (0, 1)} for s in seeds]}
    cal, held, split = split_results(results, seeds)
    assert split and [r["seed"] for r in cal["lucky"]] == [0, 2, 4, 6] and [r["seed"] for r in held["lucky"]] == [1, 3, 5, 7]
    def per(rs):
        return {k: {"solve_rate": sum(r["success"] for r in v) / len(v), "nfe": 20, "needs_ground_truth": False, "ens": None,
                    "n": len(v), "diff_vs_single": {"solve_rate": [sum(r["success"] for r in v) / len(v), 0.01, 1.0]}}
                for k, v in rs.items()}
    rec = held_out(recommend(per(cal)), per(held), split)
    assert rec["name"] == "lucky" and rec["calibration"]["solve_rate"] == 1.0  # chosen where it looked best ...
    assert rec["solve_rate"] == 0.0 and "held-out" in rec["selection"]  # ... and reported where it was not chosen
    assert rec["held_out_diffs"] == {"single": per(held)["lucky"]["diff_vs_single"]}  # its differences to controls, too
    assert "in-sample" in held_out(recommend(per(results)), per(results), False)["selection"]
