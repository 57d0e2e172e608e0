"""The splice probe: A into A reproduces A, the controls give the reading their construction promises, the card says why not."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steplens.cli import app
from steplens.findings import NOT_MEASURABLE, SPECS, evaluate
from steplens.models.registry import load
from steplens.probes.common import ProbeConfig
from steplens.probes.splice import NEVER_PLAN, SEEDS_AGREE, analyse, crossing, run_splice, splice_latent, switch_step
from steplens.runner import SamplingConfig, noise_seed
from steplens.sampling import get_sampler, run, seeded_noise

from conftest import tiny_reference

pytestmark = pytest.mark.usefixtures("one_thread")
P = 10  # control:commit commits at sigma 0.5: step 10 of 20 Euler steps at shift 1


def test_splice_formula_keeps_the_noise_and_swaps_the_plan():
    g = torch.Generator().manual_seed(0)
    x0a, x0b, eps = (torch.randn(2, 3, 4, 5, 5, generator=g) for _ in range(3))
    for sigma in (1.0, 0.7, 0.05):
        xa = (1 - sigma) * x0a + sigma * eps
        assert torch.allclose(splice_latent(xa, x0a, x0a, sigma), xa, atol=1e-6)  # A into A: A's state
        assert torch.allclose(splice_latent(xa, x0a, x0b, sigma), (1 - sigma) * x0b + sigma * eps, atol=1e-5)
    xa = torch.randn(2, 3, 4, 5, 5, generator=g)
    assert torch.equal(splice_latent(xa, x0a, x0b, 1.0), xa)  # at sigma 1 the plan has no weight


def test_splicing_a_into_a_reproduces_a_final():
    den, batch = tiny_reference()
    cfg = SamplingConfig(steps=8)
    sig = cfg.sigmas(den)
    x = seeded_noise(batch.latent_shape, [noise_seed(1), noise_seed(2)])
    states = {}
    final = run(get_sampler("euler")(den, x, sig, batch.cond), lambda e: states.__setitem__(e.step, (e.x, e.x0_hat, e.sigma)))
    for s in (0, 3, 6):
        xs, x0, sigma = states[s]
        out = run(get_sampler("euler")(den, splice_latent(xs, x0, x0, sigma), sig[s:], batch.cond, first_step=s))
        assert torch.allclose(out, final, atol=1e-5)
        assert np.array_equal(den.decode(out), den.decode(final))


def test_crossing_and_switch_step():
    grid = [0, 2, 4, 6]
    assert crossing([0, 0, 1, 1], grid) == 3.0
    assert crossing([0, 0.25, 0.75, 1], grid) == 3.0
    assert crossing([0, 0.6, 0.4, 1], grid) == pytest.approx(4 + 0.1 / 0.6 * 2)  # the last crossing from below
    assert crossing([0.5, 1, 1, 1], grid) == 0.0
    assert crossing([0, 1, 1, 0.2], grid) is None
    assert switch_step(["noise", "plan", "noise", "plan"], grid, 8) == 6
    assert switch_step(["noise"] * 4, grid, 8) == 8


def test_null_shrink_seeds_agree_and_the_card_says_so(tmp_path):
    den = load("null:shrink")
    s = run_splice(den, ProbeConfig(model="null:shrink", size=4, n=3, batch=3), str(tmp_path / "s"), k=3, every=5, progress=False)
    assert s["n_pairs"] == 0 and s["pairs_differ"] == 0 and s["pairs_agree_skipped"] == 9
    assert s["verdict"] == SEEDS_AGREE and s["crossing"]["step"] is None
    card = next(f for f in evaluate({"splice": s}) if f["id"] == "decided_at")
    assert card["verdict"] == NOT_MEASURABLE and card["note"] == SEEDS_AGREE
    json.loads((tmp_path / "s" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))


def _candidates_run(den, tmp_path, name):
    cfg = ProbeConfig(model=den.name, size=5, n=32, batch=8)  # >= 24 with differing seeds: no verdict below
    return run_splice(den, cfg, str(tmp_path / name), k=4, every=2, self_check=True, progress=False)


def test_a_control_that_commits_at_p_crosses_at_p(tmp_path):
    den = load("control:commit")
    s = _candidates_run(den, tmp_path, "commit")
    p = P
    assert s["n_pairs"] >= 4 and s["self_check"]["rate"] == 1.0
    by_step = {r["step"]: r["follow_plan"] for r in s["curve"]}
    assert max(v for k, v in by_step.items() if k < p) == 0.0 and min(v for k, v in by_step.items() if k >= p) == 1.0
    lo, hi = s["crossing"]["ci95"]
    assert s["verdict"] == "measured" and lo <= p <= hi and hi - lo < 4
    card = next(f for f in evaluate({"splice": s}) if f["id"] == "decided_at")
    assert card["value"] == s["crossing"]["step"] and card["verdict"] == "reproduced"  # decided along the steps, not at 0-1
    assert (tmp_path / "commit" / "splice_curve.png").is_file()


def test_a_control_whose_noise_decides_never_follows_the_plan(tmp_path):
    """control:candidates re-reads its choice from the noise at every step: it draws one answer from p on
    (observationally committed) but a spliced plan never takes over."""
    s = _candidates_run(load("control:candidates"), tmp_path, "cand")
    assert s["n_pairs"] >= 4 and s["self_check"]["rate"] == 1.0
    assert all(r["follow_plan"] == 0.0 and r["follow_noise"] == 1.0 for r in s["curve"] + s["reverse_curve"])
    assert s["verdict"] == NEVER_PLAN and s["crossing"]["step"] is None
    assert s["observational_commit_pairs"]["median"] <= 10  # the picture settles, the decision stays with the noise


def test_analyse_counts_agreeing_pairs_and_splits_by_the_plan_donor():
    grid, sigmas = [0, 2], [1.0, 0.5, 0.0]
    recs = [{"final_success": [True, False, True], "commit": [0, 1, 1], "n_differ": 2, "n_agree": 1, "pairs": [[0, 1]],
             "forward": [["noise", "noise"]], "reverse": [["noise", "plan"]]},
            {"final_success": [True, True, True], "commit": [0, 0, 0], "n_differ": 0, "n_agree": 3, "pairs": [],
             "forward": [], "reverse": []}]
    s = analyse(recs, grid, sigmas)
    assert (s["n"], s["n_pairs"], s["pairs_agree_skipped"], s["instances_where_seeds_agree"]) == (1, 1, 4, 1)
    assert [r["follow_plan"] for r in s["by_plan_donor"]["plan_right_noise_wrong"]["curve"]] == [0.0, 1.0]  # reverse: A's plan, right
    assert [r["follow_plan"] for r in s["by_plan_donor"]["plan_wrong_noise_right"]["curve"]] == [0.0, 0.0]
    assert s["verdict"] == NEVER_PLAN  # the forward splice never follows


def test_splice_command(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["probe", "splice", "--model", "null:shrink", "--task", "maze", "--size", "3", "--n", "2", "--k", "2",
                                 "--steps", "4", "--every", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "not measurable: the seeds agree" in r.output
    assert json.loads((out / "manifest.json").read_text())["kind"] == "probe-splice"
    bad = CliRunner().invoke(app, ["probe", "splice", "--model", "null:shrink", "--k", "1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
    assert any(s.id == "decided_at" for s in SPECS)


def test_splice_curves_draws_one_line_per_run(tmp_path):
    den = load("control:commit")
    for size in (4, 5):
        run_splice(den, ProbeConfig(model="control:commit", size=size, n=3, batch=3), str(tmp_path / f"r{size}"), k=3, every=5,
                   progress=False)
    out = tmp_path / "cmp"
    r = CliRunner().invoke(app, ["probe", "splice-curves", str(tmp_path / "r4"), str(tmp_path / "r5"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "summary.json").read_text())["runs"]
    assert [row["label"] for row in rows] == ["control:commit maze 4", "control:commit maze 5"]
    assert json.loads((out / "figures.json").read_text())[0]["path"] == "splice_curve.png"
    bad = CliRunner().invoke(app, ["probe", "splice-curves", str(tmp_path / "nope"), "--out", str(tmp_path / "cmp2")])
    assert bad.exit_code == 2


@pytest.mark.parametrize(("task", "size"), [("maze", 5), ("occlusion", 12), ("rotate", 9)])
def test_erasing_a_candidate_changes_nothing_for_a_control_that_ignores_the_state(tmp_path, task, size):
    """control:candidates draws its answer from its conditioning and its noise: an erased candidate (a maze's dead-end
    branch, occlusion's object one block past, rotate's counter-clockwise turn) comes back exactly when A's own final
    draws it, and the answer stays A's."""
    den = load("control:candidates")
    s = run_splice(den, ProbeConfig(model=den.name, task=task, size=size, n=4, batch=4), str(tmp_path / "e"), k=4, every=4,
                   erase=True, progress=False)
    rows = [r for r in s["erase"]["per_step"] if r["n"]]
    assert rows and rows[0]["step"] == 0  # the explore phase draws the wrong candidate from the first step
    for r in rows:
        assert r["same_answer_rate"] == 1.0
        assert r["kept_by_a"]["rate"] in (None, 1.0) and r["pruned_by_a"]["rate"] in (None, 0.0)
    assert sum(r["kept_by_a"]["n"] for r in rows) and sum(r["pruned_by_a"]["n"] for r in rows)
    assert s["erase"]["sticks"]["step"] is None  # a candidate it keeps is re-drawn at every step: an erasure never sticks
    figs = [f["path"] for f in json.loads((tmp_path / "e" / "figures.json").read_text())]
    assert "splice_erase.png" in figs and (tmp_path / "e" / "splice_erase.png").stat().st_size > 0


