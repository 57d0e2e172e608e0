"""The bad-input sweep of tests/test_cli_errors.py over the commands added since: --task suite, the task sizes, search,
train --init and --task-weights, --precision, serve, and --data runs on official folders. Each bad input is one
`error:` line and exit 2 (1 where some samples ran), no traceback, and no run folder left that a re-run would trust."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from test_cli_errors import inputs  # noqa: F401 - the tiny models and samples of the first sweep
from typer.testing import CliRunner

from steplens import precision
from steplens.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
SMALL = ["--n", "2", "--steps", "2"]
MULTI = ["--model", "multi", *SMALL]
TINY_SEARCH = ["--model", "TINY", "--size", "3", *SMALL, "--screen-step", "1"]  # a case's own options come after: the last wins


@pytest.fixture(scope="module")
def more(inputs, tmp_path_factory) -> dict[str, str]:  # noqa: F811
    """inputs plus: a tiny-preset training checkpoint (another architecture than the base preset's) and a finished
    evaluate run folder."""
    root = tmp_path_factory.mktemp("more")
    ck = root / "train"
    r = runner.invoke(app, ["train", "--out", str(ck), "--preset", "tiny", "--steps", "1", "--batch", "2", "--sizes", "3", "--warmup", "1"])
    assert r.exit_code == 0, r.output
    ev = root / "eval"
    assert runner.invoke(app, ["evaluate", "--out", str(ev), "--model", inputs["TINY"], "--size", "3", *SMALL]).exit_code == 0
    return {**inputs, "TINY_CKPT": str(ck / "checkpoint.pt"), "EVAL_RUN": str(ev)}


# (command line, what the error line must name); OUT is a fresh folder that must not exist afterwards
CASES = [
    # task sizes: the task's own default, a size out of its range refused once before any sample
    (["evaluate", "--out", "OUT", "--task", "occlusion", "--size", "5", *MULTI], "occlusion size must be in 9..16, got 5"),
    (["evaluate", "--out", "OUT", "--task", "tictactoe", "--size", "9", *MULTI], "tictactoe size must be in one of (2, 3, 4, 5, 42, 43, 44), got 9"),
    (["evaluate", "--out", "OUT", "--task", "shuttle", "--size", "99", *MULTI], "shuttle size must be in 7..21"),
    (["ensemble", "run", "--out", "OUT", "--task", "rotate", "--size", "3", "--k", "2", *MULTI], "rotate size must be in 7..15"),
    (["ensemble", "sweep", "--out", "OUT", "--task", "rotate_large", "--size", "3", "--ks", "2", *MULTI], "rotate_large size must be in 9..15"),
    (["search", "run", "--out", "OUT", "--task", "shuttle_near", "--size", "3", *MULTI], "shuttle_near size must be in 7..21"),
    (["search", "sweep", "--out", "OUT", "--task", "tictactoe_fork", "--size", "9", *MULTI], "tictactoe_fork size must be in one of (2, 3, 4, 5, 42, 43, 44), got 9"),
    (["probe", "cos", "--out", "OUT", "--task", "occlusion", "--size", "3", *MULTI], "occlusion size must be in 9..16"),
    (["probe", "behaviour", "--out", "OUT", "--task", "maze", "--size", "2", *MULTI], "maze size must be in 3..10"),
    (["trace", "--out", "OUT", "--task", "rotate", "--size", "4", *MULTI], "rotate size must be in 7..15"),
    (["evaluate", "--out", "OUT", "--task", "maze", "--size", "-1", *MULTI], "maze size must be in 3..10"),
    # --task suite with bad --sizes
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "maze=99", *MULTI], "maze size must be in 3..10, got 99"),
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "occlusion=5", *MULTI], "occlusion size must be in 9..16"),
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "nope=3", *MULTI], "--sizes: expected 'task=size;...'"),
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "maze=x", *MULTI], "'maze=x'"),
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "maze", *MULTI], "--sizes: expected"),
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "maze=-3", *MULTI], "'maze=-3'"),
    (["ensemble", "run", "--out", "OUT", "--task", "suite", "--sizes", "rotate=5", "--k", "2", *MULTI], "rotate size must be in 7..15"),
    (["ensemble", "run", "--out", "OUT", "--task", "suite", "--sizes", "maze=4;bogus=1", "--k", "2", *MULTI], "'bogus=1'"),
    (["search", "run", "--out", "OUT", "--task", "suite", "--sizes", "shuttle=2", *MULTI], "shuttle size must be in 7..21"),
    (["search", "run", "--out", "OUT", "--task", "suite", "--sizes", "tictactoe=;", *MULTI], "'tictactoe='"),
    (["evaluate", "--out", "OUT", "--task", "maze", "--sizes", "maze=4", *MULTI], "--sizes applies to --task suite only"),
    (["ensemble", "run", "--out", "OUT", "--task", "maze", "--sizes", "maze=4", *MULTI], "--sizes applies to --task suite only"),
    (["search", "run", "--out", "OUT", "--task", "maze", "--sizes", "maze=4", *MULTI], "--sizes applies to --task suite only"),
    (["evaluate", "--out", "OUT", "--task", "suite", "--sizes", "maze=3.5", *MULTI], "'maze=3.5'"),
    # search run | sweep: budgets, K below the budget, screening step past the steps
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--budget", "0"], "budget must be >= 1"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--budget", "-2"], "budget must be >= 1"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--budget", "nan"], "budget must be >= 1 single run (finite), got nan"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--budget", "inf"], "budget must be >= 1 single run (finite), got inf"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--budget", "four"], "--budget"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--budget", "4", "--k", "2"], "--k (2) is below --budget (4)"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--screen-step", "5"], "screen step must be in 1..1, got 5"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--screen-step", "0"], "--screen-step"),
    (["search", "run", "--out", "OUT", *TINY_SEARCH, "--k", "0"], "--k"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--budgets", "0,2"], "--budgets must be positive integers"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--budgets", ""], "--budgets must be positive integers"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--budgets", "1.5"], "--budgets must be comma-separated integers"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--ks", "-4"], "--ks must be positive integers"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--screen-step", "2"], "--screen-step must be below --steps (2), got 2"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--budgets", "2,8", "--ks", "2", "--k", "4"], "--k (4) is below the largest of --budgets (8)"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--budgets", "2", "--ks", "4", "--ss", "5"], "--ss: every screening step is at or past --steps (2)"),
    (["search", "sweep", "--out", "OUT", *TINY_SEARCH, "--budgets", "2", "--ks", "16,24", "--k", "12"], "--ks: every K is above --k (12)"),
    # train: --task-weights naming unknown tasks or no numbers, --init of another architecture
    (["train", "--out", "OUT", "--task", "maze,rotate", "--task-weights", "nope=2"], "--task-weights: 'nope=2' must be TASK=WEIGHT"),
    (["train", "--out", "OUT", "--task", "maze", "--task-weights", "rotate=2"], "'rotate=2' must be TASK=WEIGHT with TASK one of ['maze']"),
    (["train", "--out", "OUT", "--task", "maze,rotate", "--task-weights", "rotate=heavy"], "'heavy' is not a number"),
    (["train", "--out", "OUT", "--task", "maze,rotate", "--task-weights", "rotate"], "'rotate' must be TASK=WEIGHT"),
    (["train", "--out", "OUT", "--task", "maze,rotate", "--task-weights", "rotate=-1", "--sizes", "maze=3;rotate=7"], "task_weights needs one weight >= 0"),
    (["train", "--out", "OUT", "--preset", "tiny", "--steps", "1", "--init", "MISSING"], "no model"),
    (["train", "--out", "OUT", "--preset", "tiny", "--steps", "1", "--batch", "2", "--init", "multi"], "is not this run's"),
    (["train", "--out", "OUT", "--preset", "base", "--steps", "1", "--batch", "2", "--init", "TINY"], "is not this run's"),
    (["train", "--out", "OUT", "--preset", "base", "--steps", "1", "--batch", "2", "--init", "TINY_CKPT"], "a checkpoint of preset 'tiny'"),
    # precision
    (["evaluate", "--out", "OUT", "--model", "TINY", "--size", "3", "--precision", "half", *SMALL], "--precision must be one of"),
    (["train", "--out", "OUT", "--preset", "tiny", "--steps", "1", "--precision", "fp16"], "precision must be auto, bf16 or fp32"),
]


def run_case(more: dict[str, str], tmp_path: Path, args: list[str], names: str, code: int = 2):  # noqa: F811
    out = tmp_path / "out"
    argv = [str(out) if a == "OUT" else more.get(a, a) for a in args]
    r = runner.invoke(app, argv)
    assert r.exit_code == code, (argv, r.output)
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit | None), r.output
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("precision ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert names in lines[0], lines[0]
    return out, r


@pytest.mark.parametrize(("args", "names"), CASES, ids=[" ".join(a[:3]) + f" [{i}]" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(more, tmp_path, args, names):
    out, _ = run_case(more, tmp_path, args, names)
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))  # nothing a re-run would trust or refuse


@pytest.mark.parametrize("cmd", [["search", "run"], ["search", "sweep", "--budgets", "2", "--ks", "2", "--ss", "1"]])
def test_search_into_a_folder_of_another_config_is_refused_and_left_as_it_was(more, tmp_path, cmd):
    folder = tmp_path / "eval"
    shutil.copytree(more["EVAL_RUN"], folder)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    r = runner.invoke(app, [*cmd, "--out", str(folder), "--model", more["TINY"], "--size", "3", "--screen-step", "1",
                            "--budget" if cmd[1] == "run" else "--k", "2", *SMALL])
    assert r.exit_code == 2, r.output
    line, = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "different config" in line and "Traceback" not in r.output
    assert {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_bf16_on_a_cpu_without_bf16_flags_is_run_as_asked_and_recorded(more, tmp_path, monkeypatch):
    """--precision bf16 is honoured anywhere (README, "Precision"); with no bf16 flags the record and the line say so."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx avx2 fma\n")  # an AVX2 machine without bf16
    monkeypatch.setattr(precision, "PROC_CPUINFO", cpuinfo)
    out = tmp_path / "run"
    r = runner.invoke(app, ["evaluate", "--out", str(out), "--model", more["TINY"], "--size", "3", "--precision", "bf16", *SMALL])
    assert r.exit_code == 0, r.output
    assert "precision bf16 (asked bf16; cpu bf16 flags: none (no bf16 matrix units))" in r.stderr
    rec = json.loads((out / "precision.json").read_text())
    assert rec["precision"] == "bf16" and rec["capability"]["cpu_flags"] == []
    auto = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "auto"), "--model", more["TINY"], "--size", "3", *SMALL])
    assert auto.exit_code == 0 and "precision fp32 (asked auto" in auto.stderr


