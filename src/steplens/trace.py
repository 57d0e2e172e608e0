"""Traces: step events plus captures reduced as they are recorded, saved in one documented format.

Capture plans. A `Capture` names points (a `steplens.hooks` selector), reducers, and optionally the
steps and tokens to keep. Reducers, applied to (B, N, D) tokens (after the token subset, if any):
    norm    per-token L2 norm             (B, N)
    mean    mean over tokens              (B, D)
    projK   fixed random projection to K  (B, N, K)   Gaussian / sqrt(K), seeded by (plan seed, D, K):
                                                      the same matrix at every point of width D
    pcaK    per-sample PCA over tokens    (B, N, K)   exact (eigh of the smaller Gram matrix), sign-fixed
    full    the whole activation          (B, N, D)   only with explicit steps
Spec strings (CLI `--capture`): `SELECTOR:REDUCER[,REDUCER...][@steps=S][@tokens=T]`, several joined by
`;`, where S and T are comma lists of indices and inclusive ranges (`0-4,10`); a bare `@0-4,10` means
steps. E.g. `blocks.*.resid_post:norm,proj16` or `blocks.3.attn_out:full@steps=0-4,10;blocks.0.mlp_out:mean`.
A plan is checked against its memory budget (`budget_mb`) before sampling (`check_budget`); one that
would exceed it is refused with the estimate in the message, and the `Recorder` stops a run that
goes over anyway. Only main-phase model calls are recorded (Heun's corrector is not).

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
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .config import ConfigError
from .hooks import hook_points, hooks, select_points
from .sampling import StepEvent

FORMAT = "steplens-trace-v1"
VERSION = 1
_RED = re.compile(r"^(norm|mean|full|proj[1-9]\d*|pca[1-9]\d*)$")
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
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
REDUCER_DOCS = {
    "norm": "(B, N) per-token L2 norm", "mean": "(B, D) mean over tokens",
    "projK": "(B, N, K) tokens @ projection(D, K, seed): seeded Gaussian / sqrt(K), one matrix per width",
    "pcaK": "(B, N, K) per-sample PCA scores over tokens, sign fixed so each component's largest |score| is positive",
    "full": "(B, N, D) the whole activation",
}


class TraceError(RuntimeError):
    """A trace folder that is missing, corrupt or of another format."""


class CaptureBudgetError(ConfigError):
    """A capture plan that would store (or has stored) more than its budget."""


# -- plans ----------------------------------------------------------------------------------------
def _indices(s: str, what: str) -> tuple[int, ...]:
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in s.split(","))):
            a, dash, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if dash else [int(a)]
    except ValueError:
        raise ConfigError(f"bad {what} list {s!r}: use indices and ranges like 0-4,10") from None
    if not out:
        raise ConfigError(f"empty {what} list {s!r}")
    return tuple(dict.fromkeys(out))


def _width(red: str) -> int:
    return int(red[4:] if red.startswith("proj") else red[3:])


@dataclass(frozen=True)
class Capture:
    """What to keep at the points a selector matches: reducers, and optionally steps and tokens."""

    selector: str
    reducers: tuple[str, ...]
    steps: tuple[int, ...] | None = None
    tokens: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("reducers", "steps", "tokens"):  # accept lists (e.g. from JSON), store tuples
            v = getattr(self, name)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, name, tuple(v))
        if not self.selector:
            raise ConfigError("a capture needs a selector, e.g. blocks.*.resid_post")
        if not self.reducers:
            raise ConfigError(f"capture {self.selector!r} needs at least one reducer (norm, mean, projK, pcaK, full)")
        for r in self.reducers:
            if not _RED.match(r):
                raise ConfigError(f"unknown reducer {r!r}: use norm, mean, projK, pcaK (K >= 1) or full")
        if len(set(self.reducers)) != len(self.reducers):
            raise ConfigError(f"capture {self.selector!r} repeats a reducer: {self.reducers}")
        if "full" in self.reducers and self.steps is None:
            raise ConfigError(f"'full' captures need explicit steps ({self.selector}:full@steps=0-3): whole activations at every step are huge")
        for name in ("steps", "tokens"):
            v = getattr(self, name)
            if v is not None and (not v or any(int(i) != i or i < 0 for i in v)):
                raise ConfigError(f"capture {self.selector!r}: {name} must be a non-empty list of indices >= 0, got {v}")

    def spec(self) -> str:
        """The spec string this capture parses from."""
        out = f"{self.selector}:{','.join(self.reducers)}"
        if self.steps is not None:
            out += "@steps=" + ",".join(map(str, self.steps))
        if self.tokens is not None:
            out += "@tokens=" + ",".join(map(str, self.tokens))
        return out


@dataclass(frozen=True)
class CapturePlan:
    """Captures, the memory budget they must fit, the projection seed and the stored dtype."""

    captures: tuple[Capture, ...] = ()
    budget_mb: float = 512.0
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.captures, tuple):
            object.__setattr__(self, "captures", tuple(self.captures))
        if not self.budget_mb > 0:
            raise ConfigError(f"budget_mb must be > 0, got {self.budget_mb}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @staticmethod
    def parse(spec: str, budget_mb: float = 512.0, *, seed: int = 0, dtype: str = "float32") -> CapturePlan:
        """A plan from `SELECTOR:REDUCERS[@steps=S][@tokens=T]` specs joined by `;` (empty: no captures)."""
        caps = []
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            sel, _, rest = part.partition(":")
            if not rest.strip():
                raise ConfigError(f"capture {part!r} needs reducers: SELECTOR:norm,proj16[@steps=0-4]")
            reds, *quals = rest.split("@")
            kw: dict[str, tuple[int, ...]] = {}
            for q in quals:
                key, eq, val = q.partition("=")
                key = key.strip() if eq else "steps"
                if key not in ("steps", "tokens") or key in kw:
                    raise ConfigError(f"capture {part!r}: unknown or repeated qualifier {q!r} (use @steps=... and @tokens=...)")
                kw[key] = _indices(val if eq else q, key)
            caps.append(Capture(sel.strip(), tuple(r.strip() for r in reds.split(",") if r.strip()), **kw))
        return CapturePlan(tuple(caps), budget_mb, seed, dtype)

    def spec(self) -> str:
        return ";".join(c.spec() for c in self.captures)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec(), "budget_mb": self.budget_mb, "seed": self.seed, "dtype": self.dtype}


def _reduced_numel(red: str, n: int, d: int) -> int:
    if red == "norm":
        return n
    if red == "mean":
        return d
    if red == "full":
        return n * d
    return n * _width(red)


def estimate_bytes(plan: CapturePlan, denoiser: Any, latent_shape: Sequence[int], batch: int, n_steps: int, *,
                   branches: int = 1, step_experts: Sequence[str | None] | None = None) -> int:
    """Bytes the plan will store, from the token grid, the model width and the captured points.

    Args:
        latent_shape: (C, F, H, W) per sample, or (B, C, F, H, W).
        n_steps: steps sampled (numbered from 0); branches: CFG branches per call (2 with guidance).
        step_experts: the expert that runs at each step (two-expert models): a point on one expert's
            blocks is counted only at that expert's steps.
    Returns:
        the exact number of bytes the `Recorder` stores for such a run.
    """
    shape = tuple(latent_shape)[-4:]
    f, h, w = denoiser.token_grid((batch, *shape))
    n, d = f * h * w, int(denoiser.hidden_dim)
    item = _DTYPES[plan.dtype].itemsize
    points = hook_points(denoiser)
    total = 0
    expert_of = getattr(denoiser, "expert_of_block", None)
    for cap in plan.captures:
        steps = list(range(n_steps)) if cap.steps is None else [s for s in cap.steps if s < n_steps]
        point_steps = 0
        for pt in select_points(points, cap.selector):
            expert = None if expert_of is None or step_experts is None else expert_of(pt.layer)[0]
            point_steps += len(steps) if expert is None else sum(step_experts[s] == expert for s in steps)
        nt = n if cap.tokens is None else len(cap.tokens)
        total += point_steps * branches * batch * sum(_reduced_numel(r, nt, d) for r in cap.reducers) * item
    return total


def check_budget(plan: CapturePlan, denoiser: Any, latent_shape: Sequence[int], batch: int, n_steps: int, *,
                 branches: int = 1, step_experts: Sequence[str | None] | None = None) -> int:
    """The plan's estimate in bytes; raises CaptureBudgetError (with the estimate) when over budget."""
    est = estimate_bytes(plan, denoiser, latent_shape, batch, n_steps, branches=branches, step_experts=step_experts)
    if est > plan.budget_mb * 2**20:
        raise CaptureBudgetError(
            f"capture plan {plan.spec()!r} needs about {est / 2**20:.1f} MB ({est} bytes) for {batch} samples x {n_steps} steps"
            f" x {branches} branch(es), over the {plan.budget_mb:g} MB budget: capture fewer points, steps or tokens, use"
            " norm/mean/projK reducers, or raise the budget")
    return est


