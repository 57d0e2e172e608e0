"""The reserved bucket (issue 37): training never draws an instance whose content key is 0 mod m; evaluation takes it first."""

import json

import numpy as np
import pytest

from steplens.config import ConfigError
from steplens.runner import held_out_instances
from steplens.seen import SeenSet, load_seen
from steplens.tasks import get_task
from steplens.train import TrainConfig, batch_draw, batch_instances, drawn_keys, train

M = 4  # a small modulus, so that a quarter of the draws fall in the bucket and get replaced


def _cfg(reserve: int, **kw) -> TrainConfig:
    return TrainConfig(tasks=("maze", "occlusion"), sizes=(4,), task_sizes=((4,), (12,)), batch=24, seed=5, reserve=reserve,
                       preset="tiny", steps=2, ckpt_every=1, warmup=1, **kw)


def test_training_never_draws_the_bucket_and_keeps_the_other_draws():
    with_bucket, without = _cfg(M), _cfg(0)
    replaced = 0
    for step in range(6):
        ti, plain = batch_instances(without, step)
        _, kept = batch_instances(with_bucket, step)
        task = get_task(with_bucket.tasks[ti])
        keys = [task.key(i) for i in kept]
        assert all(k % M for k in keys)
        for a, b in zip(plain, kept):  # outside the bucket a draw is the same instance as without a bucket
            ka, kb = task.key(a), task.key(b)
            if ka % M:
                assert ka == kb
            else:
                replaced += 1
    assert replaced > 0  # the test would pass vacuously otherwise


def test_a_run_with_a_bucket_records_it_and_evaluation_takes_the_bucket_first(tmp_path):
    cfg = _cfg(M)
    train(cfg, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["train"]["reserve"] == M
    seen = load_seen(str(tmp_path / "run" / "model"))
    assert seen.reserve == M and not any(int(k) % M == 0 for k in seen.keys)
    assert set(seen.keys.tolist()) == set(drawn_keys(cfg, 2).tolist())
    task = get_task("maze")
    held = held_out_instances(task, 4, 1000, 10, n_frames=4, seen=seen)
    keys = [task.key(task.generate(s, 4, n_frames=4, cell_px=1)) for s in held.seeds]
    assert held.n_reserved == 10 and all(k % M == 0 for k in keys) and len(set(keys)) == 10
    assert not any(k in seen for k in keys)
    # the bucket's instances, in walk order: the first seeds from 1000 whose key is 0 mod M
    expect, s, taken = [], 1000, set()
    while len(expect) < 10:
        k = task.key(task.generate(s, 4, n_frames=4, cell_px=1))
        if k % M == 0 and k not in taken and k not in seen:
            expect.append(s)
        taken.add(k)
        s += 1
    assert list(held.seeds) == expect
    d = held.to_dict()
    assert d["reserved_bucket"] == f"key % {M} == 0" and d["n_reserved"] == 10


def test_a_level_with_too_few_bucket_instances_fills_up_with_other_unseen_ones():
    task = get_task("maze")  # maze 3x3 has 84 distinct puzzles, 20 of them with key 0 mod 4
    everything = {task.key(task.generate(s, 3, n_frames=4, cell_px=1)) for s in range(5000)}
    bucket = {k for k in everything if k % M == 0}
    seen = SeenSet(np.zeros(0, dtype=np.uint64), "sha", reserve=M)
    held = held_out_instances(task, 3, 0, 40, n_frames=4, seen=seen)
    keys = [task.key(task.generate(s, 3, n_frames=4, cell_px=1)) for s in held.seeds]
    assert len(set(keys)) == 40 and held.n_reserved == len(bucket) < 40
    assert set(keys[: len(bucket)]) == bucket and not set(keys[len(bucket):]) & bucket  # the whole bucket first, then the rest


def test_a_model_without_a_bucket_draws_as_before():
    task = get_task("maze")
    seen = SeenSet(np.zeros(0, dtype=np.uint64), "sha")
    held = held_out_instances(task, 4, 500, 12, n_frames=4, seen=seen)
    assert held.n_reserved == 0 and "reserved_bucket" not in held.to_dict()
    assert list(held.seeds) == list(held_out_instances(task, 4, 500, 12, n_frames=4, seen=None).seeds)


@pytest.mark.parametrize("bad", [-1, 1])
def test_a_bad_modulus_is_refused(bad):
    with pytest.raises(ConfigError, match="reserve"):
        _cfg(bad)


def test_the_batch_draw_itself_does_not_change():
    assert batch_draw(_cfg(M), 3) == batch_draw(_cfg(0), 3)
