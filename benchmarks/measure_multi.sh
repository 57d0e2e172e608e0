#!/usr/bin/env bash
# The numbers of the `multi` model's card (issue 18): held-out solve rate per task and size (single seed, 20 Euler
# steps, seeds from 10000), the suite aggregate at the default sizes, the maze paired against the `maze` model on the
# same instances, and working memory / perception on occlusion and shuttle.
#   bash benchmarks/measure_multi.sh [MODEL] [N] [OUT]
# The maze pairing also runs on 4N instances (PAIRED_N to change it): 50 cannot tell a 3-point gap from none.
# Every evaluate folder resumes; the suite reuses nothing (its own folders under OUT/suite).
set -euo pipefail
model="${1:-multi}"; n="${2:-50}"; out="${3:-runs/multi}"; mkdir -p "$out"
log() { echo "[$(date +%T)] $*"; }

log "suite at the default sizes (maze 5, occlusion 12, shuttle 9, rotate 9, tictactoe 3; shuttle_near 11, rotate_large 11, tictactoe_fork 3)"
steplens evaluate --model "$model" --task suite --n "$n" --seed 10000 --steps 20 --out "$out/suite" | tail -12
known=$(python -c "import json, sys; print(*json.load(open(sys.argv[1]))['sizes'])" "$out/suite/summary.json")  # the model's tasks
log "difficulty per task: the sizes around the default"
for spec in maze:4,6,7 occlusion:10,14,16 shuttle:7,11,15,19 rotate:7,11 tictactoe:2,4,5 shuttle_near:7,15,17,19,21 rotate_large:9,13 tictactoe_fork:2,4,5; do
  task=${spec%%:*}
  case " $known " in *" $task "*) ;; *) continue ;; esac  # a task the model was not trained on
  sizes=${spec##*:}
  for size in ${sizes//,/ }; do
    steplens evaluate --model "$model" --task "$task" --size "$size" --n "$n" --seed 10000 --steps 20 \
      --out "$out/size/${task}_$size" | tail -1
  done
done
pn="${PAIRED_N:-$((4 * n))}"
log "maze 5x5 with the single-task maze model on $pn instances, paired with the suite's first $n and with $pn of $model"
steplens evaluate --model maze --task maze --size 5 --n "$pn" --seed 10000 --steps 20 --out "$out/maze_model_5" | tail -1
steplens evaluate --model "$model" --task maze --size 5 --n "$pn" --seed 10000 --steps 20 --out "$out/paired/multi_5" | tail -1
log "working memory (not measurable on these tasks: the content is in or computable from the conditioning; the restored rate is a diagnostic) and perception before action"
steplens probe behaviour --model "$model" --task occlusion --size 12 --n "$n" --batch 25 --out "$out/behaviour_occlusion" | tail -6
steplens probe behaviour --model "$model" --task shuttle --size 9 --n "$n" --batch 25 --out "$out/behaviour_shuttle" | tail -6
case " $known " in *" shuttle_near "*)
  steplens probe behaviour --model "$model" --task shuttle_near --size 11 --n "$n" --batch 25 --out "$out/behaviour_shuttle_near" | tail -6 ;;
esac
python - "$out" <<'PY'
import json, sys, pathlib
from steplens.stats import bootstrap_diff, wilson
root = pathlib.Path(sys.argv[1])
rows = []
for p in sorted([*root.glob("suite/*_*/summary.json"), *root.glob("size/*/summary.json")]):
    s = json.loads(p.read_text())
    c = s["config"]
    lo, hi = s["solve_rate_ci95"]
    rows.append((c["task"], c["size"], f"| {c['task']} | {c['size']} | {s['n']} | {100 * s['solve_rate']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] "
                                       f"| {s['mean_score']:.3f} |"))
print("| task | size | n | solved % [95% Wilson CI] | mean score |\n|---|---|---|---|---|")
print("\n".join(r for _, _, r in sorted(rows)))
suite = json.loads((root / "suite" / "summary.json").read_text())["methods"]["single"]
print(f"suite (default sizes): score {suite['score'][0]:.3f} [{suite['score'][1]:.3f}, {suite['score'][2]:.3f}], solve rate "
      f"{100 * suite['solve_rate'][0]:.1f}% [{100 * suite['solve_rate'][1]:.1f}, {100 * suite['solve_rate'][2]:.1f}]")
from steplens.suite import rows_by_method, suite_summary
FIVE = ("maze", "occlusion", "shuttle", "rotate", "tictactoe")  # the tasks of stages 1-4: their suite, comparable across stages
SEVEN = (*FIVE, "shuttle_near", "rotate_large")  # stages 5-6
have = {p.parent.name.rsplit("_", 1)[0]: p for p in root.glob("suite/*_*/results.jsonl")}
for name, subset in (("five", FIVE), ("seven", SEVEN)):
    if set(have) > set(subset):
        rows = {t: {m: [r for r in rs if "error" not in r] for m, rs in rows_by_method(have[t]).items()} for t in subset}
        sk = suite_summary(rows)["methods"]["single"]
        print(f"suite of the {name} first tasks only: score {sk['score'][0]:.3f} [{sk['score'][1]:.3f}, {sk['score'][2]:.3f}], solve rate "
              f"{100 * sk['solve_rate'][0]:.1f}% [{100 * sk['solve_rate'][1]:.1f}, {100 * sk['solve_rate'][2]:.1f}]")
def results(folder):
    return {r["seed"]: float(r["success"]) for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines()) if "error" not in r}