# -- reducers -------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _projection(d: int, k: int, seed: int, device: str) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + d * 1009 + k) % 2**63)
    return (torch.randn(d, k, generator=g) / k**0.5).to(device)


def projection(d: int, k: int, seed: int = 0) -> Tensor:
    """(D, K) the fixed random projection `projK` uses for width D (CPU float32, a fresh copy)."""
    return _projection(d, k, seed, "cpu").clone()


def _pca(x: Tensor, k: int) -> Tensor:
    """(B, N, D) -> (B, N, K) per-sample PCA scores, through the smaller of the two Gram matrices."""
    b, n, d = x.shape
    x = x - x.mean(dim=1, keepdim=True)
    kk = min(k, n, d)
    if d <= n:
        _, vecs = torch.linalg.eigh(x.mT @ x)  # (B, D, D), eigenvalues ascending
        scores = x @ vecs[..., -kk:].flip(-1)  # (B, N, kk)
    else:
        vals, vecs = torch.linalg.eigh(x @ x.mT)  # (B, N, N): scores are U * singular values
        scores = vecs[..., -kk:].flip(-1) * vals[..., -kk:].flip(-1).clamp_min(0).sqrt()[:, None, :]
    # eigenvectors have arbitrary signs: make each component's largest |score| positive (deterministic output)
    sgn = scores.gather(1, scores.abs().argmax(dim=1, keepdim=True)).sign()
    scores = scores * torch.where(sgn == 0, torch.ones_like(sgn), sgn)
    if kk < k:  # fewer components than asked: pad, so shapes (and budgets) do not depend on the data
        scores = torch.cat([scores, scores.new_zeros(b, n, k - kk)], dim=-1)
    return scores


