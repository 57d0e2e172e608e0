"""Resumable, atomic evaluation runs: skip finished samples, survive SIGKILL, record per-sample errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steplens.models.serialize import export_random_tiny
from steplens.evaluate import EvalConfig, evaluate
from steplens.models.dit import ReferenceDenoiser
from steplens.models.protocol import Prediction
from steplens.models.registry import load
from steplens.runner import SamplingConfig
from steplens.runs import RunFolder
from steplens.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")
N, BATCH, STEPS = 12, 3, 3


def export_tiny(folder: Path) -> str:
    return export_random_tiny(folder / "model")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return export_tiny(tmp_path_factory.mktemp("tiny"))


def eval_cfg(model: str, **kw) -> EvalConfig:
    base = dict(model=model, task="maze", size=3, n=N, batch=BATCH, sampling=SamplingConfig(steps=STEPS))
    return EvalConfig(**{**base, **kw})


def samples(run: Path) -> dict[str, str]:
    """Every sample file's text, by name."""
    return {p.name: p.read_text() for p in sorted((run / "samples").glob("*.json"))}


def stats(run: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (run / "samples").glob("*.json")}


class Counting(ReferenceDenoiser):
    """Counts the instances it is asked to sample (prepare encodes each batch once)."""

    def __init__(self, den: ReferenceDenoiser):
        super().__init__(den.model, den.name)
        self.n_frames, self.seen = den.n_frames, 0

    def encode(self, blocks):
        self.seen += len(blocks)
        return super().encode(blocks)


