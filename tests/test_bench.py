"""VBVR-Bench end to end: official-layout folders (no meta.json), generation in the kit's output layout on the
tiny Wan model, and the official-kit adapter against stand-in scripts that follow the kit's documented CLI."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from typer.testing import CliRunner  # noqa: E402

from steplens.cli import app  # noqa: E402
from steplens.config import ConfigError  # noqa: E402
from steplens.io import read_video, write_png, write_video  # noqa: E402
from steplens.precision import choose  # noqa: E402
from steplens.vbvr.kit import EvalKitScorer, KitError, SteplensScorer, make_scorers  # noqa: E402
from steplens.tasks.vbvr import SampleError, generate_set, is_bench_root, iter_bench, read_sample  # noqa: E402
from steplens.vbvr.run import BenchConfig, score_bench, video_plan  # noqa: E402

KEY_DOOR, MAZE_OOD = "G-45_key_door_matching_data-generator", "O-39_maze_data-generator"
TINY = ["--steps", "2", "--frames", "5", "--height", "32", "--width", "32"]


def official_sample(folder: Path, rng: np.random.Generator, prompt: str) -> None:
    """An official-kit sample folder: images, ground truth video and prompt, no meta.json."""
    video = rng.integers(0, 256, (5, 40, 48, 3), dtype=np.uint8)
    write_png(folder / "first_frame.png", video[0])
    write_png(folder / "final_frame.png", video[-1])
    write_video(folder / "ground_truth.mp4", video)
    (folder / "prompt.txt").write_text(prompt + "\n")


@pytest.fixture(scope="module")
def gt(tmp_path_factory) -> Path:
    """Three tasks in the official layout: two official ones (3 samples) and steplens' maze (2); no meta.json in official ones."""
    root = tmp_path_factory.mktemp("bench") / "GT"
    rng = np.random.default_rng(0)
    for i in range(2):
        official_sample(root / "In-Domain_50" / KEY_DOOR / f"{i:05d}", rng, f"Move the key to door {i}.")
    official_sample(root / "Out-of-Domain_50" / MAZE_OOD / "00000", rng, "Solve the maze.")
    generate_set("maze", 2, 5, root, size=3, progress=False, layout="vbvr")
    return root


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory, one_thread) -> Path:
    from test_wan import build

    root = tmp_path_factory.mktemp("wan") / "m"
    build("i2v_moe").save_pretrained(root)
    g = torch.Generator().manual_seed(0)
    torch.save({"prompt_embeds": torch.randn(1, 8, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 8, 32, generator=g)},
               root / "emb.pt")
    return root


# -- the official layout -----------------------------------------------------------------------------
def test_iter_bench_layout_and_filters(gt, tmp_path):
    refs = iter_bench(gt)
    assert [r.rel for r in refs] == [f"In-Domain_50/{KEY_DOOR}/00000", f"In-Domain_50/{KEY_DOOR}/00001", "In-Domain_50/steplens-maze/00000",
                                     "In-Domain_50/steplens-maze/00001", f"Out-of-Domain_50/{MAZE_OOD}/00000"]
    assert refs[0].video_rel == f"In-Domain_50/{KEY_DOOR}/00000.mp4"
    assert [r.steplens_task for r in refs] == [None, None, "maze", "maze", None]
    assert not (gt / "In-Domain_50" / KEY_DOOR / "00000" / "meta.json").exists()
    assert [r.rel for r in iter_bench(gt, splits=["Out-of-Domain_50"])] == [f"Out-of-Domain_50/{MAZE_OOD}/00000"]
    assert len(iter_bench(gt, tasks=["steplens-maze", MAZE_OOD])) == 3
    with pytest.raises(SampleError, match="unknown split 'Hidden'"):
        iter_bench(gt, splits=["Hidden"])
    with pytest.raises(SampleError, match="no task folder 'O-1_nope'"):
        iter_bench(gt, tasks=["O-1_nope"])
    with pytest.raises(SampleError, match="no split folder"):
        iter_bench(tmp_path)
    assert is_bench_root(gt) and not is_bench_root(tmp_path)
    # steplens' reader of flat folders still refuses a sample without meta.json, naming the file
    from steplens.tasks.vbvr import SampleRef

    ref = refs[0]
    with pytest.raises(SampleError, match="meta.json: missing"):
        read_sample(SampleRef(ref.index, ref.rel, ref.path))


