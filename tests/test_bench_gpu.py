"""benchmarks/bench_gpu.py runs end to end on the CPU with --tiny and prints one JSON line per figure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")


def load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_tiny_runs_end_to_end(capsys, one_thread):  # one_thread restores the thread count the bench sets
    assert load_bench().main(["--tiny", "--a14b-steps", "1"]) == 0
    rows = {r["figure"]: r for r in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    assert list(rows) == ["plain_s", "trace_over_plain", "capture_over_plain", "ensemble_over_plain", "ensemble_batched_over_sequential",
                          "peak_gib_no_offload", "peak_gib_offload", "a14b_expert_step_s", "a14b_expert_peak_gib", "total_s"]
    assert rows["plain_s"]["value"] > 0 and rows["plain_s"]["latent_shape"] == [16, 3, 4, 4]
    assert rows["trace_over_plain"]["max_abs_diff_vs_plain"] == 0.0  # the traced run is the pipeline's run
    assert rows["capture_over_plain"]["captures"] == 4 * 2 * 2  # steps x blocks x CFG branches
    assert rows["peak_gib_no_offload"]["moves"] == 0 and rows["peak_gib_offload"]["moves"] == 6  # 3 to start, then one switch
    assert rows["a14b_expert_step_s"]["value"] > 0


def test_bench_gpu_without_cuda_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_bench().main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
