import json

import torch

from steplens.train import TrainConfig, lr_at, make_batch, train


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
    torch.set_num_threads(1)
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
    torch.set_num_threads(1)
    st = train(cfg(steps=40, batch=8, lr=3e-3, warmup=5), tmp_path, progress=False)
    losses = [r["loss"] for r in st.log if "loss" in r]
    assert losses[-1] < 0.8 * losses[0]


def test_other_config_is_refused(tmp_path):
    import pytest

    from steplens.config import ConfigError

    train(cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="different training config"):
        train(cfg(steps=2, lr=5e-3), tmp_path, progress=False)