def test_tasks_generate_layout_vbvr(tmp_path):
    res = CliRunner().invoke(app, ["tasks", "generate", "rotate", "--n", "2", "--out", str(tmp_path), "--layout", "vbvr",
                                   "--split", "Out-of-Domain_50"])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*/*")) == [
        "Out-of-Domain_50/steplens-rotate/00000", "Out-of-Domain_50/steplens-rotate/00001"]
    # the ground truth as the model's output scores 1 under steplens' scorer; a missing video scores 0 and is listed
    out = tmp_path / "out"
    refs = iter_bench(tmp_path)
    (out / refs[0].video_rel).parent.mkdir(parents=True)
    shutil.copy(refs[0].path / "ground_truth.mp4", out / refs[0].video_rel)
    rows = SteplensScorer().score(tmp_path, out, refs, tmp_path / "w")
    assert [(r.status, r.score) for r in rows] == [("scored", 1.0), ("missing", 0.0)]


def test_video_plan_from_presets():
    from test_wan import build

    from steplens.models.wan import WanDenoiser
    from steplens.vbvr.run import detect_preset

    den = WanDenoiser.from_pipeline(build("i2v_moe"))
    assert detect_preset(den) == "wan2.2-i2v-a14b"
    cfg = BenchConfig("x")
    assert video_plan(den, (480, 832), cfg) == (81, 480, 832)  # the preset's own size is kept exactly
    assert video_plan(den, (1024, 1024), cfg) == (81, 624, 624)  # sqrt(480*832) = 631.9, down to a multiple of 16
    h, w = video_plan(den, (720, 1280), cfg)[1:]
    assert h % 16 == 0 and w % 16 == 0 and h * w <= 480 * 832 and abs(w / h - 1280 / 720) < 0.05
    assert video_plan(den, (480, 832), BenchConfig("x", frames=49, height=64, width=32)) == (49, 64, 32)
    with pytest.raises(ValueError, match="4k\\+1 frames"):
        video_plan(den, (480, 832), BenchConfig("x", frames=50))
    with pytest.raises(ConfigError, match="both --height and --width"):
        BenchConfig("x", height=32)
    assert detect_preset(WanDenoiser.from_pipeline(build("ti2v"))) == "wan2.2-ti2v-5b"


def test_single_method_is_plain_sampling(gt, model):
    """The bench's single-seed method is the ordinary sampler from seed `seed` (what the pipeline would give)."""
    from steplens.ensemble import Method
    from steplens.models.wan import load_wan
    from steplens.runner import SamplingConfig
    from steplens.sampling import sample, seeded_noise
    from steplens.vbvr.wan import load_prompt_embeds
    from steplens.vbvr.run import bench_input, method_generator

    den = load_wan(model, text_encoder=False)
    cfg = BenchConfig(str(gt), frames=5, height=32, width=32, seed=7, prompt_embeds=str(model / "emb.pt"))
    inp = bench_input(den, iter_bench(gt)[0], cfg, load_prompt_embeds(cfg.prompt_embeds))
    sampling = SamplingConfig("euler", 2, 5.0)
    video, details = method_generator(Method("single"), sampling)(den, inp)
    want = den.decode(sample(den, seeded_noise(inp.latent_shape, [7]), sampling.sigmas(den), inp.cond))[0]
    assert np.array_equal(video, want) and video.shape == (5, 32, 32, 3)
    assert details["seeds"] == [7] and details["nfe"] == 2
    with pytest.raises(ConfigError, match="needs ground truth"):
        from steplens.ensemble import EnsembleConfig

        method_generator(Method("m", EnsembleConfig(k=2, window=(0, 0), select="oracle")), sampling)


# -- the official kit, as a stand-in that follows its documented command lines and result files --------------
_KIT_COMMON = '''
import argparse, json, os, re, sys
EVALUATORS = {"%s": "Abstraction", "%s": "Spatiality"}
FOLDER_TO_SPLIT = {"In-Domain_50": "In_Domain", "Out-of-Domain_50": "Out_of_Domain"}

def task_score(task, idx):  # known by construction: key-door (idx + 1) / 4, the maze 0.9
    return (idx + 1) / 4 if task.startswith("G-45_") else 0.9
''' % (KEY_DOOR, MAZE_OOD)

RUN_EVALUATION = _KIT_COMMON + '''
p = argparse.ArgumentParser()
g = p.add_mutually_exclusive_group(required=True)
g.add_argument("--model_path"); g.add_argument("--models_base")
p.add_argument("--models", nargs="+"); p.add_argument("--gt_base", required=True)
p.add_argument("--output_dir"); p.add_argument("--device", default="cuda")
a = p.parse_args()
samples, summary = [], {k: {"scores": [], "by_task": {}, "by_category": {}} for k in ("In_Domain", "Out_of_Domain", "overall")}
for folder in ("In-Domain_50", "Out-of-Domain_50"):
    fp = os.path.join(a.model_path, folder)
    if not os.path.isdir(fp):
        continue
    for task in sorted(os.listdir(fp)):
        if task not in EVALUATORS:
            print("Warning: No evaluator for task", task); continue
        for f in sorted(os.listdir(os.path.join(fp, task))):
            if not re.fullmatch(r"\\d{5}\\.mp4", f):
                continue
            gt = os.path.join(a.gt_base, folder, task, f[:-4])
            assert os.path.isfile(os.path.join(gt, "first_frame.png")), gt
            s = task_score(task, int(f[:-4])); split = FOLDER_TO_SPLIT[folder]
            samples.append({"video_path": os.path.join(fp, task, f), "video_file": f, "task_name": task, "split": split,
                            "category": EVALUATORS[task], "folder": folder, "score": s, "dimensions": {"task_specific": s}, "error": None})
            for k in (split, "overall"):
                summary[k]["scores"].append(s)
for k, v in summary.items():
    v["mean_score"] = sum(v["scores"]) / len(v["scores"]) if v["scores"] else 0.0
    v["num_samples"] = len(v["scores"])
name = os.path.basename(a.model_path.rstrip("/"))
os.makedirs(a.output_dir, exist_ok=True)
json.dump({"model_name": name, "samples": samples, "summary": summary}, open(os.path.join(a.output_dir, name + "_vbvr_results.json"), "w"))
'''

EVALUATE = _KIT_COMMON + '''
p = argparse.ArgumentParser()
p.add_argument("--videos_path", required=True); p.add_argument("--gt_path", required=True)
p.add_argument("--output_path", default="./evaluation_results/"); p.add_argument("--name")
p.add_argument("--split", choices=["In-Domain_50", "Out-of-Domain_50", "all"], default="all")
p.add_argument("--tasks", nargs="+"); p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
a = p.parse_args()
if any(t not in EVALUATORS for t in a.tasks or []):
    sys.exit("KeyError: no evaluator for " + ",".join(t for t in a.tasks if t not in EVALUATORS))
dims = {"first_frame_consistency": 1.0, "final_frame_accuracy": 0.5, "temporal_smoothness": 1.0, "visual_quality": 0.0}
w = {"first_frame_consistency": 0.15, "final_frame_accuracy": 0.35, "temporal_smoothness": 0.15, "visual_quality": 0.10, "task_specific": 0.25}
detailed, cats = [], {}
for split in (["In-Domain_50", "Out-of-Domain_50"] if a.split == "all" else [a.split]):
    for task in a.tasks:
        tp = os.path.join(a.videos_path, split, task)
        if not os.path.isdir(tp):
            continue
        for f in sorted(os.listdir(tp)):
            d = dict(dims, task_specific=task_score(task, int(f[:-4])))
            s = sum(w[k] * d[k] for k in w)
            detailed.append({"score": s, "dimensions": d, "details": {"gt_frame_count": 5}, "video_path": os.path.join(tp, f),
                             "task_name": task, "split": "Out_of_Domain" if task.startswith("O-39") else "In_Domain", "video_idx": f[:-4]})
            cats.setdefault(EVALUATORS[task], {"scores": [], "tasks": []})
            cats[EVALUATORS[task]]["scores"].append(s)
            if task not in cats[EVALUATORS[task]]["tasks"]:
                cats[EVALUATORS[task]]["tasks"].append(task)
def mean(rows):
    return {"mean_score": sum(r["score"] for r in rows) / len(rows) if rows else 0.0, "num_videos": len(rows)}
res = {"overall": mean(detailed), "detailed": detailed, "by_category": cats,
       **{k: mean([r for r in detailed if r["split"] == k]) for k in ("In_Domain", "Out_of_Domain")}}
os.makedirs(a.output_path, exist_ok=True)
json.dump(res, open(os.path.join(a.output_path, a.name + "_eval_results.json"), "w"))
'''


@pytest.fixture
def kit(tmp_path) -> Path:
    d = tmp_path / "VBVR-EvalKit"
    d.mkdir()
    (d / "run_evaluation.py").write_text(RUN_EVALUATION)
    (d / "evaluate.py").write_text(EVALUATE)
    return d


def fake_outputs(gt: Path, out: Path, skip: str) -> None:
    """Any video for every sample but `skip` (a missing one), in the kit's output layout."""
    for ref in iter_bench(gt):
        if ref.rel != skip:
            write_video(out / ref.video_rel, np.full((5, 32, 32, 3), 128, np.uint8))


def test_kit_adapter_run_evaluation(gt, kit, tmp_path):
    out = tmp_path / "OUT"
    fake_outputs(gt, out / "single", skip=f"In-Domain_50/{KEY_DOOR}/00001")
    refs = iter_bench(gt)
    summary = score_bench(out, gt, refs, ["single"], [EvalKitScorer(kit, "run_evaluation")])
    s = summary["methods"]["single"]["vbvr-evalkit.run_evaluation"]
    rows = {(r["task"], r["index"]): r
            for r in map(json.loads, (out / "scores" / "single.vbvr-evalkit.run_evaluation.jsonl").read_text().splitlines())}
    assert (rows[(KEY_DOOR, "00000")]["status"], rows[(KEY_DOOR, "00000")]["score"]) == ("scored", 0.25)
    assert (rows[(KEY_DOOR, "00001")]["status"], rows[(KEY_DOOR, "00001")]["score"]) == ("missing", 0.0)
    assert rows[("steplens-maze", "00000")]["status"] == "not_covered"
    assert s["overall"]["n"] == 3 and s["overall"]["n_missing"] == 1
    assert s["overall"]["score"] == pytest.approx((0.25 + 0.0 + 0.9) / 3)  # the missing video counts as 0 ...
    assert s["kit_reported"]["overall"]["mean_score"] == pytest.approx((0.25 + 0.9) / 2)  # ... the kit's own mean drops it
    assert s["missing"] == [f"In-Domain_50/{KEY_DOOR}/00001"]
    assert s["per_task"][KEY_DOOR]["score"] == pytest.approx(0.125) and s["per_task"][MAZE_OOD]["score"] == pytest.approx(0.9)
    assert set(s["per_split"]) == {"In-Domain_50", "Out-of-Domain_50"}
    assert s["per_category"]["Spatiality"]["score"] == pytest.approx(0.9)
    lo, hi = s["overall"]["ci95"]
    assert 0.0 <= lo <= s["overall"]["score"] <= hi <= 1.0
    assert s["scorer"]["entry_point"] == "run_evaluation.py" and s["scorer"]["convention"].startswith("task_specific")
    assert s["not_covered"] == {"n": 2, "tasks": ["steplens-maze"]}
    assert (out / "scores" / "single.vbvr-evalkit.run_evaluation" / "single_vbvr_results.json").is_file()  # the kit's raw output


def test_kit_adapter_evaluate_weighted(gt, kit, tmp_path):
    out = tmp_path / "OUT"
    fake_outputs(gt, out / "single", skip=f"In-Domain_50/{KEY_DOOR}/00001")
    s = score_bench(out, gt, iter_bench(gt), ["single"], [EvalKitScorer(kit, "evaluate")])["methods"]["single"]["vbvr-evalkit.evaluate"]
    # 0.15 * 1 + 0.35 * 0.5 + 0.15 * 1 + 0.10 * 0 + 0.25 * task score
    assert s["per_task"][MAZE_OOD]["score"] == pytest.approx(0.475 + 0.25 * 0.9)
    assert s["per_task"][KEY_DOOR]["score"] == pytest.approx((0.475 + 0.25 * 0.25 + 0.0) / 2)
    assert s["scorer"]["entry_point"] == "evaluate.py" and s["scorer"]["convention"].startswith("weighted")
    assert s["scorer"]["weights"]["final_frame_accuracy"] == 0.35
    assert set(s["kit_reported"]) == {"In_Domain", "Out_of_Domain", "overall"}  # one kit call over both splits
    assert s["kit_reported"]["overall"]["num_samples"] == 2  # the kit's own mean leaves the missing video out
    assert s["per_category"]["Abstraction"]["n"] == 2


def test_a_kit_run_without_ground_truth_is_an_error_never_a_score(gt, kit, tmp_path):
    """evaluate.py's no-ground-truth defaults (first frame 0.5, final frame 0, no GT frame count) on every sample: a
    KitError; on some samples: those samples are errors scoring 0."""
    script = (kit / "evaluate.py").read_text()
    no_gt = script.replace('"first_frame_consistency": 1.0, "final_frame_accuracy": 0.5',
                           '"first_frame_consistency": 0.5, "final_frame_accuracy": 0.0')
    found = '"details": {"gt_frame_count": 5}'
    (kit / "evaluate.py").write_text(no_gt.replace(found, '"details": {}'))
    out = tmp_path / "OUT"
    fake_outputs(gt, out, skip="")
    with pytest.raises(KitError, match="scored every sample without ground truth"):
        EvalKitScorer(kit, "evaluate").score(gt, out, iter_bench(gt), tmp_path / "w")
    (kit / "evaluate.py").write_text(no_gt.replace(found, '"details": {} if task.startswith("O-39") else {"gt_frame_count": 5}'))
    rows = [r for r in EvalKitScorer(kit, "evaluate").score(gt, out, iter_bench(gt), tmp_path / "w2") if r.status != "not_covered"]
    assert [(r.task, r.status, r.score) for r in rows if r.status == "error"] == [(MAZE_OOD, "error", 0.0)]
    assert "without ground truth" in rows[-1].message and [r.status for r in rows[:2]] == ["scored", "scored"]


def test_kit_failures_are_one_clear_error(gt, kit, tmp_path):
    (kit / "run_evaluation.py").write_text("import sys\nsys.exit('ImportError: no module named cv2')\n")
    out = tmp_path / "OUT"
    fake_outputs(gt, out / "single", skip="")
    with pytest.raises(KitError, match="run_evaluation.py exited 1: ImportError: no module named cv2"):
        score_bench(out, gt, iter_bench(gt), ["single"], [EvalKitScorer(kit)])
    with pytest.raises(ConfigError, match="needs --evalkit"):
        make_scorers("vbvr-evalkit")
    with pytest.raises(ConfigError, match="no evaluate.py"):
        make_scorers("vbvr-evalkit", evalkit=str(tmp_path), entry="evaluate")
    with pytest.raises(ConfigError, match="unknown scorer 'vbench'"):
        make_scorers("vbench")


def test_score_command_on_any_models_videos(gt, kit, tmp_path):
    """steplens score GT --videos V --scorer ...: one line per sample with each scorer's score, then both means and kit_reported."""
    videos = tmp_path / "V"
    fake_outputs(gt, videos, skip="")
    res = CliRunner().invoke(app, ["score", str(gt), "--videos", str(videos), "--scorer", "steplens,vbvr-evalkit", "--evalkit", str(kit),
                                   "--evalkit-entry", "evaluate", "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(r["split"], r["task"], r["index"]) for r in lines[:-1]] == [(r.split, r.task, r.index) for r in iter_bench(gt)]
    key_door = lines[0]
    assert key_door["scores"] == {"steplens": None, "vbvr-evalkit.evaluate": pytest.approx(0.475 + 0.25 * 0.25)}
    assert lines[2]["status"] == {"steplens": "scored", "vbvr-evalkit.evaluate": "not_covered"}  # steplens' maze
    summary = lines[-1]["summary"]
    assert set(summary["scorers"]) == {"steplens", "vbvr-evalkit.evaluate"} and summary["scorers"]["steplens"]["n"] == 2
    assert summary["kit_reported"]["vbvr-evalkit.evaluate"]["overall"]["num_samples"] == 3
    (videos / f"Out-of-Domain_50/{MAZE_OOD}/00000.mp4").unlink()  # a missing video: scored 0, named, exit 1
    res = CliRunner().invoke(app, ["score", str(gt), "--videos", str(videos), "--scorer", "vbvr-evalkit", "--evalkit", str(kit)])
    assert res.exit_code == 1 and "error: 1 of 3 samples could not be scored" in res.stderr and "kit overall" in res.stdout
    flat = CliRunner().invoke(app, ["score", str(tmp_path), "--videos", str(videos), "--scorer", "steplens"])
    assert flat.exit_code == 2 and "apply to an official VBVR-Bench root" in flat.stderr


# -- the whole pipeline on the tiny Wan model ----------------------------------------------------------
def test_evaluate_vbvr_and_ensemble_on_official_layout(gt, model, kit, tmp_path):
    runner = CliRunner()
    out = tmp_path / "eval"
    common = ["--model", f"wan:{model}", "--data", str(gt), "--prompt-embeds", str(model / "emb.pt"), *TINY]
    args = ["evaluate-vbvr", *common, "--out", str(out), "--device", "cpu", "--scorer", "steplens,vbvr-evalkit", "--evalkit", str(kit)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    refs = iter_bench(gt)
    for ref in refs:
        assert read_video(out / "single" / ref.video_rel).shape == (5, 32, 32, 3)
    summary = json.loads((out / "summary.json").read_text())
    steplens_s, kit_s = summary["methods"]["single"]["steplens"], summary["methods"]["single"]["vbvr-evalkit.run_evaluation"]
    assert steplens_s["overall"]["n"] == 2 and steplens_s["not_covered"]["n"] == 3  # steplens scores its own maze only
    assert kit_s["overall"]["n"] == 3 and kit_s["overall"]["score"] == pytest.approx((0.25 + 0.5 + 0.9) / 3)
    for s in (steplens_s, kit_s):
        lo, hi = s["overall"]["ci95"]
        assert 0.0 <= lo <= s["overall"]["score"] <= hi <= 1.0 and s["scorer"]["convention"]
    assert "task_specific" in res.output and "single" in res.output
    ran = choose("auto").precision.value  # --precision auto on this CPU: in the manifest, OUT/precision.json and on stderr
    assert json.loads((out / "manifest.json").read_text())["config"]["precision"] == ran
    assert json.loads((out / "precision.json").read_text())["precision"] == ran and f"precision {ran} (asked auto" in res.stderr
    mtime = (out / "single" / refs[0].video_rel).stat().st_mtime_ns
    again = runner.invoke(app, args[:-4])  # resumable, and scoring again with another scorer regenerates nothing
    assert again.exit_code == 0 and "5 samples x 3 methods: 15 done, 0 to run" in again.output  # single, static, end-jump
    assert (out / "single" / refs[0].video_rel).stat().st_mtime_ns == mtime
    kept = json.loads((out / "summary.json").read_text())["methods"]["single"]
    assert set(kept) == {"steplens", "vbvr-evalkit.run_evaluation"}  # the kit's summary of the same videos is kept

    ens_out = tmp_path / "ens"
    res = runner.invoke(app, ["ensemble", "run", *common, "--out", str(ens_out), "--k", "3", "--window", "0:1", "--no-baselines",
                              "--tasks", f"steplens-maze,{MAZE_OOD}"])
    assert res.exit_code == 0, res.output
    summary = json.loads((ens_out / "summary.json").read_text())
    assert set(summary["methods"]) == {"single", "ensemble", "static", "end-jump"} and summary["n_samples"] == 3
    ens_s = summary["methods"]["ensemble"]["steplens"]
    assert ens_s["overall"]["n"] == 2 and 0.0 <= ens_s["overall"]["ci95"][0] <= ens_s["overall"]["ci95"][1] <= 1.0
    assert "diff_vs_single" in ens_s
    assert json.loads((ens_out / "manifest.json").read_text())["config"]["precision"] == ran
    ood = f"Out-of-Domain_50/{MAZE_OOD}/00000.mp4"
    single_a, single_b, merged = (read_video(p).astype(np.float64) for p in (out / "single" / ood, ens_out / "single" / ood,
                                                                              ens_out / "ensemble" / ood))
    # the same seed and settings give the same frames in both commands, exactly (x264 may encode equal frames to slightly
    # different files, so the frames' digest recorded before encoding is compared); the ensemble changes the video
    rec = "samples/single__Out-of-Domain_50__" + MAZE_OOD + "__00000.json"
    digests = [json.loads((d / rec).read_text())["frames_sha256"] for d in (out, ens_out)]
    merged_digest = json.loads((ens_out / rec.replace("single__", "ensemble__")).read_text())["frames_sha256"]
    assert len(digests[0]) == 64 and digests[0] == digests[1] != merged_digest
    assert single_a.shape == single_b.shape == merged.shape and np.abs(merged - single_b).mean() > 0.0
    assert not (ens_out / "single" / f"In-Domain_50/{KEY_DOOR}").exists()  # --tasks filtered
    records = [json.loads(p.read_text()) for p in (ens_out / "samples").glob("ensemble__*.json")]
    assert records and all(r["seeds"] == [1, 2, 3] and r["nfe"] == 3 * 1 + 1 for r in records)  # mean_xt at step 0: K, then 1


def test_search_run_on_official_layout(gt, model, tmp_path):
    """search run --data: every method (baselines and pixel early screens) writes the kit's layout, scored, with its NFE."""
    out = tmp_path / "search"
    args = ["search", "run", "--model", f"wan:{model}", "--data", str(gt), "--prompt-embeds", str(model / "emb.pt"), "--steps", "3",
            "--frames", "5", "--height", "32", "--width", "32", "--budget", "2.5", "--k", "3", "--screen-step", "1", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    screens = [f"early_screen_{c}{s}_k3_s1_m2_{f}" for c in ("", "cold_") for s in ("agreement", "stability") for f in ("early", "agreement")]
    expected = {"single", "single_cold", "ensemble", "best_of_2_agreement", *screens, "static", "end-jump"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == expected and summary["n_samples"] == 5
    for m in expected:
        for ref in iter_bench(gt):
            assert read_video(out / m / ref.video_rel).shape == (5, 32, 32, 3)
        s = summary["methods"][m]["steplens"]
        assert s["overall"]["n"] == 2 and s["scorer"]["convention"] and (m == "single" or "diff_vs_single" in s)
    # 3 seeds for 1 step, 2 of them for the other 2: 3 + 2 x 2; best of 2 runs 2 x 3; the paper's ensemble (k=8, merged
    # x_t from step 0): 8 at step 0, then one merged trajectory: 8 + 1 + 1
    assert summary["nfe"] == {"single": 3, "single_cold": 3, "ensemble": 10, "best_of_2_agreement": 6, **{m: 7 for m in screens},
                              "static": 0, "end-jump": 0}
    for m in screens:
        for p in (out / "samples").glob(f"{m}__*.json"):
            r = json.loads(p.read_text())
            assert r["seeds"] == [1, 2, 3] and len(r["kept"]) == 2 and set(r["kept"]) <= {1, 2, 3} and r["chosen"] in r["kept"]
            if m.endswith("_early"):
                assert r["chosen"] == r["kept"][0]  # the best early score
            if "_cold_" in m:  # the same seeds cold-started: other frames than the prior's screen
                prior = json.loads((out / "samples" / p.name.replace("_cold_", "_")).read_text())
                assert r["frames_sha256"] != prior["frames_sha256"]
    assert "nfe=7" in res.output and json.loads((out / "manifest.json").read_text())["config"]["budget"] == 2.5
    too_small = CliRunner().invoke(app, [*args[:-2], "--budget", "1", "--k", "12", "--out", str(tmp_path / "no")])
    assert too_small.exit_code == 2 and "does not fit a budget" in too_small.output
    not_data = CliRunner().invoke(app, ["search", "run", "--split", "In-Domain_50", "--out", str(tmp_path / "no")])
    assert not_data.exit_code == 2 and "apply to --data runs only" in not_data.output


def test_probe_cos_on_official_layout_scores_each_step(gt, model, kit, tmp_path):
    """probe cos --data: the x0_hat of chosen steps written as step roots, each scored by both scorers, curve vs the final."""
    out = tmp_path / "steps"
    args = ["probe", "cos", "--model", f"wan:{model}", "--data", str(gt), "--prompt-embeds", str(model / "emb.pt"), "--steps", "4",
            "--frames", "5", "--height", "32", "--width", "32", "--every", "2", "--scorer", "steplens,vbvr-evalkit", "--evalkit", str(kit),
            "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    roots = ["step_00", "step_02", "step_03"]  # every 2nd step and the last
    for r in roots:
        for ref in iter_bench(gt):
            assert read_video(out / r / ref.video_rel).shape == (5, 32, 32, 3)
    result = json.loads((out / "steps.json").read_text())
    assert result["steps"] == [0, 2, 3] and "x0_hat" in result["caveat"] and result["seed"] == 1
    own, kit_c = result["scorers"]["steplens"], result["scorers"]["vbvr-evalkit.run_evaluation"]
    assert [r["step"] for r in own["steps"]] == [0, 2, 3] and own["steps"][-1]["diff_vs_final"] is None
    assert all(r["n"] == 2 and r["diff_vs_final"] is not None for r in own["steps"][:-1])  # steplens scores its own maze only
    assert own["early_steps"] == [0] and len(own["early_minus_final"]) == 3 and "convention" in own
    assert all(r["n"] == 3 for r in kit_c["steps"])  # the stand-in kit covers the three official samples
    # the last step's x0_hat is the sampler's output: the same frames as a plain single-seed run of the same sample
    single = tmp_path / "single"
    assert CliRunner().invoke(app, ["evaluate-vbvr", "--model", f"wan:{model}", "--data", str(gt), "--prompt-embeds",
                                    str(model / "emb.pt"), "--steps", "4", "--frames", "5", "--height", "32", "--width", "32",
                                    "--out", str(single), "--device", "cpu"]).exit_code == 0
    rec = "samples/{}__Out-of-Domain_50__" + MAZE_OOD + "__00000.json"
    last = json.loads((out / rec.format("step_03")).read_text())["frames_sha256"]
    assert last == json.loads((single / rec.format("single")).read_text())["frames_sha256"]
    assert last != json.loads((out / rec.format("step_00")).read_text())["frames_sha256"]
    assert "step   0" in res.output and "minus final" in res.output and (out / "steps.png").is_file()


def test_a_sample_that_cannot_be_generated_exits_1(gt, model, tmp_path):
    """One corrupt first frame: the other sample is generated, the error is recorded and named, exit 1 (some failed)."""
    root = tmp_path / "GT"
    shutil.copytree(gt / "In-Domain_50" / KEY_DOOR, root / "In-Domain_50" / KEY_DOOR)
    (root / "In-Domain_50" / KEY_DOOR / "00001" / "first_frame.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate-vbvr", "--model", f"wan:{model}", "--data", str(root), "--out", str(out),
                                   "--prompt-embeds", str(model / "emb.pt"), *TINY])
    assert res.exit_code == 1, res.stderr
    line = res.stderr.strip().splitlines()[-1]  # after whatever the model loader warns
    # the broken sample fails for the model and both trivial methods: 3 of the 6 (2 samples x single, static, end-jump)
    assert line.startswith("error: 3 of 6 samples could not be generated; first: single In-Domain_50/") and "first_frame.png" in line
    rec = json.loads((out / "samples" / f"single__In-Domain_50__{KEY_DOOR}__00001.json").read_text())
    assert rec["error_kind"] == "input"
    assert (out / "single" / "In-Domain_50" / KEY_DOOR / "00000.mp4").is_file()
    assert not (out / "single" / "In-Domain_50" / KEY_DOOR / "00001.mp4").exists()


def test_bench_methods_leave_out_ground_truth_baselines():
    from steplens.ensemble import EnsembleConfig
    from steplens.runner import SamplingConfig
    from steplens.vbvr.run import bench_methods

    sampling = SamplingConfig("euler", 50, 5.0)
    ens = EnsembleConfig(k=3, window=(0, 2))
    assert [m.name for m in bench_methods(ens, sampling, baselines=False)] == ["single", "ensemble"]
    names = [m.name for m in bench_methods(ens, sampling, baselines=True)]
    assert names == ["single", "single_matched", "best_of_k_agreement", "single_cold", "ensemble"]
    with pytest.raises(ConfigError, match="needs ground truth"):
        bench_methods(EnsembleConfig(k=3, window=(0, 2), after="all", select="oracle"), sampling, baselines=False)


def test_settles_at_is_the_first_step_from_which_no_step_differs_from_the_final():
    from steplens.probes.bench_steps import chosen_steps, settles_at

    assert chosen_steps(20, 5) == [0, 5, 10, 15, 19] and chosen_steps(4, 2) == [0, 2, 3]
    below, same = (-0.5, -0.7, -0.3), (-0.1, -0.2, 0.1)
    assert settles_at([0, 2, 3], [below, same, None]) == 2
    assert settles_at([0, 2, 3], [same, below, None]) == 3  # a later step that still differs resets it
    assert settles_at([0, 2, 3], [same, same, None]) == 0


def test_a_failing_device_stops_the_official_layout_run(gt, model, tmp_path):
    """A CUDA fault mid-run is a DeviceError that stops the run (as in evaluate), not a per-sample scoring error."""
    from steplens.models.errors import DeviceError
    from steplens.models.wan import load_wan
    from steplens.vbvr.run import run_bench

    def boom(den, inp):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    den = load_wan(model, text_encoder=False)
    cfg = BenchConfig(str(gt), tasks=(MAZE_OOD,), frames=5, height=32, width=32, prompt_embeds=str(model / "emb.pt"))
    with pytest.raises(DeviceError, match="illegal memory access"):
        run_bench(den, cfg, tmp_path / "out", {"single": boom}, echo=lambda _: None)
    assert not list((tmp_path / "out" / "samples").glob("*.json"))  # no "bad sample" record for a device fault
