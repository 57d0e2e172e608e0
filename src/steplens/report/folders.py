"""Run folders as a report sees them: read and validated (every error names the file), never rendered here.

A run folder holds `manifest.json` ({kind, config}), `summary.json` (headline numbers), optional
`summary.txt`, `figures.json` ([{path, title, caption, command}]) and optional
`steps/<sample>/step_NNN.png` (the decoded clean estimate at each step) with `meta.json` ({sigmas}).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import InputError

IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg"}
VIDEO_TYPES = {".mp4", ".webm"}


class ReportError(InputError, RuntimeError):
    """A run folder that cannot be rendered: missing or invalid files, named in the message."""


@dataclass(frozen=True)
class Figure:
    path: Path
    rel: str  # as written in figures.json
    title: str
    caption: str
    command: str
    size: tuple[int, int] | None  # pixels of a raster image; None for video and svg


@dataclass(frozen=True)
class Sample:
    id: str
    frames: tuple[Path, ...]  # steps/<id>/step_NNN.png in step order
    sigmas: tuple[float, ...]


@dataclass(frozen=True)
class Run:
    folder: Path
    kind: str
    config: dict[str, Any]
    summary: dict[str, Any]
    text: str  # summary.txt
    figures: tuple[Figure, ...]
    samples: tuple[Sample, ...]


def read_json(path: Path, default: Any = ...) -> Any:
    """JSON from `path`; a missing file returns `default` if given, else (like invalid JSON) raises ReportError."""
    if not path.is_file():
        if default is not ...:
            return default
        raise ReportError(f"{path}: missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: invalid JSON ({e})") from None


def is_run(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def sub_runs(folder: Path) -> list[Path]:
    """Run folders directly inside `folder`, by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and is_run(p)), key=lambda p: p.name)


def _inside(folder: Path, rel: str, what: Path) -> Path:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts or "\\" in rel or "\x00" in rel:
        raise ReportError(f"{what}: path {rel!r} must be relative and inside {folder}")
    return folder / rel


def image_size(path: Path, what: Path) -> tuple[int, int] | None:
    if path.suffix.lower() not in IMAGE_TYPES - {".svg"}:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise ReportError(f"{what}: {path.name} is not a readable image ({e})") from None


def _figures(folder: Path) -> tuple[Figure, ...]:
    where = folder / "figures.json"
    raw = read_json(where, [])
    if not isinstance(raw, list):
        raise ReportError(f"{where}: expected a list of figures, got {type(raw).__name__}")
    out = []
    for k, f in enumerate(raw):
        if not isinstance(f, dict) or not isinstance(f.get("path"), str):
            raise ReportError(f"{where}: figure {k} needs a 'path' string")
        path = _inside(folder, f["path"], where)
        if not path.is_file():
            raise ReportError(f"{where}: figure file {f['path']!r} is missing")
        if path.suffix.lower() not in IMAGE_TYPES | VIDEO_TYPES:
            raise ReportError(f"{where}: figure {f['path']!r} is not an image or video "
                              f"({', '.join(sorted(IMAGE_TYPES | VIDEO_TYPES))})")
        out.append(Figure(path, f["path"], str(f.get("title") or f["path"]), str(f.get("caption") or ""),
                          str(f.get("command") or ""), image_size(path, where)))
    return tuple(out)


def _step_number(p: Path) -> int:
    m = re.fullmatch(r"step_(\d+)\.png", p.name)
    return int(m.group(1)) if m else -1


def _samples(folder: Path) -> tuple[Sample, ...]:
    steps = folder / "steps"
    if not steps.is_dir():
        return ()
    out = []
    for d in sorted((p for p in steps.iterdir() if p.is_dir()), key=lambda p: p.name):
        frames = sorted((p for p in d.glob("step_*.png") if _step_number(p) >= 0), key=_step_number)
        if not frames:
            continue
        meta = read_json(d / "meta.json", {})
        sig = meta.get("sigmas", []) if isinstance(meta, dict) else None
        if not isinstance(sig, list) or not all(is_num(s) or s is None for s in sig):
            raise ReportError(f"{d / 'meta.json'}: 'sigmas' must be a list of numbers")
        out.append(Sample(d.name, tuple(frames), tuple(sig)))
    return tuple(out)


def load_run(folder: str | Path) -> Run:
    """Everything a report shows about one run folder, validated; errors name the file."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json")
    if not isinstance(manifest, dict):
        raise ReportError(f"{folder / 'manifest.json'}: expected an object with 'kind' and 'config'")
    summary = read_json(folder / "summary.json", {})
    if not isinstance(summary, dict):
        raise ReportError(f"{folder / 'summary.json'}: expected an object of headline numbers")
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    text = (folder / "summary.txt").read_text(encoding="utf-8", errors="replace") if (folder / "summary.txt").is_file() else ""
    return Run(folder, str(manifest.get("kind", "run")), config, summary, text, _figures(folder), _samples(folder))


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def describe_instances(inst: dict[str, Any]) -> str:
    """A run's fixed instance list (manifest `config.instances`) in words: how many, how chosen, what the walk skipped."""
    seeds = inst.get("seeds") or []
    seen = inst.get("seen_in_training") or []
    words = [f"{len(seeds)} instances" + (f", seeds {seeds[0]}..{seeds[-1]}" if seeds else "")]
    if inst.get("held_out") == "content":
        words.append("held out by content")
    for key, what in (("n_skipped_seen", "skipped as seen in training"), ("n_skipped_duplicate", "skipped as repeats")):
        if inst.get(key):
            words.append(f"{inst[key]} {what}")
    if seen:
        words.append(f"{len(seen)} seen in training (allowed)")
    return "; ".join(words)
