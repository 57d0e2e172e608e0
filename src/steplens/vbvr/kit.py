"""Scoring an output root in the official VBVR-Bench layout: steplens' own scorers, or the official kit.

An output root holds one method's videos as `OUT/<split>/<task>/<index>.mp4`; the ground truth is the
official `GT/<split>/<task>/<index>/`. A `Scorer` turns both into one `BenchScore` per ground-truth
sample. Two implementations:
- `SteplensScorer`: steplens' rule-based task scorers, for `steplens-<task>` samples (which carry
  meta.json); official tasks are `not_covered` (no steplens scorer exists for them).
- `EvalKitScorer`: runs a user-installed copy of VBVR-EvalKit (never a steplens dependency) in a
  subprocess and reads its per-sample results back. Its entry points score differently:
  `run_evaluation.py` keeps the task-specific score only; `evaluate.py` a weighted mix of first frame
  0.15, final frame 0.35, temporal smoothness 0.15, visual quality 0.10 and task score 0.25. Which one
  produced a number is recorded with it. steplens' own tasks are never handed to the kit.
Missing videos: the kit only sees the videos that exist, so its own means leave missing ones out.
Here every ground-truth sample a scorer covers counts: a missing video scores 0 and is listed; the
kit's own means (`kit_reported`: In_Domain, Out_of_Domain and its headline `overall`) are kept beside ours.
No ground truth: the kit runs in its own folder and, finding no ground truth, scores with defaults
without a word (`evaluate.py`: first frame 0.5, final frame 0; `run_evaluation.py` leaves no trace). So
every path it gets is absolute, the ground truth of each sample is checked before it runs, and a sample
that `evaluate.py` still scored without ground truth is an error (every sample: a KitError), never a score.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import ConfigError
from ..stats import bootstrap_mean
from ..tasks.vbvr import BenchRef

ENTRY_POINTS = {"run_evaluation": "run_evaluation.py", "evaluate": "evaluate.py"}
CONVENTIONS = {
    "run_evaluation": "task_specific: the task-specific score only (run_evaluation.py)",
    "evaluate": "weighted: 0.15 first frame + 0.35 final frame + 0.15 temporal smoothness + 0.10 visual quality + 0.25 task score (evaluate.py)",
}
KIT_WEIGHTS = {"first_frame_consistency": 0.15, "final_frame_accuracy": 0.35, "temporal_smoothness": 0.15,
               "visual_quality": 0.10, "task_specific": 0.25}
MISSING_POLICY = "a missing video scores 0 and is listed under `missing` (the kit's own means leave it out: see kit_reported)"
STATUSES = ("scored", "missing", "error", "not_covered")
SCORERS = ("steplens", "vbvr-evalkit")
GT_FILES = ("first_frame.png", "final_frame.png", "ground_truth.mp4")  # what the kit reads of a ground-truth sample
NO_GT_DIMENSIONS = {"first_frame_consistency": 0.5, "final_frame_accuracy": 0.0}  # evaluate.py's defaults without ground truth
KIT_SPLITS = ("In_Domain", "Out_of_Domain", "overall")  # the kit's own means; `overall` is its headline figure


class KitError(RuntimeError):
    """The official kit could not be run, or its results could not be read."""


@dataclass(frozen=True)
class BenchScore:
    """One ground-truth sample's verdict under one scorer.

    status: scored; missing (no video: score 0); error (video unreadable or the scorer failed on it:
    score 0); not_covered (this scorer has no rule for the task: score None, left out of every mean).
    """

    split: str
    task: str
    index: str
    status: str
    score: float | None
    category: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"split": self.split, "task": self.task, "index": self.index, "status": self.status, "score": self.score,
             "category": self.category, "details": self.details}
        if self.message:
            d["message"] = self.message
        return d


class Scorer(Protocol):
    """Scores one method's output root against the ground truth, one BenchScore per ref (in order)."""

    name: str
    key: str  # unique per convention: names the summary entry and the score files

    def describe(self) -> dict[str, Any]:
        """What produced the numbers: scorer, entry point, convention, missing-video policy."""
        ...

    def score(self, gt_root: Path, out_root: Path, refs: Sequence[BenchRef], work: Path) -> list[BenchScore]:
        """`work`: a folder the scorer may keep its raw outputs in (for audit)."""
        ...


def _base(ref: BenchRef, status: str, score: float | None, **kw: Any) -> BenchScore:
    return BenchScore(ref.split, ref.task, ref.index, status, score, **kw)


