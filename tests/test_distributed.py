"""Ray execution: same results as the local path, streamed results, retries on worker death, driver SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from steplens.models.serialize import export_random_tiny
from steplens.distributed import map_shards  # noqa: E402
from steplens.evaluate import EvalConfig, evaluate  # noqa: E402
from steplens.runner import SamplingConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
N, BATCH, STEPS = 12, 3, 3


@pytest.fixture(scope="module")
def cluster() -> str:
    """One local 2-CPU Ray cluster for the module; its address, for drivers in other processes."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """A tiny random reference model with its adaLN-Zero weights randomised (so batches matter)."""
    return export_random_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def local_run(model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    evaluate(None, eval_cfg(model), out, progress=False)
    return out


def eval_cfg(model: str) -> EvalConfig:
    return EvalConfig(model=model, task="maze", size=3, n=N, batch=BATCH, sampling=SamplingConfig(steps=STEPS))


def samples(run: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((run / "samples").glob("*.json"))}


def where(shard: int) -> list[dict]:
    time.sleep(0.3)  # long enough that both workers get a shard
    return [{"shard": shard, "pid": os.getpid()}]


def die_once(shard: tuple[str, int]) -> list[dict]:
    """SIGKILL our own worker the first time this shard runs."""
    marker, x = Path(shard[0]), shard[1]
    if not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return [{"x": x}]


def bad_shard(shard: int) -> list[dict]:
    raise ValueError(f"bad shard {shard}")


def test_map_shards_streams_results_from_two_workers(cluster):
    seen: list[int] = []
    assert map_shards(where, range(4), ray_address=cluster, num_workers=2, on_result=lambda i, r: seen.append(i)) is None
    assert sorted(seen) == [0, 1, 2, 3]
    res = map_shards(where, range(4), ray_address=cluster, num_workers=2)
    assert [r[0]["shard"] for r in res] == [0, 1, 2, 3]  # shard order when nothing consumes them
    assert len({r[0]["pid"] for r in res}) == 2 and all(r[0]["pid"] != os.getpid() for r in res)
    local = map_shards(where, range(4))
    assert [r[0]["shard"] for r in local] == [0, 1, 2, 3] and {r[0]["pid"] for r in local} == {os.getpid()}


def test_a_dead_worker_is_retried_and_a_shard_that_dies_for_good_is_reported(cluster, tmp_path):
    assert map_shards(die_once, [(str(tmp_path / "a"), 7)], ray_address=cluster, max_retries=1) == [[{"x": 7}]]
    failures: list[tuple[int, str]] = []
    out = map_shards(die_once, [(str(tmp_path / "b"), 8)], ray_address=cluster, max_retries=0,
                     on_error=lambda i, e: failures.append((i, type(e).__name__)))
    assert out == [[]] and failures == [(0, "WorkerCrashedError")]


def test_an_exception_in_fn_propagates_as_it_does_locally(cluster):
    with pytest.raises(ValueError, match="bad shard 0"):
        map_shards(bad_shard, [0], ray_address=cluster)
    with pytest.raises(ValueError, match="bad shard 0"):
        map_shards(bad_shard, [0])


def test_ray_with_two_workers_writes_the_same_samples_as_the_local_path(model, local_run, cluster, tmp_path):
    summary = evaluate(None, eval_cfg(model), tmp_path, progress=False, ray_address=cluster, num_workers=2)
    assert summary["n"] == N and summary["n_computed_this_call"] == N
    assert samples(tmp_path) == samples(local_run)  # success, score and details of every sample, bit for bit
    assert (tmp_path / "results.jsonl").read_text() == (local_run / "results.jsonl").read_text()
    local = json.loads((local_run / "summary.json").read_text())
    assert {k: v for k, v in summary.items() if k != "wall_s_this_call"} == {k: v for k, v in local.items() if k != "wall_s_this_call"}


# A Ray driver that hangs after its N-th committed chunk, to be SIGKILLed with its process group.
DRIVER = """
import sys, time
from pathlib import Path
from steplens.runs import RunFolder
from steplens.evaluate import EvalConfig, evaluate
from steplens.runner import SamplingConfig
marker, n, address, model, out, total, batch, steps = sys.argv[1:]
marker = Path(marker)
commit, count = RunFolder.write_many, [0]
def write_many(self, rows):
    commit(self, rows)
    count[0] += 1
    if count[0] == int(n):
        marker.write_text("stopped")
        time.sleep(600)