def test_serve_on_a_port_in_use_is_one_line(more, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = runner.invoke(app, ["serve", more["EVAL_RUN"], "--host", "127.0.0.1", "--port", str(port)])
    assert r.exit_code == 2, r.output
    line, = r.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}") and "Traceback" not in r.output


# -- --data runs on official folders: a sample with a missing or corrupt file ----------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory, one_thread) -> dict[str, str]:
    """The tiny Wan model and official roots: good, one sample without its first frame, one with a corrupt one, and
    one whose only sample has no first frame."""
    pytest.importorskip("diffusers")
    import numpy as np
    import torch
    from test_bench import KEY_DOOR, official_sample
    from test_wan import build

    root = tmp_path_factory.mktemp("bench")
    model = root / "m"
    build("i2v_moe").save_pretrained(model)
    g = torch.Generator().manual_seed(0)
    torch.save({"prompt_embeds": torch.randn(1, 8, 32, generator=g), "negative_prompt_embeds": torch.randn(1, 8, 32, generator=g)},
               model / "emb.pt")
    rng = np.random.default_rng(0)
    good = root / "good" / "In-Domain_50" / KEY_DOOR
    for i in range(2):
        official_sample(good / f"{i:05d}", rng, f"Move the key to door {i}.")
    for name in ("no_first", "bad_first", "only_bad"):
        shutil.copytree(root / "good", root / name)
    (root / "no_first" / "In-Domain_50" / KEY_DOOR / "00001" / "first_frame.png").unlink()
    (root / "bad_first" / "In-Domain_50" / KEY_DOOR / "00001" / "first_frame.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    shutil.rmtree(root / "only_bad" / "In-Domain_50" / KEY_DOOR / "00000")
    (root / "only_bad" / "In-Domain_50" / KEY_DOOR / "00001" / "first_frame.png").unlink()
    return {"model": f"wan:{model}", "emb": str(model / "emb.pt"), **{n: str(root / n) for n in ("good", "no_first", "bad_first", "only_bad")}}


DATA_CMDS = {"ensemble run": ["ensemble", "run", "--k", "2", "--no-baselines"],
             "search run": ["search", "run", "--budget", "2", "--k", "2", "--screen-step", "1"],
             "probe cos": ["probe", "cos", "--every", "1"]}
DATA_CASES = [(cmd, root, code, names) for cmd in DATA_CMDS for root, code, names in
              (("no_first", 1, "first_frame.png: image file not found"), ("bad_first", 1, "first_frame.png: cannot decode image"),
               ("only_bad", 2, "first_frame.png: image file not found"))]


@pytest.mark.parametrize(("cmd", "root", "code", "names"), DATA_CASES, ids=[f"{c} {r}" for c, r, _, _ in DATA_CASES])
def test_data_runs_on_a_sample_with_a_missing_or_corrupt_file(bench, tmp_path, cmd, root, code, names):
    """Some samples generated: exit 1 and the others' videos; none: exit 2 and no run folder. One error line either way."""
    out = tmp_path / "out"
    r = runner.invoke(app, [*DATA_CMDS[cmd], "--model", bench["model"], "--data", bench[root], "--prompt-embeds", bench["emb"],
                            "--steps", "2", "--frames", "5", "--height", "32", "--width", "32", "--out", str(out)])
    assert r.exit_code == code, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]  # the model loader may add progress lines
    assert len(errors) == 1 and errors[0] == r.stderr.strip().splitlines()[-1] and names in errors[0], r.stderr
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit | None)
    if code == 2:
        assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    else:
        assert list(out.rglob("00000.mp4")) and not list(out.rglob("00001.mp4"))
