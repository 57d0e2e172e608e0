import json

import pytest
import torch

from steplens.train import TrainConfig, lr_at, make_batch, train


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(**kw):
    base = dict(preset="tiny", sizes=(3,), batch=4, steps=6, warmup=2, ckpt_every=2, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_batches_are_seeded_and_held_out():
    a, ta, _ = make_batch(cfg(), 3)
    b, tb, _ = make_batch(cfg(), 3)
    c, _, _ = make_batch(cfg(), 4)
    assert torch.equal(a, b) and torch.equal(ta, tb) and not torch.equal(a, c)
    assert a.shape == (4, 3, 4, 7, 7) and a.min() >= -1 and a.max() <= 1


def test_lr_schedule():
    c = cfg(steps=100, warmup=10, lr=1e-3)
    assert lr_at(c, 0) < lr_at(c, 9) <= 1e-3
    assert abs(lr_at(c, 99) - 1e-4) < 2e-5


def test_interrupted_run_resumes_to_the_same_result(tmp_path):
    full = train(cfg(), tmp_path / "a", progress=False)
    part = train(cfg(), tmp_path / "b", progress=False, stop_after=3)  # killed after step 3's checkpoint...
    assert part.step == 3
    resumed = train(cfg(), tmp_path / "b", progress=False)
    assert resumed.step == 6
    for (k, p), (_, q) in zip(full.ema.state_dict().items(), resumed.ema.state_dict().items()):
        assert torch.equal(p, q), k
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["done"] and metrics["steps"] == 6
    assert (tmp_path / "b" / "model.safetensors").exists()


def test_training_reduces_the_loss(tmp_path):
    st = train(cfg(steps=40, batch=8, lr=3e-3, warmup=5), tmp_path, progress=False)
    losses = [r["loss"] for r in st.log if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]


def test_other_config_is_refused(tmp_path):
    from steplens.config import ConfigError

    train(cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different training config"):
        train(cfg(steps=2, lr=5e-3), tmp_path, progress=False)


def test_bf16_autocast_on_cpu_is_used_resumable_and_validated(tmp_path):
    from steplens.config import ConfigError

    fp32 = train(cfg(precision="fp32"), tmp_path / "fp32", progress=False)  # not auto: bf16 on AMX CPUs
    full = train(cfg(precision="bf16"), tmp_path / "a", progress=False)
    train(cfg(precision="bf16"), tmp_path / "b", progress=False, stop_after=3)
    resumed = train(cfg(precision="bf16"), tmp_path / "b", progress=False)
    ema = dict(full.ema.state_dict())
    assert all(torch.equal(ema[k], v) for k, v in resumed.ema.state_dict().items())
    # autocast really ran: bf16 matmuls give other weights than fp32 from the same seed and data
    assert any(not torch.equal(ema[k], v) for k, v in fp32.ema.state_dict().items())
    assert all(v.dtype == torch.float32 for v in ema.values())  # master weights stay fp32
    with pytest.raises(ConfigError, match="precision"):
        cfg(precision="fp16")


def test_a_later_stage_starts_from_an_exported_model(tmp_path):
    from steplens.config import ConfigError
    from steplens.models.registry import load

    train(cfg(steps=2), tmp_path / "a", progress=False)
    exported = load(str(tmp_path / "a" / "model")).model.state_dict()
    stage2 = train(cfg(steps=1, init=str(tmp_path / "a" / "model"), lr=0.0, warmup=1), tmp_path / "b", progress=False)
    # lr 0: the weights stay what the export held (EMA of a fixed model is that model)
    assert all(torch.equal(exported[k], v) for k, v in stage2.model.state_dict().items())
    with pytest.raises(ConfigError, match="model config"):
        train(cfg(steps=1, init=str(tmp_path / "a" / "model"), preset="small"), tmp_path / "c", progress=False)


def test_each_task_draws_from_its_own_sizes():
    import pytest

    from steplens.config import ConfigError

    c = cfg(tasks=("maze", "rotate"), task_sizes=((3,), (8,)))
    shapes = {}
    for step in range(12):
        x0, tid, name = make_batch(c, step)
        shapes.setdefault(name, set()).add(tuple(x0.shape[-2:]))
        assert int(tid[0]) == c.tasks.index(name)
    assert shapes == {"maze": {(7, 7)}, "rotate": {(8, 8)}}  # a 3x3 maze is 7x7 blocks
    with pytest.raises(ConfigError, match="one non-empty size list per task"):
        cfg(tasks=("maze", "rotate"), task_sizes=((3,),))
    with pytest.raises(ConfigError, match="outside its range"):
        cfg(tasks=("maze", "rotate"), task_sizes=((3,), (3,)))


def test_task_weights_set_how_often_each_task_comes():
    import pytest

    from steplens.cli.train import _task_weights
    from steplens.config import ConfigError

    base = dict(tasks=("maze", "rotate"), task_sizes=((3,), (8,)), batch=1)
    names = [make_batch(cfg(**base, task_weights=(1.0, 3.0)), step)[2] for step in range(200)]
    assert 0.65 < names.count("rotate") / 200 < 0.85  # 3 of 4 expected
    assert {make_batch(cfg(**base, task_weights=(0.0, 1.0)), step)[2] for step in range(30)} == {"rotate"}
    # no weights: the uniform draw of earlier stages, batch for batch
    unweighted = [make_batch(cfg(**base), step)[2] for step in range(30)]
    assert set(unweighted) == {"maze", "rotate"}
    with pytest.raises(ConfigError, match="one weight >= 0 per task"):
        cfg(**base, task_weights=(1.0,))
    with pytest.raises(ConfigError, match="not all 0"):
        cfg(**base, task_weights=(0.0, 0.0))
    assert _task_weights("rotate=2.5", ("maze", "rotate")) == (1.0, 2.5)
    assert _task_weights("", ("maze", "rotate")) == ()
    with pytest.raises(Exception, match="TASK=WEIGHT"):
        _task_weights("shuttle=2", ("maze", "rotate"))


def test_a_multi_task_stage_starts_from_a_one_task_model(tmp_path, one_thread):
    from steplens.models.registry import load

    train(cfg(steps=2), tmp_path / "a", progress=False)
    one = load(str(tmp_path / "a" / "model")).model.state_dict()
    multi = train(cfg(steps=1, tasks=("rotate", "maze"), task_sizes=((7,), (3,)), init=str(tmp_path / "a" / "model"),
                      lr=0.0, warmup=1), tmp_path / "b", progress=False).model.state_dict()
    # every weight but the task table is carried over; the maze row moves to the maze's new index
    assert all(torch.equal(one[k], v) for k, v in multi.items() if k != "task_embed.weight")
    assert torch.equal(multi["task_embed.weight"][1], one["task_embed.weight"][0])
    assert not torch.equal(multi["task_embed.weight"][0], one["task_embed.weight"][0])


def test_checkpoints_load_safely_and_export(tmp_path):
    from steplens.models.registry import load
    from steplens.train import CheckpointError, export_checkpoint, read_checkpoint

    st = train(cfg(steps=2), tmp_path / "a", progress=False)
    ckpt = tmp_path / "a" / "checkpoint.pt"
    raw = torch.load(ckpt, weights_only=True)  # plain dicts, lists, numbers and tensors: no pickled code needed
    assert raw["step"] == 2 and set(raw) == {"config", "model", "ema", "opt", "step", "elapsed", "log", "precision",
                                            "generator_versions"}
    prefix = export_checkpoint(ckpt, tmp_path / "exp" / "m").with_suffix("")
    meta = json.loads(prefix.with_suffix(".json").read_text())
    assert meta["trained_steps"] == 2 and meta["train"]["preset"] == "tiny" and meta["data"] == {"n_frames": 4, "sizes": [3]}
    assert raw["generator_versions"] == meta["generator_versions"] == {"maze": 1}
    assert all(torch.equal(st.ema.state_dict()[k], v) for k, v in load(str(prefix)).model.state_dict().items())

    from fractions import Fraction  # any pickled class: a safe load refuses it instead of constructing it

    torch.save({"config": {}, "x": Fraction(1, 3)}, tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    for name, msg in [("evil.pt", "not a readable"), ("junk.pt", "not a readable"), ("partial.pt", "no config"), ("none.pt", "no such")]:
        with pytest.raises(CheckpointError, match=msg):
            read_checkpoint(tmp_path / name)


def _fake_cpu(tmp_path, monkeypatch, flags: str) -> None:
    from steplens import precision

    p = tmp_path / f"cpuinfo_{flags.replace(' ', '_') or 'plain'}"
    p.write_text(f"processor\t: 0\nflags\t\t: fpu avx2 avx512f {flags}\n")
    monkeypatch.setattr(precision, "PROC_CPUINFO", p)


def test_auto_is_resolved_once_and_a_resumed_run_keeps_it(tmp_path, monkeypatch):
    _fake_cpu(tmp_path, monkeypatch, "amx_bf16")  # auto -> bf16 on a CPU with bf16 matrix units
    bf16 = train(cfg(precision="bf16"), tmp_path / "bf16", progress=False)
    train(cfg(), tmp_path / "a", progress=False, stop_after=3)
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert ck["precision"]["precision"] == "bf16" and ck["precision"]["capability"]["cpu_flags"] == ["amx_bf16"]
    assert ck["config"]["precision"] == "auto"  # the identity field is unchanged: the same command resumes
    _fake_cpu(tmp_path, monkeypatch, "")  # resumed where auto would pick fp32: the run keeps its bf16
    resumed = train(cfg(), tmp_path / "a", progress=False)
    ema = bf16.ema.state_dict()
    assert all(torch.equal(ema[k], v) for k, v in resumed.ema.state_dict().items())
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["precision"]["precision"] == "bf16" and metrics["precision"]["requested"] == "auto"


def test_a_checkpoint_from_before_precisions_resumes_as_it_ran(tmp_path, monkeypatch):
    _fake_cpu(tmp_path, monkeypatch, "amx_bf16")  # today auto would pick bf16 here ...
    fp32 = train(cfg(precision="fp32"), tmp_path / "fp32", progress=False)
    train(cfg(precision="fp32"), tmp_path / "old", progress=False, stop_after=3)
    path = tmp_path / "old" / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    del ck["precision"]  # ... but a checkpoint written before precisions were recorded ran auto as fp32 on a CPU
    ck["config"]["precision"] = "auto"
    torch.save(ck, path)
    resumed = train(cfg(), tmp_path / "old", progress=False)
    assert resumed.precision["precision"] == "fp32" and resumed.precision["requested"] == "auto"
    want = fp32.ema.state_dict()
    assert all(torch.equal(want[k], v) for k, v in resumed.ema.state_dict().items())


def test_a_trained_model_ships_its_seen_set_and_evaluation_skips_it(tmp_path):
    """The export's seen-set is the keys of every instance its batches held (and its --init's); evaluation never draws one."""
    import numpy as np

    from steplens.evaluate import EvalConfig, evaluate
    from steplens.runner import SamplingConfig
    from steplens.seen import load_seen
    from steplens.tasks import get_task
    from steplens.train import batch_instances

    c = cfg(steps=3, batch=16, ckpt_every=3)
    train(c, tmp_path / "a", progress=False)
    spec = str(tmp_path / "a" / "model")
    maze = get_task("maze")
    drawn = {maze.key(i) for step in range(3) for i in batch_instances(c, step)[1]}  # what training generated
    seen = load_seen(spec)
    assert set(seen.keys.tolist()) == drawn and seen.sha256 == json.loads((tmp_path / "a" / "model.json").read_text())["seen_set"]["sha256"]
    stage2 = cfg(steps=2, batch=16, ckpt_every=2, seed=5, init=spec)  # a later stage inherits what its init saw
    train(stage2, tmp_path / "b", progress=False)
    later = set(load_seen(str(tmp_path / "b" / "model")).keys.tolist())
    assert drawn < later
    s = evaluate(None, EvalConfig(model=spec, task="maze", size=3, n=12, seed=0, batch=12, save_frames=False,
                                  sampling=SamplingConfig(steps=2)), tmp_path / "ev", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "ev" / "results.jsonl").read_text().splitlines()]
    keys = [maze.key(maze.generate(r["seed"], 3, n_frames=c.n_frames, cell_px=1)) for r in rows]
    assert s["held_out"] == "content" and s["seen_set_sha256"] == seen.sha256 and s["n_skipped_seen"] > 0
    assert len(set(keys)) == 12 and not set(keys) & drawn
    assert np.all(np.diff(seen.keys.astype(np.float64)) > 0)  # stored sorted and unique
