"""One error path: every command turns bad input into one `error:` line on stderr and exit code 2, no traceback,
and leaves no output folder behind that a corrected re-run would find (and trust, or refuse as another config)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steplens.cli import app
from steplens.models.dit import random_tiny
from steplens.models.serialize import export, export_random_tiny
from steplens.tasks.vbvr import generate_set

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SMALL = ["--size", "3", "--n", "2", "--steps", "2"]  # a run that would take a second on the tiny model


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Files the table refers to: a tiny model, one with NaN weights, good and corrupt samples, a junk checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    tiny = export_random_tiny(root / "tiny")
    nan = random_tiny(seed=0)
    with torch.no_grad():
        next(p for n, p in nan.named_parameters() if n.startswith("final")).fill_(float("nan"))
    export(nan, root / "nan")
    generate_set("maze", 1, 5, root / "data", size=3, progress=False)
    generate_set("maze", 1, 5, root / "gt", size=3, progress=False, layout="vbvr")  # an official VBVR-Bench root
    bad_png = root / "bad_png"
    shutil.copytree(root / "data", bad_png)
    (bad_png / "maze_00000" / "first_frame.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    videos = root / "videos"
    videos.mkdir()
    (videos / "maze_00000.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    (root / "junk.pt").write_bytes(b"not a checkpoint")
    (root / "emb.pt").write_bytes(b"")
    run = root / "run"  # a run folder whose figure is a corrupt PNG
    run.mkdir()
    (run / "manifest.json").write_text('{"kind": "x", "config": {}}')
    (run / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (run / "figures.json").write_text('[{"path": "plot.png", "title": "t"}]')
    return {"TINY": tiny, "NAN": str(root / "nan"), "DATA": str(root / "data"), "BAD_PNG": str(bad_png),
            "VIDEOS": str(videos), "JUNK": str(root / "junk.pt"), "EMB": str(root / "emb.pt"), "RUN": str(run),
            "MISSING": str(root / "missing"), "GT": str(root / "gt")}


# (command line, what the error line must name); OUT is a fresh folder that must not exist afterwards
CASES = [
    # tasks
    (["tasks", "audit", "maze", "--size", "99"], "maze size must be in 3..10"),
    (["tasks", "audit", "nope"], "unknown task 'nope'"),
    (["tasks", "generate", "maze", "--n", "2", "--size", "50", "--out", "OUT"], "size"),
    (["tasks", "generate", "nope", "--n", "2", "--out", "OUT"], "unknown task 'nope'"),
    (["tasks", "generate", "maze", "--n", "0", "--out", "OUT"], "--n"),
    (["tasks", "generate", "maze", "--n", "1", "--out", "OUT", "--layout", "nested"], "unknown layout 'nested'"),
    (["tasks", "generate", "maze", "--n", "1", "--out", "OUT", "--layout", "vbvr", "--split", "Hidden_40"], "unknown split 'Hidden_40'"),
    # score: missing folder, corrupt PNG, corrupt MP4 (every sample failed: no result)
    (["score", "MISSING"], "no such folder"),
    (["score", "BAD_PNG"], "first_frame.png"),
    (["score", "DATA", "--videos", "VIDEOS"], "maze_00000.mp4"),
    (["score", "DATA", "--videos", "MISSING"], "videos folder not found"),
    # train and export
    (["export", "MISSING", "OUT"], "no such checkpoint"),
    (["export", "JUNK", "OUT"], "not a readable training checkpoint"),
    (["train", "--out", "OUT", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--out", "OUT", "--sizes", "3,x"], "--sizes"),
    (["train", "--out", "OUT", "--preset", "huge"], "unknown preset"),
    (["train", "--out", "OUT", "--preset", "tiny", "--steps", "1", "--init", "JUNK"], "not a readable training checkpoint"),
    # evaluate: wrong names, bad ranges, NaN latents (every sample non-finite)
    (["evaluate", "--out", "OUT", "--model", "no-such-model"], "no model 'no-such-model'"),
    (["evaluate", "--out", "OUT", "--model", "TINY", "--task", "nope"], "unknown task 'nope'"),
    (["evaluate", "--out", "OUT", "--model", "TINY", "--n", "0"], "--n"),
    (["evaluate", "--out", "OUT", "--model", "TINY", "--steps", "0"], "--steps"),
    (["evaluate", "--out", "OUT", "--model", "TINY", "--sampler", "ddim"], "ddim"),
    (["evaluate", "--out", "OUT", "--model", "NAN", *SMALL], "non-finite"),
    # trace
    (["trace", "--out", "OUT", "--k", "2", "--window", "3"], "--window must be START:END"),
    (["trace", "--out", "OUT", "--k", "2", "--window", "0:9", "--steps", "4"], "exceeds"),
    (["trace", "--out", "OUT", "--model", "TINY", "--capture", "blocks.0.resid_post:bogus", *SMALL], "unknown reducer 'bogus'"),
    (["trace", "--out", "OUT", "--model", "TINY", "--capture", "blocks.0.resid_post:norm@steps=x", *SMALL], "bad steps list"),
    (["trace", "--out", "OUT", "--model", "TINY", "--capture", "blocks.*.nope:norm", *SMALL], "no hook point matches"),
    (["trace", "show", "MISSING"], "no such trace folder"),
    # probes: malformed windows and layer lists, bad modes, NaN latents, wan-only options
    (["probe", "layers", "--out", "OUT", "--window", "abc"], "--window must be START:END"),
    (["probe", "layers", "--out", "OUT", "--window", "5:2"], "START <= END"),
    (["probe", "cka", "--out", "OUT", "--layers", "x"], "--layers must be comma-separated integers"),
    (["probe", "cka", "--out", "OUT", "--layers", "1,,a"], "--layers must be comma-separated integers"),
    (["probe", "cka", "--out", "OUT", "--model", "TINY", "--layers", "99", "--every", "1", *SMALL, "--batch", "2"], "layers [99] outside the model's"),
    (["probe", "layers", "--out", "OUT", "--model", "TINY", "--window", "0:99", *SMALL], "ends after the 2 sampling steps"),
    (["probe", "layers", "--out", "OUT", "--patch-window", "3"], "--patch-window must be START:END"),
    (["probe", "layers", "--out", "OUT", "--model", "TINY", "--patch-window", "0:9", *SMALL], "--patch-window 0:9 ends after"),
    (["probe", "layers", "--out", "OUT", "--model", "TINY", "--patch", "everything", *SMALL], "--patch must be one of"),
    (["probe", "perturb", "--out", "OUT", "--mode", "bogus"], "--mode takes one or more of replace, add, renoise"),
    (["probe", "cka", "--out", "OUT", "--mode", "replace,bogus"], "--mode takes one or more of"),
    (["probe", "perturb", "--out", "OUT", "--frame-window", "abc"], "--frame-window must be START:END"),
    (["probe", "perturb", "--out", "OUT", "--model", "TINY", "--frame-window", "0:9", *SMALL], "--frame-window 0:9 needs"),
    (["probe", "cos", "--out", "OUT", "--model", "no-such-model"], "no model 'no-such-model'"),
    (["probe", "cos", "--out", "OUT", "--task", "nope"], "unknown task 'nope'"),
    (["probe", "cos", "--out", "OUT", "--model", "NAN", *SMALL, "--batch", "2"], "non-finite"),
    (["probe", "cos", "--out", "OUT", "--prompt-embeds", "EMB"], "wan: models only"),
    # ensembles
    (["ensemble", "run", "--out", "OUT", "--window", "0:9", "--steps", "4"], "exceeds"),
    (["ensemble", "run", "--out", "OUT", "--window", "two"], "--window must be START:END"),
    (["ensemble", "run", "--out", "OUT", "--rule", "median"], "unknown rule 'median'"),
    (["ensemble", "run", "--out", "OUT", "--model", "no-such-model"], "no model 'no-such-model'"),
    (["ensemble", "run", "--out", "OUT", "--tasks", "steplens-maze"], "apply to --data runs only"),
    (["ensemble", "run", "--out", "OUT", "--data", "GT", "--ray", "local"], "--ray does not apply"),
    (["ensemble", "run", "--out", "OUT", "--data", "GT"], "needs a diffusers image-to-video model"),
    (["ensemble", "run", "--out", "OUT", "--data", "GT", "--model", "wan:MISSING", "--select", "vote", "--after", "all"],
     "needs ground truth or the reference palette"),
    (["ensemble", "sweep", "--out", "OUT", "--ks", "2,x"], "--ks must be comma-separated integers"),
    (["ensemble", "sweep", "--out", "OUT", "--windows", "0:2,2"], "--windows must be START:END"),
    # test-time search
    (["search", "run", "--out", "OUT", "--model", "no-such-model"], "no model 'no-such-model'"),
    (["search", "run", "--out", "OUT", "--precision", "fp8"], "--precision must be one of"),
    (["search", "run", "--out", "OUT", "--prompt-embeds", "EMB"], "wan: models only"),
    (["search", "run", "--out", "OUT", "--model", "TINY", "--budget", "0.5", *SMALL], "budget must be >= 1"),
    (["search", "sweep", "--out", "OUT", "--ks", "2,x"], "--ks must be comma-separated integers"),
    (["search", "sweep", "--out", "OUT", "--ss", "0"], "--ss must be positive integers"),
    # reports, Wan, demo, usage
    (["report", "MISSING"], "not a folder"),
    (["report", "RUN"], "not a readable image"),
    (["serve", "MISSING", "--port", "0"], "not a folder"),
    (["evaluate-vbvr", "--model", "wan:MISSING", "--data", "MISSING", "--out", "OUT"], "no such data folder"),
    (["evaluate-vbvr", "--model", "wan:MISSING", "--data", "DATA", "--out", "OUT", "--tasks", "maze"], "apply to an official VBVR-Bench root"),
    (["evaluate-vbvr", "--model", "wan:MISSING", "--data", "GT", "--out", "OUT", "--split", "Hidden_40"], "unknown split 'Hidden_40'"),
    (["evaluate-vbvr", "--model", "wan:MISSING", "--data", "GT", "--out", "OUT", "--video-preset", "sora"], "unknown preset 'sora'"),
    (["evaluate-vbvr", "--model", "wan:MISSING", "--data", "GT", "--out", "OUT", "--scorer", "vbench"], "unknown scorer 'vbench'"),
    (["evaluate-vbvr", "--model", "wan:MISSING", "--data", "GT", "--out", "OUT", "--scorer", "vbvr-evalkit", "--evalkit", "MISSING"],
     "missing: no such folder (--evalkit"),
    (["demo", "--out", "OUT", "--model", "no-such-model"], "no model 'no-such-model'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["evaluate", "--out"], "--out"),
]


@pytest.mark.parametrize(("args", "names"), CASES, ids=[" ".join(a[:3]) + f" [{i}]" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(inputs, tmp_path, args, names):
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else inputs.get(a, a.replace("wan:MISSING", "wan:" + inputs["MISSING"])) for a in args]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, (argv, r.output)
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit | None), r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert names in lines[0], lines[0]
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))  # nothing a re-run would trust or refuse


def test_a_failed_call_keeps_a_run_that_has_results(inputs, tmp_path):
    """The clean-up only takes folders this call created holding nothing but a manifest: results stay resumable."""
    out = tmp_path / "run"
    ok = runner.invoke(app, ["evaluate", "--out", str(out), "--model", inputs["TINY"], *SMALL])
    assert ok.exit_code == 0, ok.output
    kept = sorted(p.name for p in (out / "samples").glob("*.json"))
    assert len(kept) == 2
    other = runner.invoke(app, ["evaluate", "--out", str(out), "--model", inputs["TINY"], *SMALL[:-1], "3"])
    assert other.exit_code == 2 and "different config" in other.stderr
    assert sorted(p.name for p in (out / "samples").glob("*.json")) == kept


def test_partial_failures_exit_1(inputs, tmp_path):
    """Some samples failed, others were scored: exit 1, the line counts them and names the first problem."""
    data = tmp_path / "data"
    shutil.copytree(inputs["DATA"], data / "good")
    shutil.copytree(inputs["BAD_PNG"], data / "bad")
    r = runner.invoke(app, ["score", str(data)])
    assert r.exit_code == 1, r.output
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"error: 1 of 2 samples could not be scored; first: {data / 'bad' / 'maze_00000'}")
    assert "first_frame.png" in line


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("STEPLENS_DEBUG", "1")
    r = runner.invoke(app, ["evaluate", "--out", "x", "--model", "no-such-model"])
    assert r.exit_code != 0 and type(r.exception).__name__ == "ModelLoadError"
