"""Traces: step events plus captures reduced as they are recorded, saved in one documented format.

Capture spec strings (CLI `--capture`): `SELECTOR:REDUCER[,REDUCER...][@STEPS]`, several joined by
`;`, e.g. `blocks.*.resid_post:norm,proj16` or `blocks.3.attn_out:full@0-4,10`. Reducers:
    norm    per-token L2 norm             (B, N)
    mean    mean over tokens              (B, D)
    projK   fixed random projection to K  (B, N, K)   same seeded matrix for every point of width D
    pcaK    per-sample PCA over tokens    (B, N, K)
    full    the whole activation          (B, N, D)   only with explicit steps
A plan is checked against a memory budget before sampling; one that would exceed it is refused
with the estimate in the message.

On-disk format `steplens-trace-v1`, a folder:
    manifest.json        {"format", "config", "events": {name: shape}, "captures": [key, ...], "reducers": {...}}
    events.safetensors   sigma (S,), and per requested field (S, B, C, F, H, W): x, x0_hat, velocity
    captures.safetensors keys "s{step}/{point}/{branch}/{reducer}", float32
Loading needs no model.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import ConfigError
from .hooks import hook_points, hooks, select_points
from .sampling import StepEvent

FORMAT = "steplens-trace-v1"
_RED = re.compile(r"^(norm|mean|full|proj\d+|pca\d+)$")


class TraceError(RuntimeError):
    """A trace folder that is missing, corrupt or of another format."""


@dataclass(frozen=True)
class Capture:
    selector: str
    reducers: tuple[str, ...]
    steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for r in self.reducers:
            if not _RED.match(r):
                raise ConfigError(f"unknown reducer {r!r}: use norm, mean, projK, pcaK or full")
        if "full" in self.reducers and self.steps is None:
            raise ConfigError(f"'full' captures need explicit steps ({self.selector}:full@0-3): whole activations at every step are huge")


@dataclass(frozen=True)
class CapturePlan:
    captures: tuple[Capture, ...] = ()
    budget_mb: float = 512.0
    seed: int = 0

    @staticmethod
    def parse(spec: str, budget_mb: float = 512.0) -> CapturePlan:
        caps = []
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            sel, _, rest = part.partition(":")
            if not rest:
                raise ConfigError(f"capture {part!r} needs reducers: SELECTOR:norm,proj16[@steps]")
            reds, _, steps = rest.partition("@")
            caps.append(Capture(sel, tuple(r.strip() for r in reds.split(",") if r.strip()), _parse_steps(steps) if steps else None))
        return CapturePlan(tuple(caps), budget_mb)


def _parse_steps(s: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return tuple(out)


def _reduced_numel(red: str, n: int, d: int) -> int:
    if red == "norm":
        return n
    if red == "mean":
        return d
    if red == "full":
        return n * d
    return n * int(red[4:] if red.startswith("proj") else red[3:])


def estimate_bytes(plan: CapturePlan, denoiser: Any, latent_shape: Sequence[int], batch: int, n_steps: int, *, branches: int = 1) -> int:
    """Bytes the plan will store (float32), from the token grid and the model width."""
    f, h, w = denoiser.token_grid((batch, *latent_shape))
    n, d = f * h * w, denoiser.hidden_dim
    points = hook_points(denoiser)
    total = 0
    for cap in plan.captures:
        k = len(select_points(points, cap.selector))
        steps = n_steps if cap.steps is None else len([s for s in cap.steps if s < n_steps])
        total += k * steps * branches * batch * sum(_reduced_numel(r, n, d) for r in cap.reducers) * 4
    return total


def reduce(t: Tensor, red: str, proj: dict[tuple[int, int], Tensor], seed: int) -> Tensor:
    """One reducer applied to (B, N, D) tokens."""
    t = t.detach().float()
    if red == "norm":
        return t.norm(dim=-1)
    if red == "mean":
        return t.mean(dim=1)
    if red == "full":
        return t.clone()
    k = int(red[4:] if red.startswith("proj") else red[3:])
    if red.startswith("proj"):
        key = (t.shape[-1], k)
        if key not in proj:
            g = torch.Generator().manual_seed(seed * 7919 + t.shape[-1] * 31 + k)
            proj[key] = (torch.randn(t.shape[-1], k, generator=g) / k**0.5).to(t.device)
        return t @ proj[key]
    x = t - t.mean(dim=1, keepdim=True)  # pcaK: per-sample principal components over tokens
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return x @ v[:, :k].transpose(1, 2)


class Recorder:
    """Observe-only hooks for a plan; stores reduced tensors on the CPU keyed (step, point, branch)."""

    def __init__(self, denoiser: Any, plan: CapturePlan):
        self.den, self.plan = denoiser, plan
        self.cache: dict[tuple[int, str, str], dict[str, Tensor]] = {}
        self._proj: dict[tuple[int, int], Tensor] = {}

    def __enter__(self) -> Recorder:
        mapping = []
        for cap in self.plan.captures:
            steps = None if cap.steps is None else set(cap.steps)

            def fn(t: Tensor, *, point, cap=cap, steps=steps) -> None:
                if point.phase != "main" or (steps is not None and point.step not in steps):
                    return
                slot = self.cache.setdefault((point.step, point.name, point.branch), {})
                for r in cap.reducers:
                    slot[r] = reduce(t, r, self._proj, self.plan.seed).cpu()

            mapping.append((cap.selector, fn))
        self._ctx = hooks(self.den, mapping)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for slot in self.cache.values() for t in slot.values())


@dataclass
class EventRecorder:
    """A step callback keeping sigma and chosen event fields (on the CPU) at every step."""

    fields: tuple[str, ...] = ("x0_hat",)
    sigma: list[float] = field(default_factory=list)
    data: dict[str, list[Tensor]] = field(default_factory=dict)

    def __call__(self, e: StepEvent) -> None:
        self.sigma.append(e.sigma)
        for f in self.fields:
            self.data.setdefault(f, []).append(getattr(e, f).detach().float().cpu())


@dataclass
class Trace:
    config: dict[str, Any]
    events: dict[str, Tensor]  # sigma (S,), field -> (S, B, ...)
    captures: dict[tuple[int, str, str], dict[str, Tensor]]

    @staticmethod
    def from_recorders(config: dict[str, Any], ev: EventRecorder, rec: Recorder | None) -> Trace:
        events = {"sigma": torch.tensor(ev.sigma)} | {k: torch.stack(v) for k, v in ev.data.items()}
        return Trace(config, events, rec.cache if rec else {})

    def get(self, step: int, point: str, reducer: str, branch: str = "main") -> Tensor:
        try:
            return self.captures[(step, point, branch)][reducer]
        except KeyError:
            raise KeyError(f"nothing captured at step {step}, {point}, branch {branch}, reducer {reducer}") from None

    def stack(self, point: str, reducer: str, branch: str = "main") -> Tensor:
        """(S', ...) over the captured steps of one point."""
        steps = sorted(s for s, p, b in self.captures if p == point and b == branch)
        return torch.stack([self.captures[(s, point, branch)][reducer] for s in steps])

    def keys(self) -> list[str]:
        return sorted(f"s{s}/{p}/{b}/{r}" for (s, p, b), slot in self.captures.items() for r in slot)

    def save(self, path: str | Path) -> Path:
        """Write atomically: build in a temporary folder beside `path`, then rename."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            save_file({k: v.contiguous() for k, v in self.events.items()}, str(tmp / "events.safetensors"))
            flat = {f"s{s}/{p}/{b}/{r}": t.contiguous() for (s, p, b), slot in self.captures.items() for r, t in slot.items()}
            save_file(flat, str(tmp / "captures.safetensors"))
            manifest = {"format": FORMAT, "config": self.config, "events": {k: list(v.shape) for k, v in self.events.items()},
                        "captures": sorted(flat), "shapes": {k: list(v.shape) for k, v in flat.items()}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n")
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @staticmethod
    def load(path: str | Path) -> Trace:
        from safetensors.torch import load_file

        path = Path(path)
        mf = path / "manifest.json"
        try:
            manifest = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TraceError(f"{mf}: unreadable trace manifest ({e})") from None
        if manifest.get("format") != FORMAT:
            raise TraceError(f"{mf}: not a {FORMAT} trace (format {manifest.get('format')!r})")
        tensors = {}
        for name in ("events.safetensors", "captures.safetensors"):
            try:
                tensors[name] = load_file(str(path / name))
            except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
                raise TraceError(f"{path / name}: unreadable ({type(e).__name__}: {e})") from None
        caps: dict[tuple[int, str, str], dict[str, Tensor]] = {}
        for key, t in tensors["captures.safetensors"].items():
            s, point, branch, red = key.split("/")
            caps.setdefault((int(s[1:]), point, branch), {})[red] = t
        return Trace(manifest["config"], tensors["events.safetensors"], caps)


def describe(trace: Trace) -> str:
    """Human summary of what a trace holds."""
    lines = ["events: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in trace.events.items())]
    by_point: dict[tuple[str, str, str], list[int]] = {}
    for (s, p, b), slot in trace.captures.items():
        for r, t in slot.items():
            by_point.setdefault((p, b, f"{r} {tuple(t.shape)}"), []).append(s)
    for (p, b, r), steps in sorted(by_point.items(), key=lambda kv: (int(kv[0][0].split(".")[1]) if kv[0][0].startswith("blocks.") else 0, kv[0])):
        lines.append(f"{p:24s} {b:6s} {r:22s} steps {min(steps)}..{max(steps)} ({len(steps)})")
    return "\n".join(lines)


def record(denoiser: Any, batch: Any, seeds: Sequence[int], sampling: Any, plan: CapturePlan, *,
           fields: tuple[str, ...] = ("x0_hat",), config: dict[str, Any] | None = None) -> Trace:
    """Sample with event tracing and reduced captures; refuses a plan over its budget before sampling."""
    from .runner import generate

    est = estimate_bytes(plan, denoiser, batch.latent_shape, len(seeds), sampling.steps)
    if est > plan.budget_mb * 2**20:
        raise ConfigError(f"capture plan needs about {est / 2**20:.1f} MB, over the {plan.budget_mb:g} MB budget: "
                          "capture fewer points or steps, or use norm/projK reducers")
    ev = EventRecorder(fields)
    if plan.captures:
        with Recorder(denoiser, plan) as rec:
            generate(denoiser, batch, seeds, sampling, callback=ev)
    else:
        rec = None
        generate(denoiser, batch, seeds, sampling, callback=ev)
    return Trace.from_recorders({**(config or {}), "capture_estimate_bytes": est}, ev, rec)