class PoisonFirst(ReferenceDenoiser):
    """Predicts NaN velocity for the first sample of every batch."""

    def __init__(self, den: ReferenceDenoiser):
        super().__init__(den.model, den.name)
        self.n_frames = den.n_frames

    def __call__(self, x, sigma, cond):
        v = super().__call__(x, sigma, cond).velocity.clone()
        v[0] = float("nan")
        return Prediction(v)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory) -> Path:
    """One uninterrupted run, the result every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    evaluate(None, eval_cfg(model), out, progress=False)
    return out


def test_rerun_skips_finished_samples_and_matches_uninterrupted(model, reference, tmp_path):
    den = Counting(load(model))

    def stop_after_two(done: int) -> None:
        if done >= 2 * BATCH:
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate(den, eval_cfg(model), tmp_path, progress=False, on_batch=stop_after_two)
    assert len(samples(tmp_path)) == 2 * BATCH and den.seen == 2 * BATCH
    before = stats(tmp_path)
    den.seen = 0
    summary = evaluate(den, eval_cfg(model), tmp_path, progress=False)
    assert den.seen == N - 2 * BATCH and summary["n_computed_this_call"] == N - 2 * BATCH
    assert all(stats(tmp_path)[k] == v for k, v in before.items())  # finished files untouched
    assert samples(tmp_path) == samples(reference)
    assert (tmp_path / "results.jsonl").read_text() == (reference / "results.jsonl").read_text()
    den.seen = 0
    again = evaluate(den, eval_cfg(model), tmp_path, progress=False)
    assert den.seen == 0 and again["n_computed_this_call"] == 0 and again["n"] == N
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == N


def test_sample_that_raises_is_recorded_the_rest_complete_and_rerun_retries_it(model, reference, tmp_path, monkeypatch):
    task = get_task("maze")
    bad = 10_000 + 4  # in the second chunk
    real = task.generate

    def generate(seed, *a, **kw):
        if seed == bad:
            raise ValueError("corrupt instance")
        return real(seed, *a, **kw)

    monkeypatch.setattr(task, "generate", generate)
    summary = evaluate(None, eval_cfg(model), tmp_path, progress=False)
    rec = json.loads((tmp_path / "samples" / f"maze_3_{bad:010d}.json").read_text())
    assert rec["error"] == "corrupt instance" and rec["error_type"] == "ValueError" and "score" not in rec
    assert summary["n"] == N - 1 and summary["n_errors"] == 1
    assert summary["errors"] == [{"id": f"maze_3_{bad:010d}", "error_type": "ValueError", "error": "corrupt instance"}]
    ours, ref = samples(tmp_path), samples(reference)
    assert len(ours) == N
    for i in (0, 1, 2, 6, 7, 8, 9, 10, 11):  # chunks without the bad sample: same batches, same bits
        name = f"maze_3_{10_000 + i:010d}.json"
        assert ours[name] == ref[name]
    monkeypatch.setattr(task, "generate", real)
    den = Counting(load(model))
    again = evaluate(den, eval_cfg(model), tmp_path, progress=False)
    assert den.seen == 1 and again["n_errors"] == 0 and again["n"] == N  # only the errored sample is retried


def test_non_finite_latents_are_recorded_per_sample(model, reference, tmp_path):
    summary = evaluate(PoisonFirst(load(model)), eval_cfg(model), tmp_path, progress=False)
    firsts = {f"maze_3_{10_000 + i:010d}" for i in range(0, N, BATCH)}
    assert {e["id"] for e in summary["errors"]} == firsts
    assert {e["error_type"] for e in summary["errors"]} == {"NonFiniteLatents"}
    ours, ref = samples(tmp_path), samples(reference)
    for name, text in ours.items():
        if name[:-5] not in firsts:
            assert text == ref[name]  # the other samples of a poisoned batch are unaffected
    assert not any((tmp_path / "frames" / f"{i}.png").exists() for i in firsts)


def test_write_many_commits_all_or_nothing(tmp_path):
    run = RunFolder(tmp_path, "evaluate", {"a": 1})
    run.write_many({"x": {"v": 1}, "y": {"v": 2}})
    assert run.results(["x", "y"]) == [{"id": "x", "v": 1}, {"id": "y", "v": 2}]
    # a crash after the journal was written, before every sample file was: opening finishes the commit
    journal = tmp_path / "samples" / ".commit-z.jsonl"
    journal.write_text('{"id": "z", "v": 3}\n{"id": "w", "v": 4}\n')
    run = RunFolder(tmp_path, "evaluate", {"a": 1})
    assert not journal.exists() and run.results(["z", "w"]) == [{"id": "z", "v": 3}, {"id": "w", "v": 4}]
    assert run.finished("z") and not run.done("nope")
    run.write("e", {"error": "boom"})
    assert run.done("e") and not run.finished("e")


# -- the command line, killed for real ----------------------------------------------------------

# Runs `steplens ARGS` but, after the N-th committed chunk, announces it and hangs (to be SIGKILLed).
HANG_AFTER = """
import sys, time
from pathlib import Path
from steplens.runs import RunFolder
marker, n = Path(sys.argv[1]), int(sys.argv[2])
commit, count = RunFolder.write_many, [0]
def write_many(self, rows):
    commit(self, rows)
    count[0] += 1
    if count[0] == n:
        marker.write_text("stopped")
        time.sleep(600)