def rate(successes):
    k, n = int(sum(successes)), len(successes)
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
maze = results(root / "maze_model_5")
for multi in (results(root / "suite" / "maze_5"), results(root / "paired" / "multi_5")):  # pairs on the seeds both have
    seeds = sorted(set(multi) & set(maze))
    a, b = [maze[s] for s in seeds], [multi[s] for s in seeds]
    d = bootstrap_diff(a, b)
    print(f"maze 5x5 (n={len(seeds)}): multi {rate(b)}, maze model {rate(a)}; multi minus maze model (paired): "
          f"{100 * d[0]:+.1f} points [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]")
from steplens.tasks import get_task
ttt = get_task("tictactoe")
n = int(json.loads((root / "suite" / "tictactoe_3" / "summary.json").read_text())["n"])
for size in (2, 3):  # what an X on a random empty square would score: the chance level of tictactoe's solve rate
    boards = [ttt.generate(s, size, n_frames=4, cell_px=1).board for s in range(10000, 10000 + n)]
    print(f"tictactoe {size}: chance (mean of 1 / empty squares over the {n} positions) {100 * sum(1 / b.count('.') for b in boards) / n:.0f}%")
def runs_by_size(task):
    """(size, single-seed rows without errors) of every run folder of `task` (suite's and the sizes'), smallest first."""
    folders = {int(f.name.rsplit("_", 1)[1]): f for f in [*root.glob(f"suite/{task}_*"), *root.glob(f"size/{task}_*")]}
    return [(z, [r for r in rows_by_method(folders[z] / "results.jsonl")["single"] if "error" not in r]) for z in sorted(folders)]
fork = get_task("tictactoe_fork")
for size, rows in runs_by_size("tictactoe_fork"):  # which rule level fails
    by_kind: dict[str, list[float]] = {}
    for r in rows:
        by_kind.setdefault(fork.generate(r["seed"], size).kind, []).append(float(r["success"]))
    print(f"tictactoe_fork {size} by kind:", ", ".join(f"{k} {rate(v)} (n={len(v)})" for k, v in sorted(by_kind.items())))
from collections import Counter
for size, rows in runs_by_size("shuttle_near"):
    kinds = Counter()  # how shuttle_near fails: which targets a run turned green (its scorer's `visited` detail)
    for r in rows:
        v, t = [tuple(x) for x in r["details"]["visited"]], tuple(r["details"]["nearest"])
        kinds["only the nearest" if v == [t] else "the nearest and another" if t in v else "another only" if v else "none"] += 1
    print(f"shuttle_near {size}, targets turned green (n={sum(kinds.values())}):",
          ", ".join(f"{k} {kinds[k]}" for k in ("only the nearest", "another only", "the nearest and another", "none")))
for task in ("occlusion", "shuttle", "shuttle_near"):
    if (root / f"behaviour_{task}").is_dir():
        print(f"[{task}]", (root / f"behaviour_{task}" / "summary.txt").read_text().strip())
PY
log "done"
