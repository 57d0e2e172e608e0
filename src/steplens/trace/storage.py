"""Saved traces: the on-disk format, and `Trace`, a run's config, step events and reduced captures.

On-disk format `steplens-trace-v1`, a folder written atomically (temporary folder, then rename):
    manifest.json        {"format": "steplens-trace-v1", "version": 1, "steplens_version", "config",
                          "events": {key: {"shape", "dtype"}}, "captures": {key: {"shape", "dtype"}}, "docs"}
    events.safetensors   per-step tensors stacked over the S recorded steps:
                           step (S,) int64, sigma (S,), sigma_next (S,);
                           x, velocity, x0_hat, x_next (S, B, C, F, H, W) as requested;
                           velocity/{branch} (S, B, C, F, H, W) per CFG branch when present
    captures.safetensors "s{step}/blocks.{layer}.{site}/{branch}/{reducer}" -> reduced tensor
                          (float32, or float16 when the plan says so)
`Trace.load` needs no model. Analysis lives in pure functions elsewhere, never on `Trace`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..config import InputError, to_json
from .reducers import REDUCER_DOCS

FORMAT = "steplens-trace-v1"
VERSION = 1
EVENT_FIELDS = ("x", "velocity", "x0_hat", "x_next")
EVENT_DOCS = {
    "step": "(S,) int64: the step number of each recorded event",
    "sigma": "(S,) noise level the step started from",
    "sigma_next": "(S,) noise level the step ends at",
    "x": "(S, B, C, F, H, W) latent at the start of the step",
    "velocity": "(S, B, C, F, H, W) model velocity after CFG",
    "x0_hat": "(S, B, C, F, H, W) clean estimate x - sigma * velocity (first frame re-imposed for image-to-video)",
    "x_next": "(S, B, C, F, H, W) latent leaving the step (after any replacement by an earlier callback)",
    "velocity/{branch}": "(S, B, C, F, H, W) velocity of one CFG branch",
}


class TraceError(InputError, RuntimeError):
    """A trace folder that is missing, corrupt or of another format."""



class CacheKey(NamedTuple):
    step: int
    layer: int
    site: str
    branch: str


class Cache(dict[CacheKey, dict[str, Tensor]]):
    """(step, layer, site, branch) -> {reducer: tensor}. Storage only: analysis lives in pure functions."""

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for slot in self.values() for t in slot.values())


def capture_key(key: CacheKey, reducer: str) -> str:
    """The flat key a capture is saved under: s{step}/blocks.{layer}.{site}/{branch}/{reducer}."""
    return f"s{key.step}/blocks.{key.layer}.{key.site}/{key.branch}/{reducer}"


def parse_capture_key(flat: str) -> tuple[CacheKey, str]:
    try:
        s, point, branch, reducer = flat.split("/")
        blocks, layer, site = point.split(".", 2)
        if not s.startswith("s") or blocks != "blocks":
            raise ValueError
        return CacheKey(int(s[1:]), int(layer), site, branch), reducer
    except ValueError:
        raise TraceError(f"malformed capture key {flat!r} (expected s{{step}}/blocks.{{layer}}.{{site}}/{{branch}}/{{reducer}})") from None


def _layout(tensors: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in sorted(tensors.items())}


@dataclass
class Trace:
    """A run's config dict, its per-step events (stacked) and its reduced captures. Storage and access only."""

    config: dict[str, Any]
    events: dict[str, Tensor]  # step/sigma/sigma_next (S,), field -> (S, B, ...)
    captures: Cache

    def get(self, step: int, layer: int, site: str, branch: str, reducer: str) -> Tensor:
        """The capture of one (step, layer, site, branch) and reducer."""
        try:
            return self.captures[CacheKey(step, layer, site, branch)][reducer]
        except KeyError:
            raise KeyError(f"nothing captured at step {step}, blocks.{layer}.{site}, branch {branch!r}, reducer {reducer!r}") from None

    def steps(self, layer: int, site: str, reducer: str, branch: str = "main") -> list[int]:
        """The steps at which (layer, site, branch) has `reducer`, ascending."""
        return sorted(k.step for k, slot in self.captures.items()
                      if (k.layer, k.site, k.branch) == (layer, site, branch) and reducer in slot)

    def stack(self, layer: int, site: str, reducer: str, branch: str = "main") -> Tensor:
        """(S', ...) one point's captures over its captured steps (ascending; see `steps`)."""
        steps = self.steps(layer, site, reducer, branch)
        if not steps:
            raise KeyError(f"nothing captured at blocks.{layer}.{site}, branch {branch!r}, reducer {reducer!r}")
        return torch.stack([self.captures[CacheKey(s, layer, site, branch)][reducer] for s in steps])

    def keys(self) -> list[str]:
        """Flat capture keys, as saved."""
        return sorted(capture_key(k, r) for k, slot in self.captures.items() for r in slot)

    def save(self, path: str | Path) -> Path:
        """Write the trace folder atomically: build beside `path`, then rename over it."""
        from safetensors.torch import save_file

        from .. import __version__

        path = Path(path)
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / "manifest.json").exists())):
            raise TraceError(f"{path}: exists and is not a trace folder; refusing to replace it")
        flat: dict[str, Tensor] = {}
        for k, slot in self.captures.items():
            for r, t in slot.items():
                if "/" in f"{k.site}{k.branch}{r}":
                    raise TraceError(f"capture names may not contain '/': {k}, {r}")
                flat[capture_key(k, r)] = t.detach().cpu().contiguous()
        events = {k: v.detach().cpu().contiguous() for k, v in self.events.items()}
        manifest = {"format": FORMAT, "version": VERSION, "steplens_version": __version__, "config": self.config,
                    "events": _layout(events), "captures": _layout(flat),
                    "docs": {"events": EVENT_DOCS, "captures": "s{step}/blocks.{layer}.{site}/{branch}/{reducer}",
                             "reducers": REDUCER_DOCS}}
        text = to_json(manifest, indent=1) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp.", dir=path.parent))
        old = None
        try:
            save_file(events, str(tmp / "events.safetensors"), metadata={"format": FORMAT})
            save_file(flat, str(tmp / "captures.safetensors"), metadata={"format": FORMAT})
            (tmp / "manifest.json").write_text(text)  # last: a folder with a manifest is complete
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
                path.rename(old / path.name)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and not path.exists():
                (old / path.name).rename(path)  # put the previous trace back
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        return path

    @staticmethod
    def load(path: str | Path) -> Trace:
        """Read a trace folder (no model needed); a missing or corrupt part raises TraceError naming it."""
        from safetensors.torch import load_file

        path = Path(path)
        mf = path / "manifest.json"
        if not path.is_dir():
            raise TraceError(f"{path}: no such trace folder")
        try:
            manifest = json.loads(mf.read_text())
        except FileNotFoundError:
            raise TraceError(f"{mf}: missing trace manifest") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TraceError(f"{mf}: unreadable trace manifest ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise TraceError(f"{mf}: not a {FORMAT} trace manifest (format {got!r})")
        if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
            raise TraceError(f"{mf}: trace version {manifest.get('version')!r}; this steplens reads up to {VERSION}")
        for part in ("config", "events", "captures"):
            if not isinstance(manifest.get(part), dict):
                raise TraceError(f"{mf}: corrupt trace manifest (no {part!r} object)")
        tensors: dict[str, dict[str, Tensor]] = {}
        for part in ("events", "captures"):
            f = path / f"{part}.safetensors"
            if not f.is_file():
                raise TraceError(f"{f}: missing (the manifest lists {len(manifest[part])} {part} tensors)")
            try:
                tensors[part] = load_file(str(f))
            except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
                raise TraceError(f"{f}: unreadable ({type(e).__name__}: {e})") from None
            listed = manifest[part]
            if set(tensors[part]) != set(listed):
                diff = sorted(set(listed) ^ set(tensors[part]))
                raise TraceError(f"{f}: does not match {mf}: keys differ ({', '.join(diff[:4])}{', ...' if len(diff) > 4 else ''})")
            for k, t in tensors[part].items():
                if list(t.shape) != listed[k].get("shape"):
                    raise TraceError(f"{f}: {k} has shape {list(t.shape)}, the manifest says {listed[k].get('shape')}")
        caps = Cache()
        for flat, t in tensors["captures"].items():
            key, red = parse_capture_key(flat)
            caps.setdefault(key, {})[red] = t
        return Trace(manifest["config"], tensors["events"], caps)


def describe(trace: Trace) -> str:
    """Human summary of what a trace holds."""
    lines = ["events: " + (", ".join(f"{k} {tuple(v.shape)}" for k, v in trace.events.items()) or "none")]
    by_point: dict[tuple[int, str, str, str], list[int]] = {}
    for k, slot in trace.captures.items():
        for r, t in slot.items():
            by_point.setdefault((k.layer, k.site, k.branch, f"{r} {tuple(t.shape)}"), []).append(k.step)
    for (layer, site, branch, red), steps in sorted(by_point.items()):
        lines.append(f"{f'blocks.{layer}.{site}':24s} {branch:6s} {red:22s} steps {min(steps)}..{max(steps)} ({len(steps)})")
    return "\n".join(lines)

