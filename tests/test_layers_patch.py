"""Activation patching and token maps against models whose answer is known by construction."""

import numpy as np
import pytest

from standins import LayeredToy
from steplens.probes.common import ProbeConfig, make_batch
from steplens.probes.layers import flip_layer, patch_layers, run_layers
from steplens.probes.tokenmaps import analyse as token_analyse, probe_accuracy, token_labels
from steplens.runner import SamplingConfig

STEPS = 4


def cfg(n=4, **kw):
    return ProbeConfig(model="toy", size=3, n=n, batch=n, sampling=SamplingConfig(steps=STEPS), **kw)


def _outcomes(den, patch, shift=1):
    c = cfg()
    batch, noise = make_batch(den, c, c.seeds())
    recs = patch_layers(den, batch, noise, c, patch=patch, window=(0, STEPS), shift=shift)
    return np.array([r["outcome"] for r in recs])  # (B, L)


def test_resid_patching_flips_from_the_layer_that_writes_the_answer():
    out = _outcomes(LayeredToy(depth=3, k=1), "resid")
    assert (out[:, 0] == "keep").all()  # block 1 rewrites the answer from the recipient's own conditioning
    assert (out[:, 1:] == "flip").all()  # from block 1 on, the stream is the donor's answer


def test_writes_patching_flips_only_at_that_layer_and_identity_blocks_flip_nothing():
    out = _outcomes(LayeredToy(depth=3, k=1), "writes")
    assert (out[:, 1] == "flip").all()
    assert (out[:, [0, 2]] == "keep").all()  # identity blocks write nothing, in the donor's run too


@pytest.mark.parametrize("patch", ["resid", "writes"])
def test_a_donor_identical_to_the_recipient_flips_nothing(patch):
    out = _outcomes(LayeredToy(depth=3, k=1), patch, shift=0)
    assert (out == "keep").all()


def test_run_layers_reports_rates_with_cis_and_the_flip_layer(tmp_path):
    s = run_layers(LayeredToy(depth=3, k=1), cfg(), str(tmp_path), patch_window=(0, STEPS), progress=False)
    p = s["patching"]
    assert p["variant"] == "resid" and p["flip_layer"] == 1 and p["flip_layer_exists"] and p["flip_depth"] == pytest.approx(2 / 3)
    assert p["per_layer"]["0"]["keep"]["rate"] == 1.0 and p["per_layer"]["2"]["flip"]["rate"] == 1.0
    for row in p["per_layer"].values():
        assert sum(row[k]["rate"] for k in ("flip", "keep", "break")) == pytest.approx(1.0)
        assert all(0.0 <= row[k]["ci95"][0] <= row[k]["rate"] <= row[k]["ci95"][1] <= 1.0 for k in ("flip", "keep", "break"))
    assert s["clean_solve_rate"] == 1.0 and "token_maps" in s
    assert (tmp_path / "token_maps.json").exists() and (tmp_path / "token_maps.png").stat().st_size > 0


def test_flip_layer_needs_a_transition():
    r = lambda flip, keep: {"flip": np.array(flip, float), "keep": np.array(keep, float)}  # noqa: E731
    assert flip_layer(r([0, 0, 1, 1], [1, 1, 0, 0]))["flip_layer"] == 2
    flat = flip_layer(r([1, 1, 1], [0, 0, 0]))
    assert flat["flip_layer"] is None and not flat["flip_layer_exists"] and flat["first_flipping_layer"] == 0
    assert flip_layer(r([0, 0], [1, 1]))["first_flipping_layer"] is None


def test_resid_patching_cannot_depend_on_depth_where_the_puzzle_enters_only_at_the_input(one_thread):
    """The reference DiT reads the puzzle at its input only: after block L everything is the donor's, for any L."""
    from conftest import tiny_reference

    den, _ = tiny_reference()
    c = ProbeConfig(model="tiny", size=3, n=3, batch=3, sampling=SamplingConfig(steps=3))
    batch, noise = make_batch(den, c, c.seeds())
    recs = patch_layers(den, batch, noise, c, patch="resid", window=(0, 3))
    for r in recs:
        assert len(set(r["outcome"])) == 1 and len(set(r["score_own"])) == 1 and len(set(r["score_donor"])) == 1


def test_patching_writes_needs_the_sites():
    class NoSites(LayeredToy):
        def hook_sites(self):
            return {}

    with pytest.raises(ValueError, match="does not declare"):
        _outcomes(NoSites(), "writes")
    with pytest.raises(ValueError, match="--patch must be one of"):
        _outcomes(LayeredToy(), "everything")


def test_token_probe_finds_the_layer_that_encodes_the_label():
    """Tokens whose layer 2 (block 1's output) carries the action label in one channel: accuracy 1 there, chance at the input."""
    rng = np.random.default_rng(0)
    depth, steps, n_tok, d = 3, [0, 1], 40, 6
    tokens, labels = [], []
    for _ in range(8):
        lab = rng.integers(0, 3, size=n_tok)
        t = rng.normal(size=(len(steps), depth + 1, n_tok, d))
        t[:, 2:, :, 0] += 8.0 * (lab == 2)  # action readable from block 1's output on
        t[:, 1:, :, 1] += 8.0 * (lab == 1)  # scene readable from block 0's output on
        tokens.append(t.astype(np.float16))
        labels.append(lab)
    res = token_analyse(tokens, labels, steps, depth)
    reas = np.array(res["reasoning"]["accuracy"])
    assert reas[:, 2:].min() > 0.95 and reas[:, :2].max() < 0.75
    perc = np.array(res["perception"]["accuracy"])
    assert perc[:, 1:].min() > 0.95 and perc[:, 0].max() < 0.75
    assert res["perception_layer"] == "0" and res["reasoning_layer"] == "1" and res["reasoning_depth"] == pytest.approx(2 / 3)
    assert res["reasoning_steps"][0] == 0 and res["claim"].startswith("reproduced")  # scene at depth 1/3, action at 2/3
    lo, hi = np.array(res["reasoning"]["ci95"])[0, 2]
    assert 0.5 <= lo <= reas[0, 2] <= hi <= 1.0


def test_probe_accuracy_is_chance_on_noise_and_labels_map_to_tokens():
    rng = np.random.default_rng(1)
    data = [(rng.normal(size=(50, 4)), rng.random(50) < 0.5) for _ in range(20)]
    acc, lo, hi = probe_accuracy(data[:10], data[10:])
    assert abs(acc - 0.5) < 0.1 and lo <= 0.5 <= hi
    roles = {"background": np.eye(4, dtype=bool), "scene": ~np.eye(4, dtype=bool), "action": np.zeros((4, 4), bool)}
    assert token_labels(roles, (2, 2)).tolist() == [0, 1, 1, 0]  # centre blocks (0,0) (0,2) (2,0) (2,2)