def reduce_tokens(t: Tensor, reducer: str, *, seed: int = 0) -> Tensor:
    """One reducer applied to (B, N, D) tokens, in float32 on their device (see the module docstring)."""
    if t.ndim != 3:
        raise ValueError(f"reducers take (B, N, D) token streams, got shape {tuple(t.shape)}")
    t = t.detach().float()
    if reducer == "norm":
        return torch.linalg.vector_norm(t, dim=-1)
    if reducer == "mean":
        return t.mean(dim=1)
    if reducer == "full":
        return t.clone()
    if not _RED.match(reducer):
        raise ValueError(f"unknown reducer {reducer!r}")
    if reducer.startswith("proj"):
        return t @ _projection(t.shape[-1], _width(reducer), seed, str(t.device))
    return _pca(t, _width(reducer))


# -- the cache and the recorder -------------------------------------------------------------------
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


@dataclass(frozen=True)
class _Want:
    reducers: tuple[str, ...]
    steps: frozenset[int] | None
    tokens: tuple[int, ...] | None


class Recorder:
    """Observe-only hooks for a plan; reduced tensors land in `self.cache`, on the CPU, as they are recorded.

    Reductions run on the activations' device; on an accelerator the results are copied to the CPU
    in batches of about `flush_mb` (one synchronisation each), not one at a time.
    """

    def __init__(self, denoiser: Any, plan: CapturePlan, *, flush_mb: float = 64.0):
        self.den, self.plan = denoiser, plan
        self.cache = Cache()
        self.flush_bytes = int(flush_mb * 2**20)
        self._dtype = _DTYPES[plan.dtype]
        self._stored = 0
        self._pending: list[tuple[dict[str, Tensor], str, Tensor]] = []
        self._pending_bytes = 0
        self._tok_idx: dict[tuple[int, str], Tensor] = {}
        self._ctx: Any = None

    def _plan_points(self) -> dict[str, list[_Want]]:
        points = hook_points(self.den)
        wants: dict[str, list[_Want]] = {}
        for cap in self.plan.captures:
            w = _Want(cap.reducers, None if cap.steps is None else frozenset(cap.steps), cap.tokens)
            for p in select_points(points, cap.selector):
                for other in wants.get(p.name, []):
                    same = set(other.reducers) & set(w.reducers)
                    overlap = other.steps is None or w.steps is None or other.steps & w.steps
                    if same and overlap:
                        raise ConfigError(f"two captures record {sorted(same)} at {p.name} on the same steps; "
                                          "merge them or give them disjoint steps")
                wants.setdefault(p.name, []).append(w)
        return wants

    def _tokens(self, tokens: tuple[int, ...], t: Tensor) -> Tensor:
        key = (id(tokens), str(t.device))  # the plan holds `tokens`, so its id is stable (and cheaper than hashing it)
        if key not in self._tok_idx:
            if max(tokens) >= t.shape[1]:
                raise ValueError(f"capture tokens go up to {max(tokens)} but the activation has {t.shape[1]} tokens")
            self._tok_idx[key] = torch.tensor(tokens, dtype=torch.long, device=t.device)
        return t.index_select(1, self._tok_idx[key])

    def _hook(self, wants: list[_Want]):
        def fn(t: Tensor, *, point) -> None:
            if point.phase != "main":
                return
            for w in wants:
                if w.steps is not None and point.step not in w.steps:
                    continue
                x = t if w.tokens is None else self._tokens(w.tokens, t)
                slot = self.cache.setdefault(CacheKey(point.step, point.layer, point.site, point.branch), {})
                for r in w.reducers:
                    self._store(slot, r, reduce_tokens(x, r, seed=self.plan.seed).to(self._dtype))
            if self._pending_bytes > self.flush_bytes:
                self.flush()

        return fn

    def _store(self, slot: dict[str, Tensor], reducer: str, out: Tensor) -> None:
        nbytes = out.numel() * out.element_size()
        self._stored += nbytes
        if self._stored > self.plan.budget_mb * 2**20:
            raise CaptureBudgetError(f"captures passed the {self.plan.budget_mb:g} MB budget while recording "
                                     f"({self._stored / 2**20:.1f} MB so far): the plan was not checked, or the run has more "
                                     "steps, samples or branches than estimated")
        if out.device.type == "cpu":
            slot[reducer] = out
        else:
            self._pending.append((slot, reducer, out))
            self._pending_bytes += nbytes

    def flush(self) -> None:
        """Move reduced tensors still on the accelerator to the CPU (one synchronisation)."""
        if not self._pending:
            return
        # asynchronous copies (CUDA), then one synchronisation before the CPU tensors are used
        moved = [(slot, r, out.to("cpu", non_blocking=out.is_cuda)) for slot, r, out in self._pending]
        devices = {out.device for _, _, out in self._pending}
        for dev in devices:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
        for slot, r, cpu in moved:
            slot[r] = cpu
        self._pending.clear()
        self._pending_bytes = 0

    def __enter__(self) -> Recorder:
        wants = self._plan_points()
        self._ctx = hooks(self.den, [(name, self._hook(ws)) for name, ws in wants.items()])
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.flush()
        finally:
            self._ctx.__exit__(*exc)

    def nbytes(self) -> int:
        return self._stored


