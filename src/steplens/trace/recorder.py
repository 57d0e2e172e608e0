"""Recording: hooks that reduce captures as they happen, a step callback keeping event tensors, and `record`.

Only main-phase model calls are recorded (Heun's corrector is not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..config import ConfigError, jsonable
from ..hooks import hook_points, hooks, select_points
from ..sampling import StepEvent
from .budget import CaptureBudgetError, check_budget
from .plan import DTYPES, CapturePlan
from .reducers import reduce_tokens
from .storage import EVENT_FIELDS, Cache, CacheKey, Trace


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
        self._dtype = DTYPES[plan.dtype]
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
    from ..runner import generate

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
    return trace_of(jsonable(cfg), ev, rec)


def trace_of(config: dict[str, Any], events: TraceRecorder | None, rec: Recorder | None = None) -> Trace:
    """A `Trace` of what the recorders kept (the experts each step ran, when a model has several)."""
    cfg = dict(config)
    if events is not None and any(x is not None for x in events.experts):
        cfg["experts"] = events.experts
    return Trace(cfg, events.events() if events is not None else {}, rec.cache if rec is not None else Cache())


def _ensemble_run(denoiser: Any, batch: Any, seeds: Sequence[int], sampling: Any, ens: Any, ev: TraceRecorder) -> Tensor:
    """An ensemble sampled with `ev` seeing, at every step, the first trajectory of each instance."""
    from dataclasses import replace

    from ..ensemble import ensemble_latents
    from ..runner import _to
    from ..sampling import seeded_noise

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