# -- steplens' own scorers -------------------------------------------------------------------------
class SteplensScorer:
    """steplens' task scorers on `steplens-<task>` samples; official tasks are not covered."""

    name = "steplens"
    key = "steplens"  # names its summaries and score files

    def describe(self) -> dict[str, Any]:
        return {"scorer": self.name, "entry_point": "steplens Task.score", "convention": "steplens: the task's rule-based score of the video",
                "covers": "steplens-<task> samples (with meta.json)", "missing": MISSING_POLICY}

    def score(self, gt_root: Path, out_root: Path, refs: Sequence[BenchRef], work: Path) -> list[BenchScore]:
        from ..io import read_video
        from ..tasks import TaskInputError
        from ..tasks.vbvr import bench_instance

        out = []
        for ref in refs:
            if ref.steplens_task is None:
                out.append(_base(ref, "not_covered", None, message="no steplens scorer for an official task"))
                continue
            video = out_root / ref.video_rel
            if not video.is_file():
                out.append(_base(ref, "missing", 0.0, category="steplens", message=f"{video}: no video"))
                continue
            try:
                s = bench_instance(ref)
                verdict = s.task.score(s.inst, read_video(video))
            except Exception as e:  # noqa: BLE001 - one broken sample must not stop the scoring
                msg = str(e) if isinstance(e, TaskInputError) else f"{video}: {type(e).__name__}: {e}"
                out.append(_base(ref, "error", 0.0, category="steplens", message=msg))
                continue
            out.append(_base(ref, "scored", float(verdict.score), category="steplens",
                             details={"success": bool(verdict.success), **verdict.details}))
        return out


# -- the official kit ------------------------------------------------------------------------------
def _git_commit(path: Path) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