class TraceRecorder:
    """A step callback (observe only) keeping, per step, sigma and copies of chosen event fields on the CPU.

    Args:
        fields: which of x, velocity, x0_hat, x_next to keep.
        latents: "full" keeps the fields (and per-branch velocities when "velocity" is asked for and the
            model runs CFG); "none" keeps only step numbers and sigmas.
        dtype: torch.float32 or torch.float16 for the stored copies.
    """

    def __init__(self, fields: Sequence[str] = ("x0_hat",), *, latents: str = "full", dtype: torch.dtype = torch.float32):
        bad = [f for f in fields if f not in EVENT_FIELDS]
        if bad:
            raise ConfigError(f"unknown event fields {bad}: choose from {list(EVENT_FIELDS)}")
        if latents not in ("full", "none"):
            raise ConfigError(f"latents must be 'full' or 'none', got {latents!r}")
        self.fields = tuple(dict.fromkeys(fields)) if latents == "full" else ()
        self.dtype = dtype
        self.steps: list[int] = []
        self.sigmas: list[tuple[float, float]] = []
        self.experts: list[str | None] = []
        self.data: dict[str, list[Tensor]] = {}

    def _keep(self, key: str, t: Tensor) -> None:
        t = t.detach()
        # a CPU tensor of the right dtype would be kept by reference: copy, since callers may reuse it
        self.data.setdefault(key, []).append(t.to("cpu", self.dtype, copy=True))

    def __call__(self, e: StepEvent) -> None:
        self.steps.append(e.step)
        self.sigmas.append((e.sigma, e.sigma_next))
        self.experts.append(e.expert)
        for f in self.fields:
            self._keep(f, getattr(e, f))
        if "velocity" in self.fields and e.branches:
            for name, v in e.branches.items():
                self._keep(f"velocity/{name}", v)

    def events(self) -> dict[str, Tensor]:
        """The recorded steps stacked: step, sigma, sigma_next (S,) and each field (S, B, ...)."""
        sig = torch.tensor(self.sigmas, dtype=torch.float32).reshape(-1, 2)
        out = {"step": torch.tensor(self.steps, dtype=torch.long), "sigma": sig[:, 0].contiguous(), "sigma_next": sig[:, 1].contiguous()}
        for k, v in self.data.items():
            if len(v) != len(self.steps):
                raise ValueError(f"{k} was recorded at {len(v)} of {len(self.steps)} steps (CFG branches changed mid-run?)")
            out[k] = torch.stack(v)
        return out


