"""Emergent behaviours as numbers over samples, from the decoded x0_hat of every step, for any task.

Each behaviour comes with the control that separates the paper's claim from an artefact.
- Self-correction, two kinds kept apart. Per step, the task's `candidates` (the blocks the last frame
  draws as answer) and its scorer's verdict. `pruned`: the sample ends right and at some earlier step
  drew the kept answer plus more (several candidates superimposed, one kept). `corrected`: the sample
  ends right and at some earlier step held one wrong answer for `hold` steps in a row that does not
  contain the kept one (a committed wrong answer, replaced later). A sample can do both.
- Working memory, only where the information is out of sight when needed AND absent from the
  conditioning: the task's `recall` names an object that must be at a block in the last frame after
  being away from it, and declares where that content is (`Recall.source`). `memory`: in the model's
  last step the object is back at its block and away from it in the gap frames; `copied`: at its block
  in every generated frame (never left). Measured only on instances whose content is in no
  conditioning frame and not computable from it; elsewhere the verdict is "not measurable on this
  task: the needed content is in the conditioning / computable from the conditioning: <reason>" (the
  maze's markers, shuttle's start in frame 0, occlusion's exit column computed from frame 0's trail),
  with what the model restored kept as a diagnostic. Where measured (`shuttle_choice`: the target the model's
  own walk chose, marked after every trace of the visit is gone, `Task.recalled`), memory is read against
  `Recall.chance` (a video that forgets but does the rest right). A task without a recall gets "not measurable",
  and a model not trained on the task gets "not measurable on this model" and is not run.
- Perception before action: scene blocks (walls, objects: `Task.roles`, unchanged in the ground truth
  and drawn in a scene colour) and action blocks (what the ground truth changes: path, moved object).
  Background blocks (e.g. a maze's dead-end floor, where fading candidates live) count as neither.
  Settle step: the first step from which the classified colours of those blocks in the last frame
  never change again. Reported: the paired difference action minus scene, with a Student t CI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..stats import paired_diff, rate_record, wilson
from ..tasks import get_task
from ..tasks.base import Task, classify_blocks
from ..tasks.maze import MAZE_COLORS
from .common import ProbeConfig, ProbeRun, plt, save_npz
from .cos import Traced, trace_x0
from .metrics import commit_step, self_correction

HOLD = 2  # steps a wrong answer must be held to count as committed


def known_tasks(den: Any) -> tuple[str, ...] | None:
    """The tasks a model was trained on (None: not declared, e.g. a text-conditioned model that takes any prompt)."""
    tasks = getattr(den, "tasks", None)
    if tasks is None:
        tasks = getattr(getattr(getattr(den, "model", None), "cfg", None), "tasks", None)
    return None if tasks is None else tuple(tasks)


def unknown_task(den: Any, task: str) -> str | None:
    """The "not measurable" verdict when the model was not trained on `task`, else None."""
    known = known_tasks(den)
    if known is None or task in known:
        return None
    return f"not measurable on this model: it was not trained on {task!r} (it knows {list(known)})"


def step_blocks(task: Task, inst: Any, steps: np.ndarray) -> np.ndarray:
    """Decoded steps (S, T, H, W, 3) of any resolution -> block colours (S, T, Hb, Wb, 3) float."""
    return np.stack([task.video_blocks(inst, s) for s in steps])


def step_success(task_name: str, insts: list[Any], steps: np.ndarray) -> np.ndarray:
    """(n, S) bool: does x0_hat at each step already solve the task?"""
    task = get_task(task_name)
    return np.array([[task.score(i, v).success for v in s] for i, s in zip(insts, steps)])


def revisions(cands: np.ndarray, correct: np.ndarray, hold: int = HOLD) -> dict[str, bool]:
    """Pruned and corrected (see module doc) from per-step answer masks (S, Hb, Wb) and verdicts (S,)."""
    if not correct[-1]:
        return {"pruned": False, "corrected": False}
    final = cands[-1]
    pruned = any(not (final & ~c).any() and (c & ~final).any() for c in cands[:-1])
    corrected = False
    for s in range(len(cands) - hold):  # a run of `hold` steps that ends before the last step
        run = cands[s : s + hold]
        held = all(np.array_equal(r, run[0]) for r in run)
        if held and not correct[s : s + hold].any() and run[0].any() and (final & ~run[0]).any():
            corrected = True
            break
    return {"pruned": pruned, "corrected": corrected}


def settle_steps(task: Task, inst: Any, last: np.ndarray) -> tuple[int, int]:
    """(scene, action) settle steps from the last frame's block colours at each step, (S, Hb, Wb, 3)."""
    roles = task.roles(inst)
    cls = [classify_blocks(f, task.colors) for f in last]
    return commit_step([c[roles["scene"]] for c in cls]), commit_step([c[roles["action"]] for c in cls])