class EvalKitScorer:
    """A user-installed VBVR-EvalKit checkout (`kit`), run as `python <kit>/<entry>.py ...` in a subprocess.

    `python`: the interpreter with the kit's dependencies (default: this one, or $STEPLENS_EVALKIT_PYTHON).
    """

    name = "vbvr-evalkit"

    def __init__(self, kit: str | Path, entry: str = "run_evaluation", *, device: str = "cpu", python: str | None = None,
                 timeout_s: float | None = None):
        self.kit = Path(kit).expanduser().resolve()
        if entry not in ENTRY_POINTS:
            raise ConfigError(f"unknown kit entry point {entry!r}; choose from {list(ENTRY_POINTS)}")
        self.entry, self.device, self.timeout_s = entry, device, timeout_s
        self.key = f"{self.name}.{entry}"  # one summary per convention
        self.script = self.kit / ENTRY_POINTS[entry]
        if not self.kit.is_dir():
            raise ConfigError(f"{kit}: no such folder (--evalkit: a VBVR-EvalKit checkout)")
        if not self.script.is_file():
            raise ConfigError(f"{self.kit}: no {ENTRY_POINTS[entry]} (is --evalkit a VBVR-EvalKit checkout?)")
        self.python = interpreter(python or os.environ.get("STEPLENS_EVALKIT_PYTHON") or sys.executable)
        self.kit_reported: dict[str, Any] = {}  # the kit's own means of the last `score` call (missing videos left out)

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"scorer": self.name, "kit": str(self.kit), "kit_commit": _git_commit(self.kit),
                             "entry_point": ENTRY_POINTS[self.entry], "convention": CONVENTIONS[self.entry],
                             "covers": "official tasks (steplens-<task> folders are never handed to the kit)", "missing": MISSING_POLICY}
        if self.entry == "evaluate":
            d["weights"] = dict(KIT_WEIGHTS)
        return d

    def _run(self, args: list[str], log: Path) -> None:
        cmd = [self.python, str(self.script), *args]
        try:
            r = subprocess.run(cmd, cwd=self.kit, capture_output=True, text=True, timeout=self.timeout_s,
                               env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # leave the user's checkout as it is
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KitError(f"{self.script}: could not run ({e})") from None
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}\n--- exit {r.returncode}\n", encoding="utf-8")
        if r.returncode != 0:
            tail = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
            raise KitError(f"{ENTRY_POINTS[self.entry]} exited {r.returncode}: {tail} (full log: {log})")

    def score(self, gt_root: Path, out_root: Path, refs: Sequence[BenchRef], work: Path) -> list[BenchScore]:
        # the kit runs in its own folder: a relative path would be read against it (and miss the ground truth)
        gt_root, out_root, work = absolute(gt_root), absolute(out_root), absolute(work)
        official = [r for r in refs if r.steplens_task is None]
        rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        categories: dict[str, str] = {}
        self.kit_reported = {}
        present = [r for r in official if (out_root / r.video_rel).is_file()]
        if present:
            no_gt = [r.rel for r in present if not any((gt_root / r.rel / f).is_file() for f in GT_FILES)]
            if no_gt:
                raise KitError(f"{gt_root}: no ground truth ({', '.join(GT_FILES)}) for {len(no_gt)} of {len(present)} samples, first "
                               f"{no_gt[0]}; the kit would score them with its no-ground-truth defaults")
            work.mkdir(parents=True, exist_ok=True)
            if self.entry == "run_evaluation":
                rows, categories = self._run_evaluation(gt_root, out_root, work)
            else:
                rows, categories = self._evaluate(gt_root, out_root, work, sorted({r.task for r in present}))
        out = []
        for ref in refs:
            if ref.steplens_task is not None:
                out.append(_base(ref, "not_covered", None, message="a steplens task: the kit has no evaluator for it"))
                continue
            cat = categories.get(ref.task)
            if not (out_root / ref.video_rel).is_file():
                out.append(_base(ref, "missing", 0.0, category=cat, message=f"{out_root / ref.video_rel}: no video"))
                continue
            row = rows.get((ref.split, ref.task, ref.index))
            if row is None:
                out.append(_base(ref, "error", 0.0, category=cat,
                                 message=f"the kit returned no result for {ref.video_rel} (no evaluator for task {ref.task!r}?)"))
                continue
            score = float(row.get("score") or 0.0)
            details = {"dimensions": row.get("dimensions") or {}}
            if row.get("no_gt"):
                out.append(_base(ref, "error", 0.0, category=row.get("category") or cat, details=details,
                                 message=f"kit: scored {ref.video_rel} without ground truth (its defaults {NO_GT_DIMENSIONS})"))
            elif row.get("error"):
                out.append(_base(ref, "error", score, category=row.get("category") or cat, details=details,
                                 message=f"kit: {row['error']}"))
            else:
                out.append(_base(ref, "scored", score, category=row.get("category") or cat, details=details))
        return out

    def _run_evaluation(self, gt_root: Path, out_root: Path, work: Path) -> tuple[dict, dict]:
        """run_evaluation.py --model_path OUT --gt_base GT --output_dir W: W/<basename(OUT)>_vbvr_results.json."""
        self._run(["--model_path", str(out_root), "--gt_base", str(gt_root), "--output_dir", str(work), "--device", self.device],
                  work / "run_evaluation.log")
        data = _load_json(work / f"{out_root.name}_vbvr_results.json")
        rows, cats = {}, {}
        try:
            for s in data["samples"]:
                key = (s["folder"], s["task_name"], Path(s["video_file"]).stem)
                rows[key] = s
                if s.get("category"):
                    cats[s["task_name"]] = s["category"]
            summary = data["summary"]
            self.kit_reported = {k: {"mean_score": summary[k].get("mean_score"), "num_samples": summary[k].get("num_samples")}
                                 for k in KIT_SPLITS if k in summary}
        except (KeyError, TypeError) as e:
            raise KitError(f"{work}: unexpected run_evaluation.py results ({type(e).__name__}: {e})") from None
        return rows, cats

    def _evaluate(self, gt_root: Path, out_root: Path, work: Path, tasks: list[str]) -> tuple[dict, dict]:
        """evaluate.py --videos_path OUT --gt_path GT --output_path W --name N --split all --tasks ...: W/N_eval_results.json.

        One call over both splits, so that the kit's `overall` is its own headline figure; `--tasks` names the official
        tasks only (evaluate.py stops on a task it has no evaluator for, e.g. a steplens-<task> folder)."""
        name = "steplens"
        self._run(["--videos_path", str(out_root), "--gt_path", str(gt_root), "--output_path", str(work), "--name", name,
                   "--split", "all", "--device", self.device, "--tasks", *tasks], work / "evaluate.log")
        data = _load_json(work / f"{name}_eval_results.json")
        rows, cats = {}, {}
        try:
            for s in data["detailed"]:
                video = Path(s["video_path"])
                idx = str(s.get("video_idx") or video.stem)
                dims = s.get("dimensions") or {}
                no_gt = ("gt_frame_count" not in (s.get("details") or {}) and not s.get("error")
                         and all(dims.get(k) == v for k, v in NO_GT_DIMENSIONS.items()))
                rows[(video.parent.parent.name, s["task_name"], idx)] = {**s, "no_gt": no_gt}
            for cat, c in (data.get("by_category") or {}).items():
                for t in c.get("tasks", []):
                    cats[t] = cat
            self.kit_reported = {k: {"mean_score": data[k].get("mean_score"), "num_samples": data[k].get("num_videos")}
                                 for k in KIT_SPLITS if k in data}
        except (KeyError, TypeError, AttributeError) as e:
            raise KitError(f"{work}: unexpected evaluate.py results ({type(e).__name__}: {e})") from None
        if rows and all(r["no_gt"] for r in rows.values()):
            raise KitError(f"evaluate.py scored every sample without ground truth (gt {gt_root}; full log: {work / 'evaluate.log'})")
        return rows, cats