RunFolder.write_many = write_many
from steplens.cli import app
app(sys.argv[3:], prog_name="steplens")
"""


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def start_and_kill(tmp_path: Path, script: str, args: list[str], chunks: int, *, group: bool = False) -> None:
    """Start `script` as a process, wait until it has committed `chunks` chunks, SIGKILL it."""
    marker = tmp_path / "stopped"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", script, str(marker), str(chunks), *args], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=group)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "the run never reached the kill point"
            time.sleep(0.05)
    finally:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started in its session
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def cli_args(model: str, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", model, "--task", "maze", "--size", "3", "--n", str(N), "--batch", str(BATCH),
            "--steps", str(STEPS), "--precision", "fp32", "--out", str(out), *extra]  # fp32: the reference's, on any CPU


def steplens(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steplens.cli", *args], env=cli_env(), capture_output=True, text=True, timeout=300)


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(model, reference, tmp_path):
    out = tmp_path / "run"
    start_and_kill(tmp_path, HANG_AFTER, cli_args(model, out), chunks=2)
    assert len(samples(out)) == 2 * BATCH and not (out / "summary.json").exists()
    before = stats(out)
    r = steplens(*cli_args(model, out))
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_computed_this_call"] == N - 2 * BATCH and summary["n"] == N
    assert all(stats(out)[k] == v for k, v in before.items())  # nothing finished was recomputed
    assert samples(out) == samples(reference)  # nothing lost, nothing duplicated, same bits
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert ids == sorted(set(ids)) and len(ids) == N
    assert len(list((out / "frames").glob("*.png"))) == N


def test_a_different_config_in_the_same_folder_is_refused(model, reference, tmp_path):
    out = tmp_path / "run"
    evaluate(None, eval_cfg(model, n=3), out, progress=False)
    r = steplens(*cli_args(model, out))  # n=12 instead of 3
    assert r.returncode == 2
    assert "different config" in r.stderr and "differs in: n" in r.stderr
    assert len(samples(out)) == 3


# -- probes: the same run folders, chunk by chunk ------------------------------------------------

def probe_args(model: str, out: Path) -> list[str]:
    return ["probe", "perturb", "--model", model, "--task", "maze", "--size", "3", "--n", "6", "--batch", "2",
            "--steps", str(STEPS), "--every", "1", "--out", str(out)]


def test_sigkilled_probe_resumes_to_the_uninterrupted_result(model, tmp_path):
    whole = steplens(*probe_args(model, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "run"
    start_and_kill(tmp_path, HANG_AFTER, probe_args(model, out), chunks=2)
    assert len(samples(out)) == 4 and not (out / "summary.json").exists()
    before = stats(out)
    r = steplens(*probe_args(model, out))
    assert r.returncode == 0, r.stderr
    assert all(stats(out)[k] == v for k, v in before.items())  # finished chunks were not recomputed
    assert samples(out) == samples(tmp_path / "whole")
    assert json.loads((out / "summary.json").read_text()) == json.loads((tmp_path / "whole" / "summary.json").read_text())
    other = steplens(*probe_args(model, out), "--mode", "add")
    assert other.returncode == 2 and "different config" in other.stderr


def test_a_probe_batch_that_raises_is_recorded_and_retried(model, tmp_path):
    from steplens.probes.common import ProbeConfig, ProbeRun, run_sharded, split_errors
    from steplens.probes.cos import trace_batch

    cfg = ProbeConfig(model=model, size=3, n=6, batch=2, seed=100, sampling=SamplingConfig(steps=STEPS))
    den = load(model)

    def flaky(den, batch, noise, cfg, *, tick=None):
        if any(i.seed == 102 for i in batch.instances):
            raise RuntimeError("bad batch")
        return trace_batch(den, batch, noise, cfg, tick=tick)

    folder = ProbeRun(tmp_path, "probe-cos", cfg).folder
    ok, errors = split_errors(run_sharded(den, cfg, flaky, folder=folder, progress=False))
    assert [r["seed"] for r in ok] == [100, 101, 104, 105] and ok[0]["steps"].shape == (STEPS, 4, 7, 7, 3)
    assert errors == [{"seed": s, "error_type": "RuntimeError", "error": "bad batch"} for s in (102, 103)]
    before = stats(tmp_path)
    recs = run_sharded(den, cfg, trace_batch, folder=folder, progress=False)  # the re-run computes the errored chunk only
    assert [r["seed"] for r in recs] == list(range(100, 106)) and all("error" not in r for r in recs)
    after = stats(tmp_path)
    assert {k for k in before if after[k] != before[k]} == {"maze_3_0000000102.json", "maze_3_0000000103.json"}
    fresh = run_sharded(den, cfg, trace_batch, progress=False)  # in memory, no folder: the same arrays
    assert all((a["steps"] == b["steps"]).all() for a, b in zip(recs, fresh))
    with pytest.raises(RuntimeError, match="every sample failed"):
        split_errors([{"seed": 1, "error": "x", "error_type": "E"}])
