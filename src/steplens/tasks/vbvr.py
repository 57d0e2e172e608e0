"""VBVR-Bench folder format: one folder per sample with its first and final frame, video, prompt and meta.

A sample folder holds `first_frame.png`, `final_frame.png`, `ground_truth.mp4`, `prompt.txt` and
`meta.json` (`task.to_meta(inst)`: everything the scorer needs to rebuild the instance). We write a
flat layout `ROOT/<task>_<i:05d>/`; `iter_samples` also reads the benchmark's
`ROOT/<split>/<task>/<sample>/` layout. Each sample folder is built under a hidden temporary name and
renamed into place, so a crash never leaves a half-written sample.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import get_task
from .base import Task, TaskInputError

FIRST_FRAME, FINAL_FRAME, VIDEO, PROMPT, META = "first_frame.png", "final_frame.png", "ground_truth.mp4", "prompt.txt", "meta.json"
SAMPLE_FILES = (FIRST_FRAME, FINAL_FRAME, VIDEO, PROMPT, META)
_MAX_DEPTH = 3  # ROOT/<split>/<task>/<sample>


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
        (tmp / META).write_text(json.dumps(task.to_meta(inst), indent=2) + "\n", encoding="utf-8")
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


def generate_set(
    task_name: str, n: int, seed: int, out: str | Path, size: int | None = None, progress: bool = True, *, overwrite: bool = False
) -> list[Path]:
    """Write `n` samples of a task to `out/<task>_<i:05d>/`; sample i uses seed `seed + i`."""
    task = get_task(task_name)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out)
    paths = [out / sample_name(task.name, i) for i in range(n)]
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
