"""The null and positive-control denoisers: each trajectory has the property its name promises."""

from __future__ import annotations

import numpy as np
import pytest

from steplens.models.controls import alternative
from steplens.models.registry import load
from steplens.models.serialize import ModelLoadError
from steplens.runner import SamplingConfig, generate, noise_seed, prepare
from steplens.tasks import TASKS, get_task


def run(spec: str, task: str, n: int = 6, steps: int = 10) -> tuple[list, list[np.ndarray], np.ndarray]:
    """(instances, x0_hat block videos per step, final block videos) of `spec` on `n` held-out instances."""
    den, t = load(spec), get_task(task)
    insts = [t.generate(s, None, n_frames=4, cell_px=1) for s in range(40_000, 40_000 + n)]
    x0s: list[np.ndarray] = []
    out = generate(den, prepare(den, t, insts), [noise_seed(i.seed) for i in insts], SamplingConfig(steps=steps),
                   callback=lambda e: x0s.append(den.decode(e.x0_hat)))
    return insts, x0s, den.decode(out)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_nulls_converge_and_noise_never_solves(task):
    t = get_task(task)
    for spec, want in (("null:shrink", True), ("null:blur", True), ("null:noise", False)):
        insts, _, final = run(spec, task, n=3, steps=6)
        assert [t.score(i, v).success for i, v in zip(insts, final)] == [want] * 3, spec


def test_shrink_is_linear_in_sigma_and_blur_sharpens():
    insts, x0s, _ = run("null:shrink", "maze", n=2, steps=4)
    truth = get_task("maze").blocks(insts[0]).astype(float)
    err = [np.abs(x[0].astype(float) - truth)[1:].mean() for x in x0s]  # frame 0 is re-imposed
    assert err[0] > err[1] > err[2] > err[3] > 0  # sigma 1, .75, .5, .25: the distance shrinks with sigma
    assert err[1] / err[0] == pytest.approx(0.75, abs=0.02)
    _, blurred, _ = run("null:blur", "maze", n=1, steps=4)
    assert (blurred[-1][0] == get_task("maze").blocks(insts[0])).all()  # no blur below sigma 1/3
    assert not (blurred[0][0] == get_task("maze").blocks(insts[0])).all()


def test_candidates_draws_both_then_the_wrong_one_then_chooses_by_noise():
    t = get_task("maze")
    insts, x0s, final = run("control:candidates", "maze", n=12, steps=8)
    wins = [t.score(i, v).success for i, v in zip(insts, final)]
    assert 0 < sum(wins) < len(wins)  # seeds disagree
    for i, inst in enumerate(insts):
        alt = alternative(t, inst)
        assert alt is not None
        assert (x0s[3][i][1:] == alt[1:]).all()  # sigma 0.625: the wrong candidate alone
        assert not t.score(inst, x0s[3][i]).success
        lit = (x0s[0][i][-1] == (0, 0, 255)).all(-1)
        assert lit[(alt[-1] == (0, 0, 255)).all(-1)].all() and lit[(t.blocks(inst)[-1] == (0, 0, 255)).all(-1)].all()  # both drawn
        assert (final[i] == (t.blocks(inst) if wins[i] else alt)).all()  # one of the two, whole


def test_candidates_keep_option_and_every_task_has_an_alternative():
    insts, _, final = run("control:candidates?keep=1", "tictactoe", n=4, steps=6)
    assert all(get_task("tictactoe").score(i, v).success for i, v in zip(insts, final))
    for name, task in TASKS.items():
        inst = task.generate(40_000, None, n_frames=4, cell_px=1)
        alt = alternative(task, inst)
        assert alt is not None and alt.shape == task.blocks(inst).shape and not task.score(inst, alt[-1]).success, name


def test_commit_holds_both_then_one_decided_by_its_state():
    t = get_task("maze")
    insts, x0s, final = run("control:commit", "maze", n=12, steps=8)  # commit at sigma 0.5: step 4 of 8
    wins = [t.score(i, v).success for i, v in zip(insts, final)]
    assert 0 < sum(wins) < len(wins)  # seeds disagree
    for i, inst in enumerate(insts):
        alt = alternative(t, inst)
        assert not (x0s[0][i] == t.blocks(inst)).all() and not (x0s[0][i] == alt).all()  # half of each: neither whole
        assert all((x0s[s][i] == x0s[4][i]).all() for s in range(4, 8))  # committed at step 4, kept
        assert (final[i] == (t.blocks(inst) if wins[i] else alt)).all()


def test_bad_control_specs():
    for spec in ("null:nope", "control:commit?commit=1", "control:candidates?prune=2", "control:candidates?bogus=1", "null:shrink?keep=1"):
        with pytest.raises(ModelLoadError):
            load(spec)


def test_probes_run_on_controls_and_block_probes_say_why_not(tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["probe", "cos", "--model", "control:candidates", "--size", "4", "--n", "2", "--steps", "6", "--out", str(tmp_path / "cos")])
    assert ok.exit_code == 0, ok.output
    for probe in ("layers", "cka"):
        r = runner.invoke(app, ["probe", probe, "--model", "null:shrink", "--size", "4", "--n", "2", "--steps", "6", "--out", str(tmp_path / probe)])
        assert r.exit_code == 2 and "error:" in r.output and "transformer blocks" in r.output and "Traceback" not in r.output