# -- the trace ------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, Tensor):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, set | frozenset | range):
        return list(v)
    return str(v)


def _layout(tensors: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in sorted(tensors.items())}


@dataclass
class Trace:
    """A run's config dict, its per-step events (stacked) and its reduced captures. Storage and access only."""

    config: dict[str, Any]
    events: dict[str, Tensor]  # step/sigma/sigma_next (S,), field -> (S, B, ...)
    captures: Cache

    @staticmethod
    def from_recorders(config: dict[str, Any], events: TraceRecorder | None, rec: Recorder | None = None) -> Trace:
        cfg = dict(config)
        if events is not None and any(x is not None for x in events.experts):
            cfg["experts"] = events.experts
        return Trace(cfg, events.events() if events is not None else {}, rec.cache if rec is not None else Cache())

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

        from . import __version__

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
        text = json.dumps(manifest, indent=1, default=_jsonable) + "\n"
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


def record(denoiser: Any, batch: Any, seeds: Sequence[int], sampling: Any, plan: CapturePlan, *,
           fields: Sequence[str] = ("x0_hat",), latents: str = "full", config: dict[str, Any] | None = None,
           ensemble: Any = None) -> Trace:
    """Sample with event tracing and reduced captures; refuses a plan over its budget before sampling.

    Args:
        batch, seeds, sampling: as for `steplens.runner.generate` (a Batch, noise seeds, a SamplingConfig).
        fields, latents: what `TraceRecorder` keeps per step; config: extra entries for the trace's config.
        ensemble: an `EnsembleConfig` to record a latent-trajectory ensemble instead of plain sampling;
            `seeds` then holds K noise seeds per instance (instance-major). Events follow the trajectory
            the ensemble returns (the first of each instance's K); captures see every trajectory computed.
    """
    from .runner import generate

    branches = 2 if getattr(denoiser, "do_cfg", False) else 1
    expert_for = getattr(denoiser, "expert_for", None)  # two-expert models: each step runs one expert's blocks
    step_experts = None if expert_for is None else [  # the timesteps the denoiser computes: float32 sigma x 1000
        expert_for(t) for t in (sampling.sigmas(denoiser)[:-1].float() * getattr(denoiser, "num_train_timesteps", 1000)).tolist()]
    est = check_budget(plan, denoiser, batch.latent_shape, len(seeds), sampling.steps, branches=branches, step_experts=step_experts)
    ev = TraceRecorder(fields, latents=latents)
    cfg = {**(config or {}), "sampling": sampling, "capture_plan": plan.to_dict(), "noise_seeds": list(seeds),
           "latent_shape": list(batch.latent_shape), "denoiser": getattr(denoiser, "name", type(denoiser).__name__),
           "capture_estimate_bytes": est}
    if ensemble is not None:
        cfg["ensemble"] = ensemble
        sample = lambda: _ensemble_run(denoiser, batch, seeds, sampling, ensemble, ev)  # noqa: E731
    else:
        sample = lambda: generate(denoiser, batch, seeds, sampling, callback=ev)  # noqa: E731
    if plan.captures:
        with Recorder(denoiser, plan) as rec:
            sample()
    else:
        rec = None
        sample()
    return Trace.from_recorders(json.loads(json.dumps(cfg, default=_jsonable)), ev, rec)