def recall_per_step(task: Task, inst: Any, blocks: np.ndarray) -> dict[str, np.ndarray]:
    """For a task with a recall, per step (S,): object back at its block in the last frame; away from it in the
    gap frames; both (memory); at its block in every generated frame (copied)."""
    rec = task.recall(inst)
    assert rec is not None
    colour = task.colors.index(rec.color)
    present = np.zeros(blocks.shape[:2], dtype=bool)  # (S, T); a step whose video commits to no block: never present
    for s, video in enumerate(blocks):
        if (at := task.recalled(inst, video)) is not None:
            present[s] = classify_blocks(video[:, at[0], at[1]], task.colors) == colour
    back = present[:, -1]
    away = ~present[:, list(rec.away)].any(1) if rec.away else np.ones(len(present), dtype=bool)
    return {"back": back, "away": away, "memory": back & away, "copied": present[:, 1:].all(1)}


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"rate": k / n, "ci95": list(wilson(k, n)), "count": int(k), "n": int(n), "stats": rate_record(k, n)}


def _recall_rates(task: Task, insts: list[Any], blocks: list[np.ndarray]) -> dict[str, Any]:
    """Memory, copied, back and away at the model's last step, and memory per step, over `insts` (non-empty)."""
    per = [recall_per_step(task, i, b) for i, b in zip(insts, blocks)]
    last = {k: np.array([p[k][-1] for p in per]) for k in ("back", "away", "memory", "copied")}
    n = len(insts)
    return {"memory": _rate(int(last["memory"].sum()), n), "copied": _rate(int(last["copied"].sum()), n),
            "back": _rate(int(last["back"].sum()), n), "away": _rate(int(last["away"].sum()), n),
            "memory_per_step": np.stack([p["memory"] for p in per]).mean(0).tolist()}


def memory(task: Task, insts: list[Any], blocks: list[np.ndarray]) -> dict[str, Any]:
    """The working-memory record: measured only on the instances whose recalled content is absent from every
    conditioning frame and not computable from it (`Recall.measurable`); else "not measurable on this task" with
    the task's reason, and what the model restored beside it as a diagnostic (a read of the conditioning, not memory)."""
    recalls = [task.recall(i) for i in insts]
    if all(r is None for r in recalls):
        return {"verdict": f"not measurable on this task: {task.name!r} defines no object to remember (Task.recall)"}
    keep = [k for k, r in enumerate(recalls) if r is not None and r.measurable]
    if keep:
        first = recalls[keep[0]]
        assert first is not None
        rates = _recall_rates(task, [insts[k] for k in keep], [blocks[k] for k in keep])
        chance = np.array([recalls[k].chance for k in keep])  # type: ignore[union-attr]
        hits = np.array([recall_per_step(task, insts[k], blocks[k])["memory"][-1] for k in keep], dtype=np.float64)
        d, lo, hi, rec = paired_diff(chance, hits, rates=False)  # mean(memory - chance), Student t
        over = {"diff": d, "ci95": [lo, hi], "stats": rec, "chance": float(chance.mean()), "n": len(keep),
                "definition": "memory minus the rate of a video that forgets the content but does the rest right "
                              "(Recall.chance), per sample; Student t"}
        return {"verdict": "measured", "what": first.what, "source": first.source, "reason": first.reason,
                "n_excluded": len(insts) - len(keep), **rates, "over_chance": over}
    first = next(r for r in recalls if r is not None)
    out: dict[str, Any] = {"verdict": first.not_measurable(), "what": first.what, "source": first.source, "reason": first.reason}
    gap = [k for k, r in enumerate(recalls) if r is not None and r.away]
    if gap:  # the object leaves and comes back: how often the model restores it (from the conditioning)
        rates = _recall_rates(task, [insts[k] for k in gap], [blocks[k] for k in gap])
        out["restored_from_conditioning"] = {"restored": rates["memory"], "copied": rates["copied"],
                                             "restored_per_step": rates["memory_per_step"],
                                             "note": "back at its block after being away: read from the conditioning, not memory"}
    if task.name == "maze":
        markers = maze_markers(insts, blocks)
        out.update(markers_kept_all_steps=float(markers.all(1).mean()), markers_present_per_step=markers.mean(0).tolist())
    return out


