"""Capture plans: which hook points to record, with which reducers, at which steps and tokens.

A `Capture` names points (a `steplens.hooks` selector), reducers (see `steplens.trace.reducers`), and
optionally the steps and tokens to keep. Spec strings (CLI `--capture`):
`SELECTOR:REDUCER[,REDUCER...][@steps=S][@tokens=T]`, several joined by `;`, where S and T are comma
lists of indices and inclusive ranges (`0-4,10`); a bare `@0-4,10` means steps. E.g.
`blocks.*.resid_post:norm,proj16` or `blocks.3.attn_out:full@steps=0-4,10;blocks.0.mlp_out:mean`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError
from .reducers import REDUCER

DTYPES = {"float32": torch.float32, "float16": torch.float16}


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
            if not REDUCER.match(r):
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
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

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