def _ensemble_run(denoiser: Any, batch: Any, seeds: Sequence[int], sampling: Any, ens: Any, ev: TraceRecorder) -> Tensor:
    """An ensemble sampled with `ev` seeing, at every step, the first trajectory of each instance."""
    from dataclasses import replace

    from .ensemble import ensemble_latents
    from .runner import _to
    from .sampling import seeded_noise

    b, k = len(batch.instances), ens.k
    if len(seeds) != b * k:
        raise ValueError(f"an ensemble of k={k} needs {b * k} noise seeds for {b} instances, got {len(seeds)}")

    def first_of_each(e: StepEvent) -> None:
        if e.x.shape[0] == b * k and k > 1:  # inside the merge window all K rows are computed
            pick = lambda t: t[::k]  # noqa: E731
            e = replace(e, x=pick(e.x), velocity=pick(e.velocity), x0_hat=pick(e.x0_hat), x_next=pick(e.x_next),
                        branches={n: pick(v) for n, v in e.branches.items()} if e.branches else None)
        ev(e)

    dev = denoiser.device
    x = seeded_noise(batch.latent_shape, seeds, device=dev)
    with torch.no_grad():
        return ensemble_latents(denoiser, x, sampling.sigmas(denoiser).to(dev), _to(batch.cond, dev).repeat(k), ens,
                                sampler=sampling.sampler, callback=first_of_each)
