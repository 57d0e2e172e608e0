"""Score a folder of VBVR-format samples: each sample's video (a model's, or its own ground truth) by its task's scorer.

Each result carries the final-state verdict (the task's scorer, which reads the last frame) and, beside it, the
process score (`steplens.tasks.process`: every frame a legal successor of the one before).

One broken sample (corrupt PNG or mp4, missing meta.json or prompt.txt, unknown task, wrong frame
size, no video) becomes a result with an `error` naming the file and the problem; the rest are still
scored. Means are taken over the samples that were scored; `n_errors` counts the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks.base import TaskInputError
from .tasks.process import process_score
from .tasks.vbvr import FINAL_FRAME, FIRST_FRAME, VIDEO, Sample, SampleError, SampleRef, iter_samples, read_sample

VIDEO_SUFFIXES = (".mp4", ".gif")


@dataclass(frozen=True)
class SampleResult:
    """The verdict for one sample; `error` is set (and success/score are None) when it could not be scored."""

    sample: str
    task: str | None
    success: bool | None = None
    score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    process: dict[str, Any] | None = None  # the process score (steplens.tasks.process): success, score, details

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleResult:
        return cls(d["sample"], d["task"], d.get("success"), d.get("score"), d.get("details", {}), d.get("error"), d.get("process"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"sample": self.sample, "task": self.task, "success": self.success, "score": self.score, "details": self.details}
        if self.process is not None:
            d["process"] = self.process
        if self.error is not None:
            d["error"] = self.error
        return d


@dataclass(frozen=True)
class Tally:
    """Counts and means over a group of results (means over the scored ones; None if none was)."""

    n: int
    n_errors: int
    success: float | None
    score: float | None
    process_success: float | None = None  # over the scored samples that have a process score

    @classmethod
    def of(cls, results: Sequence[SampleResult]) -> Tally:
        ok = [r for r in results if r.error is None]
        return cls(len(results), len(results) - len(ok), _mean([float(bool(r.success)) for r in ok]), _mean([float(r.score or 0.0) for r in ok]),
                   _mean([float(bool(r.process["success"])) for r in ok if r.process is not None]))

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "n_errors": self.n_errors, "success": self.success, "score": self.score, "process_success": self.process_success}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


@dataclass(frozen=True)
class ScoreSummary:
    """All results of a folder, with per-task and overall tallies and the error messages."""

    results: tuple[SampleResult, ...]
    overall: Tally
    per_task: dict[str, Tally]
    errors: tuple[str, ...]

    @property
    def n(self) -> int:
        return self.overall.n

    @property
    def n_errors(self) -> int:
        return self.overall.n_errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (results left out: they are written one per line)."""
        return {**self.overall.to_dict(), "per_task": {k: v.to_dict() for k, v in self.per_task.items()}, "errors": list(self.errors)}


def find_video(ref: SampleRef, videos_dir: Path) -> Path:
    """The model video for a sample: `<rel>.mp4`, `<rel>/`, `<name>.mp4` or `<name>/` under `videos_dir`."""
    tried = []
    for stem in dict.fromkeys((ref.rel, ref.name)):  # rel first: names may repeat across splits/tasks
        for cand in [videos_dir / f"{stem}{s}" for s in VIDEO_SUFFIXES] + [videos_dir / stem]:
            if cand.is_file() or cand.is_dir():
                return cand
            tried.append(cand.relative_to(videos_dir).as_posix())
    raise SampleError(f"{videos_dir}: no video for sample {ref.rel!r} (looked for {', '.join(tried)})")


def score_sample(ref: SampleRef, videos_dir: Path | None = None) -> SampleResult:
    """Score one sample folder; any problem becomes a result with `error` set instead of raising."""
    from .io import read_png, read_video

    task_name: str | None = None
    try:
        sample: Sample = read_sample(ref)
        task, inst = sample.task, sample.inst
        task_name = task.name
        truth = task.render(inst)  # (T, H, W, 3): the frame size every image of the sample must have
        for fname in (FIRST_FRAME, FINAL_FRAME):
            img = read_png(ref.path / fname)
            if img.shape != truth.shape[1:]:
                raise SampleError(f"{ref.path / fname}: size {img.shape[1]}x{img.shape[0]}, expected {truth.shape[2]}x{truth.shape[1]} from meta.json")
        video_path = ref.path / VIDEO if videos_dir is None else find_video(ref, videos_dir)
        frames = read_video(video_path)
        try:
            verdict = task.score(inst, frames)
        except TaskInputError as e:
            raise SampleError(f"{video_path}: {e}") from e
        process = process_score(task, inst, frames).to_dict()
        return SampleResult(ref.rel, task_name, verdict.success, verdict.score, verdict.details, process=process)
    except Exception as e:  # noqa: BLE001 - one broken sample must not stop a benchmark run
        msg = str(e) if isinstance(e, TaskInputError) else f"{ref.path}: {type(e).__name__}: {e}"
        return SampleResult(ref.rel, task_name, error=msg)


def score_folder(
    data_dir: str | Path, videos_dir: str | Path | None = None, *, on_result: Callable[[SampleResult], None] | None = None
) -> ScoreSummary:
    """Score every sample under `data_dir` (its ground truth, or `videos_dir`'s videos); raises if there are none."""
    data_dir = Path(data_dir)
    vdir = None if videos_dir is None else Path(videos_dir)
    if vdir is not None and not vdir.is_dir():
        raise SampleError(f"{vdir}: videos folder not found")
    refs = list(iter_samples(data_dir))
    if not refs:
        raise SampleError(f"{data_dir}: no sample folders found (expected ROOT/<sample>/ or ROOT/<split>/<task>/<sample>/ with {VIDEO}, meta.json, ...)")
    results = []
    for ref in refs:
        r = score_sample(ref, vdir)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return summarize(results)


def summarize(results: Sequence[SampleResult]) -> ScoreSummary:
    """Overall and per-task tallies of `results` (tasks by name; "?" for samples whose task is unknown)."""
    groups: dict[str, list[SampleResult]] = {}
    for r in results:
        groups.setdefault(r.task or "?", []).append(r)
    return ScoreSummary(
        tuple(results),
        Tally.of(results),
        {k: Tally.of(v) for k, v in sorted(groups.items())},
        tuple(r.error for r in results if r.error is not None),
    )
