#!/usr/bin/env bash
# Measures the numbers in src/steplens/models/weights/MODEL_CARD.md: solve rate per maze size,
# single seed, held-out instances (seeds 10000..), 20 Euler steps.
#   bash benchmarks/model_card.sh [MODEL] [N] [OUT]
set -euo pipefail
model="${1:-maze}"; n="${2:-500}"; out="${3:-runs/model_card}"
for size in 3 4 5 6 7 8; do
  steplens evaluate --model "$model" --task maze --size "$size" --n "$n" --seed 10000 --steps 20 --out "$out/size$size"
done
python - "$out" <<'PY'
import json, sys, pathlib
rows = []
for p in sorted(pathlib.Path(sys.argv[1]).glob("size*/summary.json")):
    s = json.loads(p.read_text())
    lo, hi = s["solve_rate_ci95"]
    rows.append(f"| {s['config']['size']}x{s['config']['size']} | {s['n']} | {s['solve_rate']:.3f} | [{lo:.3f}, {hi:.3f}] | {s['mean_score']:.3f} |")
print("| maze | n | solved | 95% CI | mean IoU |\n|---|---|---|---|---|\n" + "\n".join(rows))
PY
