"""Evaluating methods over a run folder, in fixed chunks of instances, here or on Ray workers (resumable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError
from ..evaluate import EvalShard
from ..precision import precision_of
from ..runner import SamplingConfig
from .merge import EnsembleConfig
from .methods import Method
from .trajectories import run_trajectories, select_results


def sample_key(method: str, task: str, size: int, seed: int) -> str:
    return f"{method}__{task}_{size}_{seed:010d}"


def _traj_key(m: Method, base: SamplingConfig) -> tuple:
    e = m.ens
    return (e.k, e.window if e.merges else (0, 0), e.rule if e.merges else "", e.norm_correct and e.merges,
            e.after if e.k > 1 else "all", m.sampling(base).steps, m.noise_scale)


@dataclass(frozen=True)
class EnsembleShard(EvalShard):
    """An evaluation chunk for one trajectory group: the instances, plus how their K trajectories run and are chosen."""

    ens: EnsembleConfig
    noise_scale: float
    selects: tuple[tuple[str, str], ...]  # (method name, selection rule) of the methods sharing these trajectories


def ensemble_shard(shard: EnsembleShard, denoiser: Any | None = None) -> list[dict[str, Any]]:
    """Sample one shard's trajectories once and return one result per (method, instance)."""
    from ..distributed import worker_model

    den = denoiser if denoiser is not None else worker_model(shard.model, shard.device, shard.precision)
    traj = run_trajectories(den, shard.task, shard.size, list(shard.seeds), shard.sampling, shard.ens, noise_scale=shard.noise_scale)
    return [{"method": name, **r} for name, sel in shard.selects for r in select_results(traj, sel)]


def evaluate_methods(denoiser: Any, run: Any, task: str, size: int, seeds: list[int], sampling: SamplingConfig,
                      methods: Sequence[Method], *, max_batch: int, progress: bool, ray_address: str | None = None,
                      num_workers: int | None = None, model: str | None = None, device: str = "auto") -> dict[str, list[dict[str, Any]]]:
    """Evaluate every method on the same instances; methods sharing trajectories sample them once.

    Instances are cut into fixed chunks per trajectory group (so results do not depend on where an
    earlier run stopped); with `ray_address` the chunks run as Ray tasks (see `steplens.distributed`)
    on workers that load `model` (default: the denoiser's name) on `device`, and the driver writes every result.
    """
    from functools import partial

    from ..runs import instance_bar

    from ..distributed import map_shards

    spec = model or getattr(denoiser, "name", None)
    if ray_address is not None and not isinstance(spec, str):
        raise ConfigError("a Ray run needs a model spec the workers can load (a shipped name, a path or wan:DIR)")
    groups: dict[tuple, list[Method]] = {}
    for m in methods:
        groups.setdefault(_traj_key(m, sampling), []).append(m)
    shards = []
    for group in groups.values():
        lead = group[0]
        per_chunk = max(1, max_batch // lead.ens.k)
        for i in range(0, len(seeds), per_chunk):
            chunk = [s for s in seeds[i : i + per_chunk] if any(not run.done(sample_key(m.name, task, size, s)) for m in group)]
            if chunk:
                shards.append(EnsembleShard(str(spec), task, size, tuple(chunk), lead.sampling(sampling), precision_of(denoiser), lead.ens,
                                            lead.noise_scale, tuple((m.name, m.ens.select) for m in group), device=device))
    total = len(seeds) * len(methods)
    done = sum(run.done(sample_key(m.name, task, size, s)) for m in methods for s in seeds)
    with instance_bar(progress) as bar:
        tid = bar.add_task(f"ensemble {task} {size}x{size}", total=total, completed=done)

        def commit(i: int, rows: list[dict[str, Any]]) -> None:
            new = {k: r for r in rows if not run.done(k := sample_key(r["method"], task, size, r["seed"]))}
            run.write_many(new)  # a chunk's results land together (see RunFolder.write_many)
            bar.advance(tid, len(new))

        fn = ensemble_shard if ray_address is not None else partial(ensemble_shard, denoiser=denoiser)
        map_shards(fn, shards, ray_address=ray_address, num_workers=num_workers, on_result=commit)
    return {m.name: run.results([sample_key(m.name, task, size, s) for s in seeds]) for m in methods}