def test_erase_needs_a_task_with_a_background(tmp_path, monkeypatch):
    from steplens.tasks.rotate import RotateTask

    monkeypatch.setattr(RotateTask, "background", None)
    with pytest.raises(ValueError, match="no background colour"):
        run_splice(load("null:shrink"), ProbeConfig(model="null:shrink", task="rotate", size=9, n=1), str(tmp_path / "x"), k=2,
                   erase=True)
    assert not (tmp_path / "x").exists()  # refused before the run folder is made


def test_the_erase_crossing_is_where_erasures_of_kept_candidates_start_to_stick():
    from steplens.probes.splice import _erase_curve

    grid = list(range(0, 20, 2))
    rng = np.random.default_rng(0)

    def rec(stick_from):  # one pair; A keeps its candidate; erasures before `stick_from` are re-drawn, from it they stick
        row = [{"redrawn": s < stick_from, "in_final": True, "same": s < stick_from} for s in grid]
        pruned = [{"redrawn": False, "in_final": False, "same": True} if s < 4 else None for s in grid]
        return {"erase": [row, pruned]}

    recs = [rec(int(rng.choice([8, 10]))) for _ in range(40)]
    st = _erase_curve(recs, grid)["sticks"]
    assert 6 < st["step"] <= 10 and st["ci95"][0] <= st["step"] <= st["ci95"][1] and st["ci95"][1] - st["ci95"][0] <= 4
    few = _erase_curve(recs[:3], grid)["sticks"]
    assert few["ci95"] is None and "fewer than 5" in few["why"]
    never = _erase_curve([rec(99) for _ in range(8)], grid)["sticks"]
    assert never["step"] is None and "every step" in never["why"]