RunFolder.write_many = write_many
cfg = EvalConfig(model=model, task="maze", size=3, n=int(total), batch=int(batch), sampling=SamplingConfig(steps=int(steps)))
evaluate(None, cfg, out, progress=False, ray_address=address, num_workers=2)
"""


def test_sigkilled_ray_driver_resumes_to_the_local_result(model, local_run, cluster, tmp_path):
    out = tmp_path / "run"
    marker = tmp_path / "stopped"
    args = [str(marker), "2", cluster, model, str(out), str(N), str(BATCH), str(STEPS)]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, f"the driver ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "the driver never reached the kill point"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
    assert len(samples(out)) == 2 * BATCH
    summary = evaluate(None, eval_cfg(model), out, progress=False, ray_address=cluster, num_workers=2)
    assert summary["n_computed_this_call"] == N - 2 * BATCH
    assert samples(out) == samples(local_run)
    assert (out / "results.jsonl").read_text() == (local_run / "results.jsonl").read_text()


def test_ensemble_compare_on_ray_equals_the_local_run(model, cluster, tmp_path):
    """`ensemble run --ray`: the same chunks on two workers write the same results as the local path."""
    from steplens.ensemble import EnsembleConfig, Method, compare
    from steplens.models.registry import load

    methods = [Method("single"), Method("vote", EnsembleConfig(k=2, window=(0, 0), select="vote")),
               Method("ensemble", EnsembleConfig(k=2, window=(0, 1), rule="mean_v", after="single"))]
    sampling = SamplingConfig(steps=STEPS)
    local = compare(load(model), "maze", 3, 6, 40_000, sampling, methods, tmp_path / "local", max_batch=4, progress=False)
    dist = compare(load(model), "maze", 3, 6, 40_000, sampling, methods, tmp_path / "ray", max_batch=4, progress=False,
                   ray_address=cluster, num_workers=2)
    assert dist == local
    assert (tmp_path / "ray" / "results.jsonl").read_text() == (tmp_path / "local" / "results.jsonl").read_text()


def test_probes_on_ray_equal_the_local_run(model, cluster, tmp_path):
    """`probe ... --ray`: chunks of samples on two workers give the same sample files and summaries as the local path."""
    from steplens.models.registry import load
    from steplens.probes.common import ProbeConfig
    from steplens.probes.cos import run_cos
    from steplens.probes.layers import run_layers
    from steplens.probes.perturb import run_cka

    cfg = ProbeConfig(model=model, size=3, n=6, batch=2, seed=300, sampling=SamplingConfig(steps=STEPS))
    den = load(model)
    for name, probe in (("cos", lambda out, **kw: run_cos(den, cfg, out, n_views=1, progress=False, **kw)),
                        ("cka", lambda out, **kw: run_cka(den, cfg, out, every=1, layers=[0, 1], progress=False, **kw)),
                        ("layers", lambda out, **kw: run_layers(den, cfg, out, progress=False, **kw))):
        local = probe(str(tmp_path / name / "local"))
        dist = probe(str(tmp_path / name / "ray"), ray_address=cluster, num_workers=2)
        assert dist == local, name
        assert samples(tmp_path / name / "ray") == samples(tmp_path / name / "local"), name
        arrays = sorted(p.name for p in (tmp_path / name / "local" / "samples").glob("*.npz"))
        assert arrays == sorted(p.name for p in (tmp_path / name / "ray" / "samples").glob("*.npz")) and len(arrays) == 6