def maze_markers(insts: list[Any], blocks: np.ndarray) -> np.ndarray:
    """(n, S) bool: the last frame shows the start and goal markers in place."""
    out = []
    for inst, b in zip(insts, blocks):
        cls = np.stack([classify_blocks(f, MAZE_COLORS) for f in b[:, -1]])  # (S, Hb, Wb)
        out.append((cls[:, inst.start[0], inst.start[1]] == MAZE_COLORS.index("green"))
                   & (cls[:, inst.goal[0], inst.goal[1]] == MAZE_COLORS.index("red")))
    return np.array(out)


def analyse(task_name: str, insts: list[Any], steps: np.ndarray, *, hold: int = HOLD) -> dict[str, Any]:
    """Every behaviour over samples (pure: from the decoded steps, (n, S, T, H, W, 3))."""
    task = get_task(task_name)
    blocks = [step_blocks(task, i, s) for i, s in zip(insts, steps)]  # n x (S, T, Hb, Wb, 3)
    ok = np.array([[task.score_blocks(i, f[-1], f).success for f in b] for i, b in zip(insts, blocks)])  # (n, S)
    n = len(insts)
    kinds = [self_correction(r) for r in ok]
    counts = {k: kinds.count(k) for k in ("always", "corrected", "lost", "never")}
    rev = [revisions(np.stack([task.candidates(i, f) for f in b[:, -1]]), r, hold) for i, b, r in zip(insts, blocks, ok)]
    n_pruned, n_corr = sum(r["pruned"] for r in rev), sum(r["corrected"] for r in rev)
    out: dict[str, Any] = {
        "n": n, "task": task_name,
        "final_solve_rate": float(ok[:, -1].mean()),
        "success_per_step": ok.mean(0).tolist(),
        "self_correction": counts,
        "corrected_rate": counts["corrected"] / n, "corrected_rate_ci95": list(wilson(counts["corrected"], n)),
        "lost_rate": counts["lost"] / n, "lost_rate_ci95": list(wilson(counts["lost"], n)),
        "pruning": _rate(n_pruned, n) | {"definition": "ends right; at an earlier step drew the kept answer plus more candidates"},
        "correction": _rate(n_corr, n) | {"definition": f"ends right; at an earlier step held, for {hold} steps, one wrong answer "
                                                        "that does not contain the kept one"},
        "per_sample": [{"seed": int(i.seed), "kind": k, **r} for i, k, r in zip(insts, kinds, rev)],
    }
    settle = [settle_steps(task, i, b[:, -1]) for i, b in zip(insts, blocks)]
    scene, action = (np.array(v) for v in zip(*settle))
    d, lo, hi, rec = paired_diff(scene, action, rates=False)  # mean(action - scene), Student t
    out["perception"] = {
        "scene_settle_step_mean": float(scene.mean()), "action_settle_step_mean": float(action.mean()),
        "action_minus_scene": d, "action_minus_scene_ci95": [lo, hi], "action_minus_scene_stats": rec,
        "perception_first_fraction": float(np.mean(scene < action)),
        "verdict": ("scene settles before the action" if lo > 0 else "action settles before the scene" if hi < 0
                    else "no difference resolved (the CI includes 0)"),
        "scene_steps": scene.tolist(), "action_steps": action.tolist(),
        "scene_blocks": f"unchanged in the ground truth and drawn in {list(task.scene_colors)}",
        "action_blocks": "changed between the ground truth's first and last frame",
    }
    out["memory"] = memory(task, insts, blocks)
    return out


def not_measurable(cfg: ProbeConfig, out: str, verdict: str) -> dict[str, Any]:
    """The summary of a model that does not know the task: verdicts, no numbers, nothing sampled."""
    run = ProbeRun(out, "probe-behaviour", cfg)
    summary = {"n": 0, "task": cfg.task, "verdict": verdict, "memory": {"verdict": verdict},
               "perception": {"verdict": verdict}, "pruning": {"verdict": verdict}, "correction": {"verdict": verdict}}
    return run.finish(summary, f"Behaviours on {cfg.task}: {verdict}.")


