"""Test-time methods: an ensemble and its compute-matched baselines, named, on the same instances and noises."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..config import ConfigError
from ..runner import SamplingConfig
from .compute import matched_steps, nfe_per_instance
from .merge import RULES, EnsembleConfig

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Method:
    """A named test-time method: an ensemble config, optionally with its own number of steps and noise scale."""

    name: str
    ens: EnsembleConfig = field(default_factory=lambda: EnsembleConfig(k=1, window=(0, 0)))
    steps: int | None = None  # None: the comparison's steps
    noise_scale: float = 1.0  # multiplies the initial noise (see `baselines`: single_cold)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"method name {self.name!r} must match {_NAME.pattern}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 < self.noise_scale <= 1e3:
            raise ConfigError(f"noise_scale must be in (0, 1000], got {self.noise_scale}")

    def sampling(self, base: SamplingConfig) -> SamplingConfig:
        return base if self.steps is None else replace(base, steps=self.steps)


def method_name(ens: EnsembleConfig) -> str:
    s, e = ens.window
    return f"k{ens.k}_w{s}-{e}_{ens.rule}{'_nc' if ens.norm_correct else ''}_{ens.after}_{ens.select}"


def baselines(ens: EnsembleConfig, sampling: SamplingConfig) -> list[Method]:
    """The ensemble and its test-time baselines on the same instances and noises.

    single (k=1); single_matched (one seed, as many steps as the ensemble's NFE allow); best_of_k_oracle
    (needs ground truth: an upper bound); best_of_k_agreement; majority_vote (K unmerged seeds each); ensemble.
    For every K > 1 also single_cold: one seed whose initial noise is scaled by 1/sqrt(K), the distribution
    of the mean of K noises, at no extra compute. It separates what merging K trajectories buys from what a
    colder start buys; `compare` reports the ensemble's paired difference to it and to single_matched.
    """
    ens.check(sampling.steps)
    plain = EnsembleConfig(k=ens.k, window=(0, 0), after="all")
    methods = [Method("single"),
               Method("single_matched", steps=matched_steps(nfe_per_instance(ens, sampling), sampling.sampler))]
    if ens.k > 1:
        methods += [Method("best_of_k_oracle", replace(plain, select="oracle")),
                    Method("best_of_k_agreement", replace(plain, select="agreement")),
                    Method("majority_vote", replace(plain, select="vote"))]
    if ens.k > 1:
        methods.append(cold_single(ens.k))
    return [*methods, Method("ensemble", ens)]


def cold_single(k: int, name: str = "single_cold") -> Method:
    """One seed started from noise of std 1/sqrt(k): what a mean of k noises looks like."""
    return Method(name, noise_scale=1.0 / k**0.5)



def sweep_methods(ks: Sequence[int] = (2, 3, 4, 8), windows: Sequence[tuple[int, int]] = ((0, 1), (0, 2), (0, 4)),
                  rules: Sequence[str] = RULES, norm_correct: Sequence[bool] = (False, True), *, after: str = "single",
                  select: str = "first") -> list[Method]:
    """"single" plus one ensemble per (K, window, rule, norm_correct); norm_correct only varies for mean_xt.

    Also one `k{K}_single_cold` control per K > 1 (see `baselines`).
    """
    methods = [Method("single")]
    methods += [cold_single(k, f"k{k}_single_cold") for k in sorted(set(ks)) if k > 1]
    for rule in rules:
        for nc in sorted(set(norm_correct)) if rule == "mean_xt" else [False]:
            for w in windows:
                for k in ks:
                    ens = EnsembleConfig(k=k, window=tuple(w), rule=rule, norm_correct=nc, after=after, select=select)
                    methods.append(Method(method_name(ens), ens))
    return methods

