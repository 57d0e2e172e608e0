"""probe splice --data: the splice probe on VBVR-Bench folders, the answers read off a benchmark scorer.

The tiny Wan model's seeds decode to different pixels but the same blocks, so the scorer here is a stand-in kit (the
official command line and result file) whose score depends on the video: the mean brightness of its last frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from steplens.cli import app  # noqa: E402
from steplens.probes.bench_splice import choose_pair, outcome  # noqa: E402
from steplens.probes.splice import analyse  # noqa: E402
from steplens.tasks.vbvr import iter_bench  # noqa: E402
from test_bench import RUN_EVALUATION, gt, model  # noqa: E402,F401 - the official-layout root and the tiny Wan (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

KIT_SCORE = "s = task_score(task, int(f[:-4]))"
BRIGHTNESS = '''
def brightness(path):  # the score of a video: its last frame's mean brightness, 0..1 (PyAV: importing steplens costs seconds)
    import av
    with av.open(path) as c:
        last = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][-1]
    return float(last.mean()) / 255.0
'''


@pytest.fixture
def bright_kit(tmp_path) -> Path:
    """A stand-in kit (run_evaluation.py's command line and results) scoring each video by its last frame's brightness."""
    assert KIT_SCORE in RUN_EVALUATION
    d = tmp_path / "VBVR-EvalKit"
    d.mkdir()
    script = RUN_EVALUATION.replace("p = argparse.ArgumentParser()", BRIGHTNESS + "p = argparse.ArgumentParser()", 1)
    (d / "run_evaluation.py").write_text(script.replace(KIT_SCORE, "s = brightness(os.path.join(fp, task, f))"))
    return d


def test_choose_pair_takes_the_widest_gap_of_scored_seeds():
    assert choose_pair([0.2, 0.9, None, 0.1], 0.05) == ((1, 3), 3, 0)  # 0.9 vs 0.1; the unscored seed takes no part
    assert choose_pair([0.5, 0.52, 0.51], 0.05) == (None, 0, 3)  # every gap under the margin: the seeds agree
    assert choose_pair([0.0, 1.0, 0.0, 1.0], 0.5) == ((0, 1), 4, 2)  # ties: the first pair in seed order
    assert choose_pair([None, 0.3], 0.1) == (None, 0, 0)


def test_outcome_is_the_donor_within_half_the_gap():
    assert outcome(0.8125, noise=0.75, plan=0.25) == "noise" and outcome(0.3125, noise=0.75, plan=0.25) == "plan"
    assert outcome(0.5, noise=0.75, plan=0.25) == "neither"  # the midpoint (binary-exact values)
    assert outcome(1.125, noise=0.75, plan=0.25) == "neither" and outcome(-0.125, noise=0.75, plan=0.25) == "neither"  # far past
    assert outcome(0.875, noise=0.75, plan=0.25) == "noise"  # past the noise donor, within half the gap of it


def test_scored_records_read_like_task_records():
    """analyse over score-based records: the crossing where the plan takes over, split by whether the plan donor scored higher;
    no observational commit (a finished-video scorer has no per-step answer)."""
    grid = [0, 2, 4, 6]
    sigmas = list(np.linspace(1, 0, 9))
    recs = [{"final_score": [0.9, 0.1], "n_differ": 1, "n_agree": 0, "pairs": [[0, 1]],
             "forward": [["noise", "noise", "plan", "plan"]], "reverse": [["noise", "noise", "plan", "plan"]]} for _ in range(12)]
    s = analyse(recs, grid, sigmas)
    assert s["crossing"]["step"] == pytest.approx(3.0) and s["final_mean_score"] == pytest.approx(0.5)
    assert set(s["by_plan_donor"]) == {"plan_scores_higher", "plan_scores_lower"}
    assert "observational_commit_pairs" not in s and "no observational commit" in s["reading"]
    assert s["causal_switch"]["median"] == 4


def test_probe_splice_on_official_layout(gt, model, bright_kit, tmp_path):
    """Seeds scored by the kit, the widest-gap pair spliced at every grid step, each splice scored and read: at step 0 the
    splice is the noise donor's own trajectory (sigma = 1), so its frames are A's (forward) and B's (reverse)."""
    out = tmp_path / "splice"
    args = ["probe", "splice", "--model", f"wan:{model}", "--data", str(gt), "--prompt-embeds", str(model / "emb.pt"), "--steps", "4",
            "--frames", "5", "--height", "32", "--width", "32", "--k", "3", "--every", "2", "--scorer", "vbvr-evalkit",
            "--evalkit", str(bright_kit), "--margin", "1e-6", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    refs = iter_bench(gt)
    official = [r for r in refs if r.steplens_task is None]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_instances"] == len(official) == 3 and len(s["not_covered"]) == 2  # the kit is never handed steplens' mazes
    key = "vbvr-evalkit.run_evaluation"
    seed_scores = [{f"{r['split']}__{r['task']}__{r['index']}": r["score"]
                    for r in map(json.loads, (out / "seeds" / "scores" / f"seed_{j}.{key}.jsonl").read_text().splitlines())}
                   for j in range(3)]
    recs = {r["key"]: r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    paired = [r for r in official if recs[r.key]["pairs"]]
    assert s["n"] == len(paired) >= 2, s  # the seeds' frames differ, so do their brightness scores
    for ref in paired:
        rec = recs[ref.key]
        scores = [seed_scores[j][ref.key] for j in range(3)]
        assert rec["final_score"] == scores and tuple(rec["pairs"][0]) == choose_pair(scores, 1e-6)[0]
        a, b = rec["pairs"][0]
        digest = {name: json.loads((out / folder / "samples" / f"{name}__{ref.key}.json").read_text())["frames_sha256"]
                  for folder, name in (("seeds", f"seed_{a}"), ("seeds", f"seed_{b}"), ("splices", "fwd_00"), ("splices", "rev_00"),
                                       ("splices", "fwd_02"))}
        assert digest["fwd_00"] == digest[f"seed_{a}"] and digest["rev_00"] == digest[f"seed_{b}"]
        assert digest["fwd_02"] != digest[f"seed_{a}"]  # past step 0 the splice changes the video
        assert rec["forward"][0][0] == rec["reverse"][0][0] == "noise" and rec["donor_finals_reproduced"]
        for kind in ("forward", "reverse"):
            assert (out / "splices" / ("fwd_02" if kind == "forward" else "rev_02") / ref.video_rel).is_file()
    assert s["curve"][0]["noise"] == s["reverse_curve"][0]["noise"] == s["n"] and [r["step"] for r in s["curve"]] == [0, 2]
    assert s["donor_finals_reproduced"] == {"n": s["n"], "same_frames": s["n"]}
    assert s["scorer"]["scorer"] == "vbvr-evalkit" and "observational_commit_pairs" not in s
    assert (out / "splice_curve.png").stat().st_size > 0 and (out / "precision.json").is_file()
    assert "follow-plan rate" in res.output and "its score under vbvr-evalkit.run_evaluation" in res.output
    again = CliRunner().invoke(app, args)  # resumable: nothing is generated twice, the same reading
    assert again.exit_code == 0, again.output
    assert "15 done, 0 to run" in again.output and f"{s['n'] * 4} done, 0 to run" in again.output
    assert json.loads((out / "summary.json").read_text())["curve"] == s["curve"]
    cmp = CliRunner().invoke(app, ["probe", "splice-curves", str(out), "--out", str(tmp_path / "cmp")])
    assert cmp.exit_code == 0 and f"{gt.name} ({key}): " in cmp.output, cmp.output


@pytest.mark.parametrize("extra, message", [
    (["--erase"], "--erase apply to task runs only"),
    (["--pairs", "2"], "--pairs apply to task runs only"),
    (["--scorer", "steplens,vbvr-evalkit", "--evalkit", "."], "one scorer"),
    (["--margin", "0"], "--margin must be > 0"),
])
def test_probe_splice_data_refusals(gt, model, tmp_path, extra, message):
    args = ["probe", "splice", "--model", f"wan:{model}", "--data", str(gt), "--prompt-embeds", str(model / "emb.pt"), "--steps", "2",
            "--frames", "5", "--height", "32", "--width", "32", "--out", str(tmp_path / "o"), *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and message in res.output, res.output


def test_probe_splice_bench_options_need_data(tmp_path):
    res = CliRunner().invoke(app, ["probe", "splice", "--scorer", "vbvr-evalkit", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "apply to --data runs only" in res.output
