"""SIGKILL during the long commands that tests/test_resume.py does not kill: search run, ensemble sweep, train
(between checkpoints and while one is written) and demo. The re-run resumes to the same result records as an uninterrupted run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from test_resume import export_tiny, samples, start_and_kill, stats, steplens

from steplens.config import to_dict
from steplens.train import TrainConfig, read_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

# Runs ARGS (a steplens command line, or `train-config JSON OUT`) with TARGET (module:attr) patched so that after its N-th
# call the process announces it and hangs, to be SIGKILLed; with --midway (for atomic_write_bytes) the N-th write stops
# with half its bytes in the temporary file, as a kill during the write leaves it.
HANG_AT = """
import importlib, json, os, sys, tempfile, time
from pathlib import Path
marker, n, target, *rest = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], *sys.argv[4:]
mod_name, attr = target.split(":")
owner_name, _, name = attr.rpartition(".")
owner = importlib.import_module(mod_name)
if owner_name:
    owner = getattr(owner, owner_name)
real, count = getattr(owner, name), [0]
def stop():
    marker.write_text("stopped")
    time.sleep(600)
def after(*a, **kw):
    out = real(*a, **kw)
    count[0] += 1
    if count[0] == n:
        stop()
    return out
def midway(path, data):
    count[0] += 1
    if count[0] < n:
        return real(path, data)
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".tmp", dir=Path(path).parent)
    os.write(fd, data[: len(data) // 2])
    stop()
midway_mode = rest[0] == "--midway"
setattr(owner, name, midway if midway_mode else after)
rest = rest[1:] if midway_mode else rest
if rest[0] == "train-config":
    from steplens.config import from_dict
    from steplens.train import TrainConfig, train
    train(from_dict(TrainConfig, json.loads(rest[1])), rest[2], progress=False)
else:
    from steplens.cli import app
    app(rest, prog_name="steplens")
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return export_tiny(tmp_path_factory.mktemp("tiny"))


def records(out: Path, *jsonl: str) -> dict[str, str]:
    """A run's result records: every sample file and the named result tables, by name."""
    return {**samples(out), **{name: (out / name).read_text() for name in jsonl}}


def kill_and_rerun(tmp_path: Path, target: str, args: list[str], calls: int) -> Path:
    """Kill `args` after `calls` calls of `target`, check it stopped half-way, re-run it to the end; returns OUT."""
    out = Path(args[args.index("--out") + 1])
    start_and_kill(tmp_path, HANG_AT, [target, *args], chunks=calls)
    assert 0 < len(samples(out)) and not (out / "summary.json").exists()
    before = stats(out)
    r = steplens(*args)
    assert r.returncode == 0, r.stderr
    assert all(stats(out)[k] == v for k, v in before.items())  # nothing finished was recomputed
    return out


def test_sigkilled_search_run_resumes_to_the_uninterrupted_records(model, tmp_path):
    def args(out: Path) -> list[str]:
        return ["search", "run", "--model", model, "--size", "3", "--n", "4", "--k", "2", "--budget", "2", "--steps", "2",
                "--screen-step", "1", "--precision", "fp32", "--out", str(out)]

    whole = steplens(*args(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = kill_and_rerun(tmp_path, "steplens.runs:RunFolder.write", args(tmp_path / "run"), calls=2)
    assert len(samples(out)) == 4
    assert records(out, "results_b2.jsonl") == records(tmp_path / "whole", "results_b2.jsonl")


def test_sigkilled_ensemble_sweep_resumes_to_the_uninterrupted_records(model, tmp_path):
    def args(out: Path) -> list[str]:
        return ["ensemble", "sweep", "--model", model, "--size", "3", "--n", "4", "--ks", "2", "--windows", "0:1", "--rules", "mean_xt",
                "--no-norm-correct", "--no-matched", "--steps", "2", "--max-batch", "2", "--precision", "fp32", "--out", str(out)]

    whole = steplens(*args(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = kill_and_rerun(tmp_path, "steplens.runs:RunFolder.write_many", args(tmp_path / "run"), calls=1)
    assert records(out, "results.jsonl") == records(tmp_path / "whole", "results.jsonl")


TRAIN = TrainConfig(preset="tiny", sizes=(3,), batch=4, steps=6, warmup=2, ckpt_every=2, seed=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """An uninterrupted training run's final checkpoint."""
    out = tmp_path_factory.mktemp("train") / "whole"
    train(TRAIN, out, progress=False)
    return read_checkpoint(out / "checkpoint.pt")


@pytest.mark.parametrize(("target", "midway"), [("steplens.train:save_checkpoint", False), ("steplens.train:atomic_write_bytes", True)],
                         ids=["between checkpoints", "while a checkpoint is written"])
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(trained, tmp_path, target, midway):
    out = tmp_path / "run"
    start_and_kill(tmp_path, HANG_AT, [target, *(["--midway"] if midway else []), "train-config", json.dumps(to_dict(TRAIN)), str(out)],
                   chunks=2)
    ck = read_checkpoint(out / "checkpoint.pt")  # the kill never leaves a half-written checkpoint under its name
    assert ck["step"] == (2 if midway else 4)
    st = train(TRAIN, out, progress=False)
    assert st.step == TRAIN.steps
    final = read_checkpoint(out / "checkpoint.pt")
    for part in ("model", "ema"):
        assert all(torch.equal(trained[part][k], v) for k, v in final[part].items()), part
    # the log's loss is a running mean over the call's own steps, and wall time differs: the rest is the same
    drop = lambda log: [{k: v for k, v in e.items() if k not in ("elapsed_s", "loss")} for e in log]  # noqa: E731
    assert drop(final["log"]) == drop(trained["log"])
    assert (out / "model.safetensors").is_file() and json.loads((out / "metrics.json").read_text())["done"]


def demo_records(out: Path) -> dict[str, object]:
    """A demo folder's result records: every stage's sample files and result tables, and summary.json without its
    wall times (the figures and the report are drawn from these)."""
    recs: dict[str, object] = {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("samples/*.json"))}
    recs |= {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*.jsonl"))}
    summary = json.loads((out / "summary.json").read_text())
    for k in ("timings_s", "stage_s", "total_s"):
        summary.pop(k)
    recs["summary.json"] = summary
    return recs


def test_sigkilled_demo_resumes_to_the_uninterrupted_records(quick_demo, tmp_path):
    """SIGKILL the quick demo (both of its processes) after its first commit of samples; the re-run equals the
    uninterrupted quick demo of tests/conftest.py in every result record (the mp4s and pngs are not compared)."""
    whole, code, output = quick_demo
    assert code == 0, output
    out = tmp_path / "run"
    start_and_kill(tmp_path, HANG_AT, ["steplens.runs:RunFolder.write_many", "demo", "--quick", "--out", str(out)], chunks=1, group=True)
    assert any(out.rglob("samples/*.json")) and not (out / "summary.json").exists()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("samples/*.json")}
    r = steplens("demo", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == v for p, v in before.items())  # nothing finished was recomputed
    assert demo_records(out).keys() == demo_records(whole).keys()
    assert demo_records(out) == demo_records(whole)


@pytest.mark.parametrize("cmd", [["search", "run", "--k", "2", "--budget", "2", "--screen-step", "1"],
                                 ["ensemble", "sweep", "--ks", "2", "--windows", "0:1", "--rules", "mean_xt", "--no-norm-correct",
                                  "--no-matched"]], ids=["search run", "ensemble sweep"])
def test_the_long_commands_show_an_instance_bar_on_stderr(model, tmp_path, cmd):
    """done/total instances with an ETA on stderr (issue 34), none of it on stdout."""
    r = steplens(*cmd, "--model", model, "--size", "3", "--n", "3", "--steps", "2", "--precision", "fp32", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    done = re.findall(r"\b(\d+)/(\d+)\b", r.stderr)  # instances (ensemble: instances x methods) done / all
    assert done and done[-1][0] == done[-1][1] and int(done[-1][1]) % 3 == 0, r.stderr
    assert "━" not in r.stdout and f"{done[-1][0]}/{done[-1][1]}" not in r.stdout, r.stdout
