"""VBVR-Bench folder format: one folder per sample with its first and final frame, video, prompt and meta.

A sample folder holds `first_frame.png`, `final_frame.png`, `ground_truth.mp4`, `prompt.txt` and, for
steplens' own tasks, `meta.json` (`task.to_meta(inst)`: everything the scorer needs to rebuild the
instance). Two layouts:
- flat, `ROOT/<task>_<i:05d>/` (steplens' default); `iter_samples` also reads `ROOT/<split>/<task>/<sample>/`;
- the official benchmark's, `ROOT/<split>/<task>/<i:05d>/` with split In-Domain_50 or Out-of-Domain_50
  and no meta.json (`iter_bench`). steplens writes its tasks there as `steplens-<task>` (`generate_set(...,
  layout="vbvr")`), so they never collide with an official task name and both kits read one folder
  (the official kit skips task folders it has no evaluator for).
Each sample folder is built under a hidden temporary name and renamed into place, so a crash never
leaves a half-written sample.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import to_json
from . import get_task
from .base import Task, TaskInputError

FIRST_FRAME, FINAL_FRAME, VIDEO, PROMPT, META = "first_frame.png", "final_frame.png", "ground_truth.mp4", "prompt.txt", "meta.json"
SAMPLE_FILES = (FIRST_FRAME, FINAL_FRAME, VIDEO, PROMPT, META)
_MAX_DEPTH = 3  # ROOT/<split>/<task>/<sample>
SPLITS = ("In-Domain_50", "Out-of-Domain_50")  # the official kit reads these two folders, nothing else
STEPLENS_PREFIX = "steplens-"  # steplens task names in the official layout: never an official generator name
LAYOUTS = ("flat", "vbvr")
_INDEX = re.compile(r"^\d{5}$")


class SampleError(TaskInputError):
    """A sample folder (or the folder of samples) that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class SampleRef:
    """Where a sample folder is: `name` is the folder name, `rel` its path under the root (posix)."""

    name: str
    rel: str
    path: Path


@dataclass(frozen=True)
class Sample:
    """A sample folder read back: the task, the rebuilt instance and the prompt."""

    ref: SampleRef
    task: Task
    inst: Any
    prompt: str


def sample_name(task_name: str, i: int) -> str:
    return f"{task_name}_{i:05d}"


def write_sample(path: str | Path, task: Task, inst: Any, *, overwrite: bool = False) -> Path:
    """Write one sample folder at `path` atomically (built under a temporary name, then renamed)."""
    from ..io import temp_sibling, write_png, write_video

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: sample folder already exists")
    tmp = temp_sibling(path, folder=True)
    try:
        video = task.render(inst)
        write_png(tmp / FIRST_FRAME, video[0])
        write_png(tmp / FINAL_FRAME, video[-1])
        write_video(tmp / VIDEO, video)
        # plain writes inside the temporary folder: the folder's rename is what makes the sample atomic
        (tmp / PROMPT).write_text(task.prompt(inst) + "\n", encoding="utf-8")
        (tmp / META).write_text(to_json(task.to_meta(inst), indent=2) + "\n", encoding="utf-8")
        if path.exists():  # overwrite: a non-empty folder cannot be replaced in one rename, so move it aside first
            old = temp_sibling(path, folder=True)
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def bench_task_name(task_name: str) -> str:
    """A steplens task's folder name in the official layout (`maze` -> `steplens-maze`)."""
    return STEPLENS_PREFIX + task_name


def generate_set(
    task_name: str, n: int, seed: int, out: str | Path, size: int | None = None, progress: bool = True, *, overwrite: bool = False,
    layout: str = "flat", split: str = SPLITS[0],
) -> list[Path]:
    """Write `n` samples of a task; sample i uses seed `seed + i`.

    layout "flat": `out/<task>_<i:05d>/`; "vbvr": the official `out/<split>/steplens-<task>/<i:05d>/`.
    """
    task = get_task(task_name)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {list(LAYOUTS)}")
    if layout == "vbvr" and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the official kit reads only {', '.join(SPLITS)}")
    out = Path(out)
    if layout == "flat":
        paths = [out / sample_name(task.name, i) for i in range(n)]
    else:
        paths = [out / split / bench_task_name(task.name) / f"{i:05d}" for i in range(n)]
    if not overwrite:  # fail before writing anything, not after half the set
        clash = [p for p in paths if p.exists()]
        if clash:
            raise FileExistsError(f"{clash[0]}: sample folder already exists ({len(clash)} of {n} clash; overwrite to replace them)")
    first = task.generate(seed, size)  # a bad size fails here, before the progress bar and any file
    from rich.console import Console
    from rich.progress import Progress

    # stderr keeps stdout clean for pipelines; a `with` block (not `track`) closes the bar even on error
    with Progress(console=Console(stderr=True), disable=not progress) as bar:
        job = bar.add_task(f"writing {n} {task.name} samples", total=n)
        for i in range(n):
            paths[i].parent.mkdir(parents=True, exist_ok=True)
            write_sample(paths[i], task, first if i == 0 else task.generate(seed + i, size), overwrite=overwrite)
            bar.advance(job)
    return paths


def _is_sample_dir(path: Path) -> bool:
    return any((path / f).exists() for f in SAMPLE_FILES)


