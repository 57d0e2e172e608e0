"""Probes, search runs and ensemble runs draw held-out instances by content, like `steplens evaluate` (issue 37)."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import steplens
from steplens.cli import app
from steplens.models.serialize import export_random_tiny
from steplens.seen import add_to_meta, write_seen
from steplens.tasks import get_task

SIZE = 3


def _model_seeing(tmp_path: Path, seeds: list[int]) -> str:
    """A tiny exported model whose seen-set holds exactly the maze 3x3 instances of `seeds` (at its 4 frames)."""
    spec = export_random_tiny(tmp_path / "m", scale=0.05)
    task = get_task("maze")
    keys = np.array([task.key(task.generate(s, SIZE, n_frames=4, cell_px=1)) for s in seeds], dtype=np.uint64)
    add_to_meta(tmp_path / "m.json", write_seen(tmp_path / "m", keys))
    return spec


def _walk(seed: int, n: int, skip: set[int]) -> list[int]:
    """The expected draw, computed independently: seeds from `seed` whose instance is neither seen nor already taken."""
    task = get_task("maze")
    seen = {task.key(task.generate(s, SIZE, n_frames=4, cell_px=1)) for s in skip}
    taken, out, s = set(), [], seed
    while len(out) < n:
        k = task.key(task.generate(s, SIZE, n_frames=4, cell_px=1))
        if k not in seen and k not in taken:
            out.append(s)
        taken.add(k)
        s += 1
    return out


COMMANDS = {
    "probe": ["probe", "cos", "--views", "0", "--steps", "2", "--batch", "2"],
    "search": ["search", "run", "--k", "2", "--budget", "2", "--screen-step", "1", "--steps", "2"],
    "ensemble": ["ensemble", "run", "--k", "2", "--window", "0:1", "--no-baselines", "--steps", "2"],
}


@pytest.mark.parametrize("what", sorted(COMMANDS))
def test_runs_skip_seen_instances_and_report_them(tmp_path, what):
    seed = 500
    seen_seeds = [seed, seed + 2]
    spec = _model_seeing(tmp_path, seen_seeds)
    out = tmp_path / "run"
    args = [*COMMANDS[what], "--model", spec, "--task", "maze", "--size", str(SIZE), "--n", "3", "--seed", str(seed), "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["held_out"] == "content" and s["n_skipped_seen"] == 2 and s["n_seen_in_training"] == 0
    assert s["seen_set_sha256"] == json.loads((tmp_path / "m.json").read_text())["seen_set"]["sha256"]
    want = _walk(seed, 3, set(seen_seeds))
    assert s["n_skipped_duplicate"] == want[-1] - seed + 1 - 3 - 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["instances"]["seeds"] == want  # fixed before any shard ran
    drawn = {json.loads(p.read_text())["seed"] for p in (out / "samples").glob("*.json")}
    assert drawn == set(want)
    # resuming the finished folder computes nothing new and gives the same summary
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["n_skipped_seen"] == 2


@pytest.mark.parametrize("what", sorted(COMMANDS))
def test_too_few_unseen_is_an_error_unless_allow_seen(tmp_path, what):
    # the multi model drew every 3x3 maze (84 in all) in training
    args = [*COMMANDS[what], "--model", "multi", "--task", "maze", "--size", "3", "--n", "2", "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "--allow-seen" in lines[0] and "unseen in training" in lines[0]
    ok = CliRunner().invoke(app, [*args, "--allow-seen"])
    assert ok.exit_code == 0, ok.output
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["held_out"] == "content" and s["n_seen_in_training"] == 2 and s["seen_set_sha256"]
    if what == "ensemble":  # its reported rows, one per method and instance
        rows = [json.loads(ln) for ln in (tmp_path / "r" / "results.jsonl").read_text().splitlines()]
    else:
        rows = [json.loads(p.read_text()) for p in (tmp_path / "r" / "samples").glob("*.json")]
    assert len(rows) >= 2 and all(r.get("seen_in_training") is True for r in rows)


def test_models_without_a_seen_set_skip_nothing(tmp_path):
    out = tmp_path / "c"
    r = CliRunner().invoke(app, ["probe", "cos", "--model", "control:candidates", "--size", "4", "--n", "2", "--steps", "3",
                                 "--views", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["held_out"] == "content" and s["n_skipped_seen"] == 0 and s["seen_set_sha256"] is None


def test_no_module_draws_instances_by_seed_range():
    """Every probe, search and ensemble run draws through `evaluate.evaluation_instances` (probes: `ProbeConfig.seeds`)."""
    src = Path(steplens.__file__).parent
    users = []
    for p in sorted(src.rglob("*.py")):
        tree = ast.parse(p.read_text())
        if any(isinstance(n, ast.Name) and n.id == "held_out_seeds" or isinstance(n, ast.alias) and n.name == "held_out_seeds"
               for n in ast.walk(tree)):
            users.append(p.relative_to(src).as_posix())
    assert users == [], users
    from steplens.probes.common import ProbeConfig, held_out

    cfg = ProbeConfig(model="multi", task="maze", size=3, n=2, allow_seen=True)
    assert cfg.seeds() == list(held_out(cfg).seeds) and all(held_out(cfg).seen)


def test_every_probe_run_folder_fixes_its_held_out_instances():
    """Each probe's ProbeRun gets its instances: a ProbeConfig (held out by itself) or `held=`; only run-merging folders have none."""
    src = Path(steplens.__file__).parent
    bare = []
    for p in sorted([*(src / "probes").glob("*.py"), src / "search" / "run.py", src / "ensemble" / "report.py"]):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ProbeRun":
                kind = next((a.value if isinstance(a, ast.Constant) else getattr(a, "id", None) for a in node.args[1:2]), None)
                conf = node.args[2] if len(node.args) > 2 else next((k.value for k in node.keywords if k.arg == "config"), None)
                if not any(k.arg == "held" for k in node.keywords) and not (isinstance(conf, ast.Name) and conf.id == "cfg"):
                    bare.append((p.name, kind))
    # compares finished splice runs: draws nothing; splice --data runs on the user's VBVR-Bench folder: steplens draws none
    assert bare == [("bench_splice.py", "KIND"), ("splice.py", "probe-splice-compare")], bare
