"""Wall time of every probe at its default sizes on the shipped reference model, 2 CPU cores.

    python benchmarks/bench_probes.py --out runs/bench_probes [--probes cos,perturb,cka,layers,behaviour]

Target (issue 5): each probe <= 60 s with default sizes. Each runs as the CLI would
(`steplens probe NAME --out DIR`, in-process) into a fresh folder. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from steplens.allocator import allocator_state, keep_freed_memory
from steplens.cli import app

TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_probes")
    ap.add_argument("--model", default="maze")
    ap.add_argument("--probes", default="cos,perturb,cka,layers,behaviour")
    a = ap.parse_args()
    keep_freed_memory()  # as the CLI does
    runner = CliRunner()
    wall: dict[str, float] = {}
    for name in a.probes.split(","):
        out = Path(a.out) / name
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        res = runner.invoke(app, ["probe", name, "--model", a.model, "--out", str(out)])
        wall[name] = round(time.perf_counter() - t, 1)
        if res.exit_code != 0:
            raise SystemExit(f"probe {name} failed ({res.exit_code}): {res.output}")
    print(json.dumps({"allocator": allocator_state(), "model": a.model, "threads": torch.get_num_threads(), "wall_s": wall, "target_s": TARGET_S,
                      "within_target": {k: v <= TARGET_S for k, v in wall.items()}}, indent=1))


if __name__ == "__main__":
    main()
