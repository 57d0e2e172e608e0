"""Training step time in fp32 and bf16 (autocast, fp32 master weights), paired, and the two loss curves.

    python benchmarks/bench_train.py --steps 10 --batch 32 --size 5

Two runs of the same config (same seed: same initial weights, batches and noise) advance step by step,
interleaved in alternating order, so load changes hit both alike. Prints JSON: the CPU's bf16
capability, each step's time and loss in both precisions, `ratio_bf16_over_fp32` (median of the
per-step paired ratios, the first step left out as warm-up) and the largest loss difference.
Target (issue 23): bf16 <= 0.5 x fp32 for batch 32 of 5x5 mazes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from steplens.allocator import keep_freed_memory
from steplens.precision import detect
from steplens.train import TrainConfig, new_state, train_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--preset", default="base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = TrainConfig(sizes=(a.size,), preset=a.preset, batch=a.batch, steps=max(a.steps, 2), warmup=max(1, a.steps // 2), seed=a.seed)
    states = {p: new_state(cfg) for p in ("fp32", "bf16")}
    times: dict[str, list[float]] = {p: [] for p in states}
    losses: dict[str, list[float]] = {p: [] for p in states}
    for step in range(a.steps):
        for p in ("fp32", "bf16") if step % 2 == 0 else ("bf16", "fp32"):
            t = time.perf_counter()
            loss, _ = train_step(cfg, states[p], "cpu", p)
            times[p].append(time.perf_counter() - t)
            losses[p].append(round(loss, 5))
    ratios = [b / f for f, b in zip(times["fp32"][1:], times["bf16"][1:])] or [times["bf16"][0] / times["fp32"][0]]
    print(json.dumps({"capability": detect().to_dict(), "threads": torch.get_num_threads(), "preset": a.preset, "batch": a.batch,
                      "size": a.size, "steps": a.steps,
                      "step_s": {p: [round(t, 3) for t in ts] for p, ts in times.items()},
                      "median_step_s": {p: round(statistics.median(ts[1:] or ts), 3) for p, ts in times.items()},
                      "ratio_bf16_over_fp32": round(statistics.median(ratios), 3), "target_ratio": 0.5,
                      "loss": losses, "max_abs_loss_diff": max(abs(x - y) for x, y in zip(losses["fp32"], losses["bf16"]))}, indent=1))


if __name__ == "__main__":
    main()