def test_the_wrong_candidate_is_what_the_frame_draws_and_the_answer_does_not():
    from steplens.probes.splice import erase_blocks, wrong_candidate
    from steplens.tasks import get_task
    from steplens.tasks.base import classify_blocks

    rot, occ = get_task("rotate"), get_task("occlusion")
    inst = rot.generate(3, 9)
    truth = rot.blocks(inst)
    assert wrong_candidate(rot, inst, truth[-1]) is None  # the answer itself draws nothing wrong
    ccw = rot.violations(inst)["counterclockwise"][-1]
    mask, col = wrong_candidate(rot, inst, ccw)
    want = (classify_blocks(ccw.astype(np.float32), rot.colors) == 1) & (classify_blocks(truth[-1].astype(np.float32), rot.colors) != 1)
    assert mask.sum() and not (mask & ~want).any() and (col[mask] == 1).all()  # blue blocks off the rotated piece
    oi = occ.generate(5, 12)
    mask, col = wrong_candidate(occ, oi, occ.violations(oi)["stopped_before"][-1])
    assert mask.sum() == 1 and col[mask][0] == occ.colors.index("red")  # the object where it stopped
    # erasing paints the true colours back in every frame after the first (identity codec: the reference DiT's)
    den, _ = tiny_reference()
    video = rot.violations(inst)["counterclockwise"]
    x0 = den.encode(video[None])
    back = den.decode(erase_blocks(den, x0, [wrong_candidate(rot, inst, video[-1])[0]], [truth]))[0]
    assert wrong_candidate(rot, inst, back[-1]) is None and np.array_equal(back[0], video[0])


def test_a_wide_crossing_ci_says_why_and_what_n_would_narrow_it():
    from steplens.probes.splice import why_wide

    grid = list(range(0, 20, 2))
    assert why_wide(2.0, 25, grid) is None and why_wide(None, 25, grid) is None
    msg = why_wide(6.0, 25, grid)
    assert "6 steps wide" in msg and "n=25" in msg and "225 such instances" in msg  # 25 x (6 / 2)^2
    straddle = why_wide(4.0, 194, grid, [9.6, 11.1])  # the bounds alone are 1.5 steps apart: the grid, not n, widens them
    assert "[9.6, 11.1]" in straddle and "step 10" in straddle and "--every 1" in straddle and "such instances" not in straddle
    assert "such instances" in why_wide(6.0, 25, grid, [7.1, 12.9])  # the bounds themselves are wide: n sets it
    coarse = why_wide(5.0, 40, list(range(0, 20, 5)))
    assert "cannot be narrower" in coarse and "--every" in coarse
