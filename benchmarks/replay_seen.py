"""Replay every training stage of the shipped models (MODEL_CARD.md's recipes) without the network; write their seen-sets.

    OMP_NUM_THREADS=1 python benchmarks/replay_seen.py [--stages maze|multi|all] [--dry]

Each stage is its card command's data arguments (tasks, --sizes, --task-weights, --frames, --batch, --seed, --steps)
and the number of steps it actually ran (`--stop-after`, or where `--minutes` stopped it, from its metrics.json as the
card gives it), and from stage multi9 on its `--reserve` (the bucket it never drew). Only those arguments decide the
draws (`steplens.train.batch_instances`). The `multi` model started from the shipped `maze` model, so its seen-set
includes the maze stages'. Each stage's instances are generated with the generator versions it drew with (`Stage.versions`:
version 1 of every task up to multi8; multi9 drew the enlarged version-2 generators, as its model JSON records).
Writes src/steplens/models/weights/{maze,multi}.seen.npy and records each in the model's JSON (`seen_set`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from steplens.cli.train import _task_weights, _train_sizes
from steplens.seen import add_to_meta, write_seen
from steplens.train import TrainConfig, drawn_keys, recorded_versions

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "steplens" / "models" / "weights"
SIZES = "maze=4,5,5,6;occlusion=10,12,14;shuttle=7,9,11;rotate=7,9,11;tictactoe=2,3"
TASKS = "maze,occlusion,shuttle,rotate,tictactoe"
V2 = {"occlusion": 2, "shuttle": 2, "rotate": 2, "tictactoe": 2, "rotate_large": 2, "tictactoe_fork": 2}
W7 = "maze=6;occlusion=1.25;shuttle=0.25;rotate=1;tictactoe=4;shuttle_near=3;rotate_large=1.25;tictactoe_fork=3"
ALL8 = TASKS + ",shuttle_near,rotate_large,tictactoe_fork"


@dataclass(frozen=True)
class Stage:
    name: str
    tasks: str
    sizes: str
    weights: str
    seed: int
    steps: int  # in the config (the learning-rate schedule; not the draws)
    ran: int  # steps it ran
    versions: dict[str, int] = field(default_factory=dict)  # generator versions it drew with ({}: version 1 of every task)
    reserve: int = 0  # its --reserve: the content keys 0 mod reserve it never drew


# (stage, tasks, sizes, task weights, seed, steps in the config, steps run)
ROWS = {
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
RAN9 = 1200  # steps stage multi9 ran (its metrics.json)
STAGES = {model: [Stage(*row) for row in rows] for model, rows in ROWS.items()}
STAGES["multi"].append(Stage(
    "multi9", ALL8, "maze=4,5,5,6;occlusion=10,12,14,16;shuttle=7,9,11;rotate=7,9,11;tictactoe=3,42,43,43,44;shuttle_near=7,11,15;"
    "rotate_large=9,11,13;tictactoe_fork=3,42,43,43,44",
    "maze=3;occlusion=3;shuttle=0.75;rotate=1.5;tictactoe=3.5;shuttle_near=1.5;rotate_large=2;tictactoe_fork=3.5",
    19, 1900, RAN9, V2, 64))


def stage_config(st: Stage) -> TrainConfig:
    """The TrainConfig the card's command builds (as `steplens train` parses it); only the data arguments matter."""
    names = tuple(st.tasks.split(","))
    flat, per = _train_sizes(st.sizes, names)
    return TrainConfig(tasks=names, sizes=flat, task_sizes=per, task_weights=_task_weights(st.weights, names), n_frames=4,
                       batch=32, seed=st.seed, steps=st.steps, reserve=st.reserve)


def model_versions(model: str) -> dict[str, int]:
    """The generator versions the shipped model's JSON records: those of its last stage ({}: version 1 of every task)."""
    return recorded_versions(json.loads((WEIGHTS / f"{model}.json").read_text()))


def _above_1(versions: dict[str, int]) -> dict[str, int]:
    """The tasks drawn at a version above 1 (a json lists every task; version 1 is the default)."""
    return {t: v for t, v in versions.items() if v != 1}


def replay(model: str, inherited: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    keys, log = inherited, []
    if _above_1(STAGES[model][-1].versions) != _above_1(model_versions(model)):
        raise SystemExit(f"{model}.json records generator versions {model_versions(model)}, its last stage here {STAGES[model][-1].versions}")
    for st in STAGES[model]:
        t0 = time.time()
        own = drawn_keys(stage_config(st), st.ran, st.versions)
        keys = np.union1d(keys, own)
        log.append({"stage": st.name, "steps": st.ran, "instances": st.ran * 32, "distinct": int(len(own))}
                   | ({"reserve": st.reserve} if st.reserve else {}))
        print(f"{model} {st.name}: {st.ran} steps, {len(own)} distinct keys ({time.time() - t0:.0f} s); union {len(keys)}", flush=True)
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
