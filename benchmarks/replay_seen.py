"""Replay every training stage of the shipped models (MODEL_CARD.md's recipes) without the network; write their seen-sets.

    OMP_NUM_THREADS=1 python benchmarks/replay_seen.py [--stages maze|multi|all] [--dry]

Each stage is its card command's data arguments (tasks, --sizes, --task-weights, --frames, --batch, --seed, --steps)
and the number of steps it actually ran (`--stop-after`, or where `--minutes` stopped it, from its metrics.json as the
card gives it). Only those arguments decide the draws (`steplens.train.batch_draw`). The `multi` model started from the
shipped `maze` model, so its seen-set includes the maze stages'. Instances are generated with the generator versions the
model's JSON records (`generator_versions`; absent, as in every shipped model: version 1 of every task, the generators
they trained on), so an enlarged generator (version 2) does not change a replayed seen-set.
Writes src/steplens/models/weights/{maze,multi}.seen.npy and records each in the model's JSON (`seen_set`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from steplens.cli.train import _task_weights, _train_sizes
from steplens.seen import add_to_meta, write_seen
from steplens.train import TrainConfig, drawn_keys, recorded_versions

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "steplens" / "models" / "weights"
SIZES = "maze=4,5,5,6;occlusion=10,12,14;shuttle=7,9,11;rotate=7,9,11;tictactoe=2,3"
TASKS = "maze,occlusion,shuttle,rotate,tictactoe"
W7 = "maze=6;occlusion=1.25;shuttle=0.25;rotate=1;tictactoe=4;shuttle_near=3;rotate_large=1.25;tictactoe_fork=3"
# (stage, tasks, sizes, task weights, seed, steps in the config, steps run)
STAGES = {
    "maze": [
        ("stage1", "maze", "3,4,5,5", "", 0, 1500, 800),
        ("stage2", "maze", "4,5,5", "", 1, 2200, 2200),
        ("stage3", "maze", "4,5,5,6", "", 2, 1400, 1400),
        ("stage4", "maze", "4,5,5,5,6", "", 3, 1200, 1200),
    ],
    "multi": [
        ("multi1", TASKS, SIZES, "", 10, 2400, 400),
        ("multi2", TASKS, SIZES, "", 11, 600, 600),
        ("multi3", TASKS, SIZES, "", 12, 3000, 2627),
        ("multi4", TASKS, SIZES, "maze=1.5;occlusion=1.5;shuttle=0.5;rotate=2;tictactoe=2.5", 13, 2400, 2400),
        ("multi5", TASKS + ",shuttle_near,rotate_large", SIZES + ";shuttle_near=7,11,15;rotate_large=9,11,13",
         "maze=1;occlusion=1.5;shuttle=0.25;rotate=1.5;tictactoe=7;shuttle_near=1.5;rotate_large=1.5", 15, 4400, 4273),
        ("multi6", TASKS + ",shuttle_near,rotate_large", SIZES + ";shuttle_near=7,11,15;rotate_large=9,11,13",
         "maze=2.5;occlusion=1.25;shuttle=0.25;rotate=1;tictactoe=5;shuttle_near=3;rotate_large=1.25", 16, 4100, 3648),
        ("multi7", TASKS + ",shuttle_near,rotate_large,tictactoe_fork",
         SIZES + ";shuttle_near=7,11,15;rotate_large=9,11,13;tictactoe_fork=2,3,3", W7, 17, 3600, 3600),
        ("multi8", TASKS + ",shuttle_near,rotate_large,tictactoe_fork",
         "maze=4,5,5,6;occlusion=10,12,14;shuttle=7,9,11;rotate=7,9,11;tictactoe=2,3,3,4;shuttle_near=7,11,15;rotate_large=9,11,13;"
         "tictactoe_fork=2,3,3,3,3,4", W7, 18, 2800, 2800),
    ],
}


def stage_config(tasks: str, sizes: str, weights: str, seed: int, steps: int) -> TrainConfig:
    """The TrainConfig the card's command builds (as `steplens train` parses it); only the data arguments matter."""
    names = tuple(tasks.split(","))
    flat, per = _train_sizes(sizes, names)
    return TrainConfig(tasks=names, sizes=flat, task_sizes=per, task_weights=_task_weights(weights, names), n_frames=4,
                       batch=32, seed=seed, steps=steps)


def model_versions(model: str) -> dict[str, int]:
    """The generator versions the shipped model's JSON records ({}: version 1 of every task)."""
    return recorded_versions(json.loads((WEIGHTS / f"{model}.json").read_text()))


def replay(model: str, inherited: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    keys, log, versions = inherited, [], model_versions(model)
    for name, tasks, sizes, weights, seed, steps, ran in STAGES[model]:
        t0 = time.time()
        own = drawn_keys(stage_config(tasks, sizes, weights, seed, steps), ran, versions)
        keys = np.union1d(keys, own)
        log.append({"stage": name, "steps": ran, "instances": ran * 32, "distinct": int(len(own))})
        print(f"{model} {name}: {ran} steps, {len(own)} distinct keys ({time.time() - t0:.0f} s); union {len(keys)}", flush=True)
    return keys, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="Print the counts; write nothing.")
    args = ap.parse_args()
    maze, maze_log = replay("maze", np.zeros(0, dtype=np.uint64))
    multi, multi_log = replay("multi", maze)  # multi1 started from the shipped maze model
    if args.dry:
        return
    for model, keys, log in (("maze", maze, maze_log), ("multi", multi, multi_log + ([{"inherits": "maze"}]))):
        entry = write_seen(WEIGHTS / model, keys, replay="python benchmarks/replay_seen.py", stages=log)
        add_to_meta(WEIGHTS / f"{model}.json", entry)
        print(f"{model}: {entry['n_keys']} keys, {(WEIGHTS / entry['file']).stat().st_size} bytes, sha256 {entry['sha256']}")


if __name__ == "__main__":
    main()
