"""Test-time search methods over K seeds of one instance, their NFE accounting, and the pure selection rules.

Every method is a choice of one seed's final answer from trajectories that share their seeds
(seed k of instance i starts from `noise_seed(i, k)`), so all methods of an instance are evaluated
on the same K trajectories (`InstanceRecord`):

- `single`: seed 0. `single_cold`, `ensemble`: their own trajectories (the controls of `steplens ensemble`).
- `best_of_k`: seeds 0..k-1 run to the end, one picked by `final`.
- `cold=True` (best_of_k, early_screen): the same over K cold-started seeds (seed k's noise times COLD.noise_scale, the
  single_cold control's start; cold seed 0 is that control), at the same NFE.
- `early_screen`: seeds 0..k-1 run s steps; each seed's decoded x0_hat after s steps (the clean
  estimate of step s-1) is scored by an early score; the best m continue to the end (ties: lower
  seed); one of them is picked by `final`. NFE = k * nfe(steps < s) + m * nfe(steps >= s).

`final` rules: `first` (lowest seed), `early` (best early score), `agreement` (closest final to the
other candidates', ties by early rank), `vote` (majority of palette-snapped last frames), `verifier`
(task rules on the final answer: USES TASK RULES), `oracle` (best ground-truth score: an upper bound
that NEEDS GROUND TRUTH).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import ConfigError
from ..ensemble import EnsembleConfig, agreement_distances, cold_single, nfe_per_instance, step_nfe
from ..runner import SamplingConfig
from .scores import SCORES, VERIFIER_TASKS, final_verifier, get_score

KINDS = ("single", "single_cold", "ensemble", "best_of_k", "early_screen")
FINALS = ("first", "early", "agreement", "vote", "verifier", "oracle")
PAPER_ENSEMBLE = EnsembleConfig(k=8, window=(0, 2), rule="mean_xt", after="single")  # the best merging setting of our sweeps (README)
COLD = cold_single(8)  # the cold-start control of that setting: one seed, noise / sqrt(8)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SearchMethod:
    """One named test-time method (see module doc)."""

    name: str
    kind: str
    k: int = 1
    s: int = 0
    m: int = 1
    score: str = ""
    final: str = "first"
    cold: bool = False  # over the cold-started seeds (noise * COLD.noise_scale) instead of the prior's

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"method name {self.name!r} must match {_NAME.pattern}")
        if self.kind not in KINDS:
            raise ConfigError(f"unknown method kind {self.kind!r}; choose from {list(KINDS)}")
        if self.final not in FINALS:
            raise ConfigError(f"unknown final selection {self.final!r}; choose from {list(FINALS)}")
        if self.k < 1 or not 1 <= self.m <= self.k:
            raise ConfigError(f"need k >= 1 and 1 <= m <= k, got k={self.k}, m={self.m}")
        if self.kind == "early_screen":
            if self.s < 1:
                raise ConfigError(f"early_screen needs s >= 1 screening steps, got {self.s}")
            get_score(self.score)
        elif self.score or self.s:
            raise ConfigError(f"{self.kind} takes no early score or screening steps")
        if self.cold and self.kind not in ("best_of_k", "early_screen"):
            raise ConfigError(f"cold applies to best_of_k and early_screen, not {self.kind} (single_cold is the cold single run)")

    @property
    def uses_ground_truth(self) -> bool:
        return self.final == "oracle" and self.candidates > 1

    @property
    def uses_task_rules(self) -> bool:
        return (self.final == "verifier" and self.candidates > 1) or (bool(self.score) and SCORES[self.score].uses_task_rules)

    @property
    def candidates(self) -> int:
        """How many finished answers the final rule chooses among."""
        return {"early_screen": self.m, "best_of_k": self.k}.get(self.kind, 1)

    def check(self, sampling: SamplingConfig, k_max: int) -> None:
        if self.k > k_max:
            raise ConfigError(f"method {self.name} needs {self.k} seeds per instance, the run has {k_max}")
        if self.s >= sampling.steps:
            raise ConfigError(f"method {self.name} screens after {self.s} steps, the schedule has {sampling.steps}")


def check_budget(budget: float, screen_step: int, sampling: SamplingConfig) -> None:
    """A budget of at least one single run, and a screening step inside the schedule."""
    if not (math.isfinite(budget) and budget >= 1):
        raise ConfigError(f"budget must be >= 1 single run (finite), got {budget}")
    if not 1 <= screen_step < sampling.steps:
        raise ConfigError(f"screen step must be in 1..{sampling.steps - 1}, got {screen_step}")


def screen_nfe(k: int, s: int, m: int, sampling: SamplingConfig) -> int:
    """Network evaluations of screening k seeds for s steps and continuing m of them to the end."""
    per = step_nfe(sampling.sampler, sampling.steps)
    return k * sum(per[:s]) + m * sum(per[s:])


def method_nfe(method: SearchMethod, sampling: SamplingConfig) -> int:
    """Network evaluations per instance that `method` spends."""
    if method.kind == "ensemble":
        return nfe_per_instance(PAPER_ENSEMBLE, sampling)
    if method.kind == "early_screen":
        return screen_nfe(method.k, method.s, method.m, sampling)
    return screen_nfe(method.k, 0, method.k, sampling)


def fit_m(k: int, s: int, budget_nfe: float, sampling: SamplingConfig) -> int:
    """The most survivors (<= k) that screening k seeds for s steps leaves room for; 0 if none fits."""
    m = 0
    while m < k and screen_nfe(k, s, m + 1, sampling) <= budget_nfe:
        m += 1
    return m


def screen_name(score: str, k: int, s: int, m: int, final: str, cold: bool = False) -> str:
    return f"early_screen_{'cold_' if cold else ''}{score}_k{k}_s{s}_m{m}_{final}"


def baseline_methods(budget: float, k_max: int, sampling: SamplingConfig, task: str = "maze") -> list[SearchMethod]:
    """single, single_cold, the paper's ensemble, best_of_B by agreement/vote/verifier (tasks with a verifier)/oracle, and
    oracle best of k_max."""
    k = max(1, min(k_max, int(budget)))
    out = [SearchMethod("single", "single"), SearchMethod("single_cold", "single_cold"), SearchMethod("ensemble", "ensemble")]
    finals = ("agreement", "vote", "verifier", "oracle") if task in VERIFIER_TASKS else ("agreement", "vote", "oracle")
    if k > 1:
        out += [SearchMethod(f"best_of_{k}_{f}", "best_of_k", k=k, m=k, final=f) for f in finals]
        out += [SearchMethod(f"best_of_{k}_cold_{f}", "best_of_k", k=k, m=k, final=f, cold=True) for f in ("agreement", "vote", "oracle")]
    if k_max > k:
        out.append(SearchMethod(f"best_of_{k_max}_oracle", "best_of_k", k=k_max, m=k_max, final="oracle"))
    return out


SCREEN_FINALS = {"decided": ("early", "agreement"), "ambiguity": ("early", "agreement"), "stability": ("early", "agreement"),
                 "agreement": ("early", "agreement"), "route": ("verifier",)}


def screen_methods(budget: float, k: int, s: int, sampling: SamplingConfig, task: str,
                   scores: Sequence[str] | None = None) -> list[SearchMethod]:
    """early_screen with k seeds (prior and cold-started) screened after s steps and as many survivors as `budget` (in
    single runs) leaves room for."""
    m = fit_m(k, s, budget * screen_nfe(1, 0, 1, sampling), sampling)
    if m < 1:
        return []
    names = [n for n in (scores or SCORES) if get_score(n).supports(task)]
    return [SearchMethod(screen_name(n, k, s, m, f, c), "early_screen", k=k, s=s, m=m, score=n, final=f, cold=c)
            for c in (False, True) for n in names for f in SCREEN_FINALS.get(n, ("early",)) if m > 1 or f == "early" or f == "verifier"]


# -- one instance's trajectories, and the selection rules over them ---------------------------------
@dataclass
class InstanceRecord:
    """What K seeds of one instance produced: early plans at every step and final answers, as block grids."""

    seed: int
    task: str
    inst: Any
    plans: np.ndarray  # (S, K, T, Hb, Wb, 3) uint8: decoded x0_hat of steps 0..S-1
    finals: np.ndarray  # (K, T, Hb, Wb, 3) uint8
    success: np.ndarray  # (K,) bool, ground truth
    score: np.ndarray  # (K,) float, ground truth
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)  # "single_cold", "ensemble": {"success", "score"}
    cold: InstanceRecord | None = None  # the same K seeds cold-started (None: a run folder from before cold seeds were sampled)
    _cache: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)

    def seeds_of(self, method: SearchMethod) -> InstanceRecord:
        """The trajectories `method` selects among: these, or the cold-started ones."""
        if not method.cold:
            return self
        if self.cold is None:
            raise ConfigError(f"method {method.name} needs cold-started seeds; this run folder has none (sampled before they "
                              "were added): use a new --out")
        return self.cold

    def early(self, score: str, s: int, k: int) -> np.ndarray:
        """(k,) early score of seeds 0..k-1 after s steps (the x0_hat of step s-1; stability compares with step s-2)."""
        key = (score, s, k)
        if key not in self._cache:
            prev = self.plans[s - 2, :k] if s >= 2 else None
            self._cache[key] = get_score(score)(self.plans[s - 1, :k], prev, inst=self.inst)
        return self._cache[key]


def vote_answers(finals: np.ndarray) -> list[bytes]:
    """(K, T, H, W, 3) -> one hashable answer per seed: its last frame snapped to the palette."""
    from .scores import _PAL

    last = finals[:, -1].astype(np.float32)
    idx = np.linalg.norm(last[..., None, :] - _PAL, axis=-1).argmin(-1).astype(np.int8)  # (K, H, W)
    return [a.tobytes() for a in idx]


def pick_final(final: str, cands: Sequence[int], rec: InstanceRecord) -> int:
    """The chosen seed among `cands` (given in rank order: earlier is preferred on ties)."""
    cands = list(cands)
    rank = {j: r for r, j in enumerate(cands)}
    if final in ("first", "early") or len(cands) == 1:
        return cands[0]
    if final == "oracle":
        return max(cands, key=lambda j: (bool(rec.success[j]), float(rec.score[j]), -rank[j]))
    if final == "agreement":
        dist = agreement_distances(rec.finals[cands])
        return min(cands, key=lambda j: (round(float(dist[rank[j]]), 9), rank[j]))
    if final == "vote":
        keys = vote_answers(rec.finals[cands])
        return min(cands, key=lambda j: (-keys.count(keys[rank[j]]), rank[j]))
    if final == "verifier":
        v = final_verifier(rec.task, rec.inst, rec.finals[cands])
        return max(cands, key=lambda j: (float(v[rank[j]]), -rank[j]))
    raise ValueError(f"unknown final selection {final!r}")


def survivors(method: SearchMethod, rec: InstanceRecord) -> list[int]:
    """The seeds an early_screen keeps, best early score first (ties: lower seed)."""
    sc = rec.seeds_of(method).early(method.score, method.s, method.k)
    order = sorted(range(method.k), key=lambda j: (-sc[j], j))
    return order[: method.m]


def select(method: SearchMethod, rec: InstanceRecord, sampling: SamplingConfig) -> dict[str, Any]:
    """One method's result on one instance: success, score (ground truth, for reporting only), chosen seed, NFE."""
    nfe = method_nfe(method, sampling)
    if method.kind in ("single_cold", "ensemble"):
        c = rec.controls[method.kind]
        return {"seed": rec.seed, "success": bool(c["success"]), "score": float(c["score"]), "chosen": None, "nfe": nfe}
    cands = list(range(method.k)) if method.kind != "early_screen" else survivors(method, rec)
    rec = rec.seeds_of(method)
    j = pick_final(method.final, cands, rec)
    return {"seed": rec.seed, "success": bool(rec.success[j]), "score": float(rec.score[j]), "chosen": int(j), "kept": cands, "nfe": nfe}


__all__ = ["COLD", "FINALS", "KINDS", "PAPER_ENSEMBLE", "SCREEN_FINALS", "InstanceRecord", "SearchMethod", "baseline_methods", "fit_m",
           "method_nfe", "pick_final", "screen_methods", "screen_name", "screen_nfe", "select", "survivors", "vote_answers"]
