"""What the trivial videos (static: the first frame held; end-jump: the first frame, then the true final frame) score on
our sample sets, with steplens' scorer and the official kit's two entry points; no model runs.

Sample sets (built here, seeds fixed):
- `official`: the 2-task official-layout set of the tests (G-45 key-door matching, in-domain; O-39 maze, out-of-domain),
  N samples each of random frames: the kit's code path on stand-in ground truth, not the benchmark's images;
- `steplens`: steplens' eight tasks in the official layout (`tasks generate --layout vbvr`), N each, scored by steplens
  (the kit has no evaluator for them).

    python benchmarks/trivial_baselines.py --evalkit ../shared/third_party/VBVR-EvalKit [--n 5] [--out /tmp/steplens-trivial]
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np

from steplens.io import write_png, write_video
from steplens.tasks import TASKS
from steplens.tasks.vbvr import generate_set, iter_bench
from steplens.vbvr.baselines import TRIVIAL, write_trivial
from steplens.vbvr.kit import make_scorers, score_root

OFFICIAL = (("In-Domain_50", "G-45_key_door_matching_data-generator"), ("Out-of-Domain_50", "O-39_maze_data-generator"))


def official_set(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for split, task in OFFICIAL:
        for i in range(n):
            video = rng.integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
            folder = root / split / task / f"{i:05d}"
            write_png(folder / "first_frame.png", video[0])
            write_png(folder / "final_frame.png", video[-1])
            write_video(folder / "ground_truth.mp4", video)
            (folder / "prompt.txt").write_text("Solve it.\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evalkit", default=os.environ.get("STEPLENS_EVALKIT"), help="a VBVR-EvalKit checkout")
    p.add_argument("--n", type=int, default=5, help="samples per task")
    p.add_argument("--out", default="/tmp/steplens-trivial")
    a = p.parse_args()
    if not a.evalkit:
        p.error("--evalkit (or STEPLENS_EVALKIT) is needed")
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    official_set(out / "official" / "GT", a.n)
    for task in TASKS:
        generate_set(task, a.n, 0, out / "steplens" / "GT", progress=False, layout="vbvr")
    print(f"{'set':<9} {'method':<9} {'scorer':<28} {'mean':>6} {'kit overall':>11}")
    for name in ("official", "steplens"):
        gt = out / name / "GT"
        refs = iter_bench(gt)
        write_trivial(refs, out / name / "OUT")
        for entry in ("run_evaluation", "evaluate"):
            names = "steplens,vbvr-evalkit" if entry == "run_evaluation" else "vbvr-evalkit"  # steplens' once is enough
            scorers = make_scorers(names, evalkit=a.evalkit, entry=entry)
            for method in TRIVIAL:
                got = score_root(gt, out / name / "OUT" / method, refs, scorers, lambda key: out / name / "work" / f"{method}.{key}")
                for key, (_, s) in got.items():
                    if s["overall"]["score"] is None:
                        continue  # this scorer covers no sample of the set
                    kit = (s.get("kit_reported") or {}).get("overall")
                    ktxt = f"{kit['mean_score']:.4f}" if kit else "-"
                    print(f"{name:<9} {method:<9} {key:<28} {s['overall']['score']:6.3f} {ktxt:>11}  (n={s['overall']['n']})")
                    if key == "steplens":
                        print("          per task: " + ", ".join(f"{t.removeprefix('steplens-')} {v['score']:.3f}"
                                                          for t, v in s["per_task"].items()))


if __name__ == "__main__":
    main()