def iter_samples(root: str | Path) -> Iterator[SampleRef]:
    """Sample folders under `root`, flat (`ROOT/<sample>/`) or benchmark (`ROOT/<split>/<task>/<sample>/`), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise SampleError(f"{root}: no such folder")

    def walk(d: Path, depth: int) -> Iterator[SampleRef]:
        for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):  # hidden: temp folders
            if _is_sample_dir(sub):
                yield SampleRef(sub.name, sub.relative_to(root).as_posix(), sub)
            elif depth < _MAX_DEPTH:
                yield from walk(sub, depth + 1)

    if _is_sample_dir(root):  # the root itself is one sample
        yield SampleRef(root.name, ".", root)
        return
    yield from walk(root, 1)


def read_sample(ref: SampleRef) -> Sample:
    """Load a sample's meta and prompt and rebuild its instance; any problem raises naming the file."""
    meta_path, prompt_path = ref.path / META, ref.path / PROMPT
    if not meta_path.is_file():
        raise SampleError(f"{meta_path}: missing (cannot score a sample without its meta.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SampleError(f"{meta_path}: invalid JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("task"), str):
        raise SampleError(f"{meta_path}: expected a JSON object with a 'task' name")
    try:
        task = get_task(meta["task"])
        inst = task.from_meta(meta)
    except (TaskInputError, TypeError, ValueError) as e:
        raise SampleError(f"{meta_path}: {e}") from e
    if not prompt_path.is_file():
        raise SampleError(f"{prompt_path}: missing")
    try:
        prompt = prompt_path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SampleError(f"{prompt_path}: unreadable ({e})") from e
    return Sample(ref, task, inst, prompt)


# -- the official benchmark layout: ROOT/<split>/<task>/<i:05d>/, no meta.json ----------------------
@dataclass(frozen=True)
class BenchRef:
    """One official-layout sample: `ROOT/<split>/<task>/<index>/`."""

    split: str
    task: str
    index: str  # five digits, as the folder is named
    path: Path

    @property
    def rel(self) -> str:
        return f"{self.split}/{self.task}/{self.index}"

    @property
    def video_rel(self) -> str:
        """Where the kit looks for this sample's model video under an output root."""
        return f"{self.split}/{self.task}/{self.index}.mp4"

    @property
    def key(self) -> str:
        return f"{self.split}__{self.task}__{self.index}"

    @property
    def steplens_task(self) -> str | None:
        """The steplens task name of a `steplens-<task>` folder, else None (an official task)."""
        return self.task[len(STEPLENS_PREFIX):] if self.task.startswith(STEPLENS_PREFIX) else None


def is_bench_root(root: str | Path) -> bool:
    """True if `root` holds an official split folder (In-Domain_50 or Out-of-Domain_50)."""
    return any((Path(root) / s).is_dir() for s in SPLITS)


def iter_bench(root: str | Path, *, splits: tuple[str, ...] | list[str] = (), tasks: tuple[str, ...] | list[str] = ()) -> list[BenchRef]:
    """Samples of an official-layout root, sorted by split, task and index; `splits`/`tasks` filter (empty: all).

    Raises SampleError for an unknown split, a named task found in none of the splits, or no samples.
    """
    root = Path(root)
    if not root.is_dir():
        raise SampleError(f"{root}: no such folder")
    for s in splits:
        if s not in SPLITS:
            raise SampleError(f"unknown split {s!r}; VBVR-Bench splits are {', '.join(SPLITS)}")
    chosen = [s for s in SPLITS if (not splits or s in splits) and (root / s).is_dir()]
    if not chosen:
        want = ", ".join(splits or SPLITS)
        raise SampleError(f"{root}: no split folder ({want}); expected ROOT/<split>/<task>/<00000>/")
    task_dirs = [d for s in chosen for d in sorted((root / s).iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if tasks:
        found = {d.name for d in task_dirs}
        unknown = [t for t in tasks if t not in found]
        if unknown:
            raise SampleError(f"{root}: no task folder {unknown[0]!r} in {', '.join(chosen)} "
                              f"(tasks there: {', '.join(sorted(found)[:8])}{', ...' if len(found) > 8 else ''})")
        task_dirs = [d for d in task_dirs if d.name in tasks]
    refs = [BenchRef(d.parent.name, d.name, i.name, i) for d in task_dirs
            for i in sorted(d.iterdir()) if i.is_dir() and _INDEX.match(i.name)]
    if not refs:
        raise SampleError(f"{root}: no sample folders <split>/<task>/<00000>/ found")
    return refs


def read_prompt(folder: Path) -> str:
    """A sample's prompt.txt, stripped; a missing or unreadable file raises naming it."""
    path = folder / PROMPT
    if not path.is_file():
        raise SampleError(f"{path}: missing")
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SampleError(f"{path}: unreadable ({e})") from e


def bench_instance(ref: BenchRef) -> Sample | None:
    """The steplens instance of a `steplens-<task>` sample (from its meta.json); None for an official task."""
    if ref.steplens_task is None:
        return None
    s = read_sample(SampleRef(ref.index, ref.rel, ref.path))
    if s.task.name != ref.steplens_task:
        raise SampleError(f"{ref.path / META}: task {s.task.name!r}, but the folder is {ref.task!r}")
    return s