def absolute(path: str | Path) -> Path:
    """`path` made absolute against this process's folder (symlinks kept), as the kit, run in its own folder, needs."""
    return Path(os.path.abspath(Path(path).expanduser()))


def interpreter(python: str) -> str:
    """The kit's interpreter as an absolute path: a path against this folder (a venv's symlink kept), a bare name on PATH."""
    if os.sep in python or (os.altsep and os.altsep in python):
        path = absolute(python)
        if not path.is_file():
            raise ConfigError(f"{python}: no such interpreter for the kit (STEPLENS_EVALKIT_PYTHON?)")
        return str(path)
    found = shutil.which(python)
    if found is None:
        raise ConfigError(f"{python}: no such interpreter on PATH for the kit (STEPLENS_EVALKIT_PYTHON?)")
    return str(absolute(found))


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise KitError(f"{path}: the kit wrote no results file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"{path}: unreadable kit results ({e})") from None


def make_scorers(names: str, *, evalkit: str | None = None, entry: str = "run_evaluation", device: str = "cpu") -> list[Scorer]:
    """Scorers from a comma-separated list of names (steplens, vbvr-evalkit); the kit needs `evalkit`."""
    out: list[Scorer] = []
    for name in [n.strip() for n in names.split(",") if n.strip()] or ["steplens"]:
        if name == "steplens":
            out.append(SteplensScorer())
        elif name == "vbvr-evalkit":
            if not evalkit:
                raise ConfigError("--scorer vbvr-evalkit needs --evalkit PATH (a VBVR-EvalKit checkout)")
            out.append(EvalKitScorer(evalkit, entry, device=device))
        else:
            raise ConfigError(f"unknown scorer {name!r}; choose from {list(SCORERS)}")
    if evalkit and not any(s.name == "vbvr-evalkit" for s in out):
        raise ConfigError("--evalkit is given but --scorer does not name vbvr-evalkit")
    return out


def score_root(gt_root: Path, out_root: Path, refs: Sequence[BenchRef], scorers: Sequence[Scorer],
               work: Callable[[str], Path]) -> dict[str, tuple[list[BenchScore], dict[str, Any]]]:
    """Every scorer on one output root: scorer key -> (its rows, its summary with the kit's own means as `kit_reported`).

    `work(key)`: the folder that scorer keeps its raw outputs in."""
    out = {}
    for sc in scorers:
        rows = sc.score(gt_root, out_root, refs, work(sc.key))
        s = summarize(rows, sc.describe())
        if getattr(sc, "kit_reported", None):
            s["kit_reported"] = dict(sc.kit_reported)
        out[sc.key] = (rows, s)
    return out


# -- summaries ---------------------------------------------------------------------------------------
def tally(rows: Sequence[BenchScore]) -> dict[str, Any]:
    """Counts and the mean score with its bootstrap CI over the covered samples (missing and errors as 0)."""
    counted = [r for r in rows if r.status != "not_covered"]
    mean, lo, hi = bootstrap_mean([float(r.score or 0.0) for r in counted]) if counted else (None, None, None)
    ci = None if mean is None else [lo, hi]
    return {"n": len(counted), "n_scored": sum(r.status == "scored" for r in counted),
            "n_missing": sum(r.status == "missing" for r in counted), "n_errors": sum(r.status == "error" for r in counted),
            "score": mean, "ci95": ci}


def summarize(rows: Sequence[BenchScore], scorer: dict[str, Any]) -> dict[str, Any]:
    """steplens' summary: per task, per split, per category and overall, each with a 95% bootstrap CI."""

    def grouped(key: Any) -> dict[str, Any]:
        groups: dict[str, list[BenchScore]] = {}
        for r in rows:
            if r.status != "not_covered":
                groups.setdefault(key(r) or "?", []).append(r)
        return {k: tally(v) for k, v in sorted(groups.items())}

    skipped = [r for r in rows if r.status == "not_covered"]
    return {"scorer": scorer, "ci": "95% percentile bootstrap over samples (2000 resamples, seed 0)",
            "overall": tally(rows), "per_split": grouped(lambda r: r.split), "per_category": grouped(lambda r: r.category),
            "per_task": grouped(lambda r: r.task),
            "missing": [f"{r.split}/{r.task}/{r.index}" for r in rows if r.status == "missing"],
            "errors": [f"{r.split}/{r.task}/{r.index}: {r.message}" for r in rows if r.status == "error"],
            "not_covered": {"n": len(skipped), "tasks": sorted({r.task for r in skipped})}}


__all__ = ["CONVENTIONS", "ENTRY_POINTS", "KIT_WEIGHTS", "SCORERS", "BenchScore", "EvalKitScorer", "KitError", "Scorer",
           "SteplensScorer", "absolute", "interpreter", "make_scorers", "score_root", "summarize", "tally"]