def run_behaviour(den: Any, cfg: ProbeConfig, out: str, *, progress: bool = True, traced: Traced | None = None,
                  ray_address: str | None = None, num_workers: int | None = None, hold: int = HOLD) -> dict[str, Any]:
    """`traced`: the samples already traced with `cfg` (e.g. by the CoS probe), to reuse."""
    if (verdict := unknown_task(den, cfg.task)) is not None:
        return not_measurable(cfg, out, verdict)
    run = ProbeRun(out, "probe-behaviour", cfg)
    if traced is None:
        traced = trace_x0(den, cfg, progress, folder=run.folder, ray_address=ray_address, num_workers=num_workers)
    insts, steps, sigmas, errors = traced
    save_npz(run.root / "behaviour_steps.npz", x0_hat=steps, sigmas=sigmas, seeds=np.array([i.seed for i in insts]))
    summary = analyse(cfg.task, insts, steps, hold=hold) | {"n_errors": len(errors), "errors": errors}
    # flat copies of the headline numbers (the demo and benchmarks/results.py read these)
    p = summary["perception"]
    summary.update({k: p[k] for k in ("scene_settle_step_mean", "action_settle_step_mean", "perception_first_fraction")})
    if "markers_kept_all_steps" in summary["memory"]:
        summary["markers_kept_all_steps"] = summary["memory"]["markers_kept_all_steps"]
    _plots(run, cfg, summary)
    return run.finish(summary, "\n".join(_text(cfg, summary)))


def _ci(r: dict[str, Any]) -> str:
    return f"{r['rate']:.2f} (95% CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}, {r['count']}/{r['n']})"


def _text(cfg: ProbeConfig, s: dict[str, Any]) -> list[str]:
    c, p, m = s["self_correction"], s["perception"], s["memory"]
    text = [f"Behaviours on {s['n']} held-out {cfg.task} {cfg.size}x{cfg.size} instances ({cfg.sampling.steps} steps).",
            f"final solve rate {s['final_solve_rate']:.2f}; wrong at some step and right at the end: {c['corrected']}, "
            f"right at some step and wrong at the end: {c['lost']}",
            f"pruning (superimposed candidates, the right one kept): {_ci(s['pruning'])}",
            f"correction (a committed wrong answer replaced by the right one): {_ci(s['correction'])}",
            f"perception before action: scene settles at step {p['scene_settle_step_mean']:.1f}, action at "
            f"{p['action_settle_step_mean']:.1f}; action minus scene {p['action_minus_scene']:.2f} steps (95% CI "
            f"{p['action_minus_scene_ci95'][0]:.2f}..{p['action_minus_scene_ci95'][1]:.2f}): {p['verdict']}"]
    if m["verdict"] == "measured":
        text.append(f"working memory ({m['what']}): memory {_ci(m['memory'])} against chance {m['over_chance']['chance']:.2f}; "
                    f"copied (never left) {_ci(m['copied'])}")
    elif "markers_kept_all_steps" in m:
        text.append(f"markers kept at every step in {m['markers_kept_all_steps']:.2f} of samples: {m['verdict']}")
    else:
        text.append(f"working memory: {m['verdict']}")
    if "restored_from_conditioning" in m:
        r = m["restored_from_conditioning"]
        text.append(f"restored after being away (read from the conditioning, not memory): {_ci(r['restored'])}; "
                    f"copied (never left) {_ci(r['copied'])}")
    return text


def _plots(run: ProbeRun, cfg: ProbeConfig, s: dict[str, Any]) -> None:
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.5, 3.2))
    ax.plot(s["success_per_step"], label="x0_hat solves the task")
    m = s["memory"]
    if "memory_per_step" in m:
        ax.plot(m["memory_per_step"], label="object back after being away (memory)")
    if "markers_present_per_step" in m:
        ax.plot(m["markers_present_per_step"], ":", label="start+goal kept (copying)")
    ax.set_xlabel("denoising step")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run.figure("behaviour_per_step.png", "Per-step success and memory",
                           "Fraction of samples whose clean estimate at each step already solves the task, and (where the task defines "
                           "one) shows the remembered object back in place; the maze's marker retention is copying."), dpi=110)
    pyplot.close(fig)
    p = s["perception"]
    fig, ax = pyplot.subplots(figsize=(4, 4))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, size=(2, len(p["scene_steps"])))
    ax.scatter(np.array(p["scene_steps"]) + jitter[0], np.array(p["action_steps"]) + jitter[1], alpha=0.5)
    lim = cfg.sampling.steps
    ax.plot([0, lim], [0, lim], "k:")
    ax.set_xlabel("scene settles (step)")
    ax.set_ylabel("action settles (step)")
    ax.set_title(f"action - scene {p['action_minus_scene']:.2f} [{p['action_minus_scene_ci95'][0]:.2f}, "
                 f"{p['action_minus_scene_ci95'][1]:.2f}]", fontsize=8)
    fig.tight_layout()
    fig.savefig(run.figure("perception_vs_action.png", "Perception before action",
                           "Each dot is a sample: when the scene blocks (walls, objects) stop changing vs when the action blocks "
                           "(path, moved object) do; fading candidates on background blocks count as neither. Dots above the "
                           "diagonal: the scene settles first."), dpi=110)
    pyplot.close(fig)
