"""`steplens ensemble ...`: training-free latent trajectory ensembles (thin layer over steplens.ensemble)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import (MODEL, OUT, RAY, SAMPLER, SHIFT, SIZE, STEPS, TASK, WORKERS, RunByDefault, n_option, parse_ints, parse_names,
                     parse_window, seed_option)

ensemble_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                           help="Merge K seeds' latents during early steps; compare with compute-matched baselines "
                                "(`ensemble --k 3 ...` means `ensemble run ...`).")
MAX_BATCH = typer.Option(64, "--max-batch", min=1, help="Trajectories per forward pass.")


@ensemble_app.command("run")
def run_cmd(
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int = SIZE,
    k: int = typer.Option(3, "--k", min=1, help="Seeds (trajectories) per instance."),
    window: str = typer.Option("0:2", "--window", help="Merge during steps START:END (end exclusive)."),
    rule: str = typer.Option("mean_xt", "--rule", help="mean_xt | mean_v | mean_x0_renoise."),
    norm_correct: bool = typer.Option(False, "--norm-correct", help="mean_xt: restore the std of the merged noise part."),
    after: str = typer.Option("all", "--after", help="all: continue K and select one; single: keep the first after the window."),
    select: str = typer.Option("first", "--select", help="first | agreement | vote | oracle (oracle needs ground truth)."),
    n: int = n_option(100),
    seed: int = seed_option(30_000),
    steps: int = STEPS,
    shift: float = SHIFT,
    sampler: str = SAMPLER,
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also run the compute-matched baselines."),
    max_batch: int = MAX_BATCH,
    ray: str | None = RAY,
    workers: int | None = WORKERS,
) -> None:
    """Evaluate one ensemble setting (and its baselines) on the same instances; prints the JSON summary."""
    from ..ensemble import EnsembleConfig, Method, baselines as make_baselines, compare
    from ..models.registry import load
    from ..runner import SamplingConfig

    sampling = SamplingConfig(sampler=sampler, steps=steps, shift=shift)
    ens = EnsembleConfig(k=k, window=parse_window(window), rule=rule, norm_correct=norm_correct, after=after, select=select)
    ens.check(steps)
    methods = make_baselines(ens, sampling) if baselines else [Method("single"), Method("ensemble", ens)]
    summary = compare(load(model), task, size, n, seed, sampling, methods, out, max_batch=max_batch, ray_address=ray,
                      num_workers=workers, model=model)
    typer.echo(json.dumps(summary, indent=1))


@ensemble_app.command("sweep")
def sweep_cmd(
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int = SIZE,
    n: int = n_option(100),
    seed: int = seed_option(30_000),
    ks: str = typer.Option("2,3,4,8", "--ks", help="Comma-separated K values."),
    windows: str = typer.Option("0:1,0:2,0:4", "--windows", help="Comma-separated START:END windows."),
    rules: str = typer.Option("mean_xt,mean_v,mean_x0_renoise", "--rules"),
    norm_correct: bool = typer.Option(True, "--norm-correct/--no-norm-correct", help="Also sweep mean_xt with norm correction."),
    after: str = typer.Option("single", "--after", help="single (default: same answer as all with select=first, less compute) or all."),
    select: str = typer.Option("first", "--select"),
    steps: int = STEPS,
    shift: float = SHIFT,
    sampler: str = SAMPLER,
    max_batch: int = MAX_BATCH,
    ray: str | None = RAY,
    workers: int | None = WORKERS,
) -> None:
    """Sweep K x window x rule (x norm correction) against single seed; writes sweep.json/.md/.png."""
    from ..ensemble import sweep, sweep_methods
    from ..models.registry import load
    from ..runner import SamplingConfig

    sampling = SamplingConfig(sampler=sampler, steps=steps, shift=shift)
    k_list = parse_ints(ks, "--ks")
    wins = [parse_window(w, "--windows") for w in parse_names(windows)]
    rule_list = parse_names(rules)
    ncs = (False, True) if norm_correct else (False,)
    if not k_list or not wins or not rule_list:
        raise typer.BadParameter("--ks, --windows and --rules must not be empty")
    for m in sweep_methods(k_list, wins, rule_list, ncs, after=after, select=select):
        m.ens.check(steps)
    sweep(load(model), task, size, n, seed, sampling, out, ks=k_list, windows=wins, rules=rule_list, norm_correct=ncs,
          after=after, select=select, max_batch=max_batch, ray_address=ray, num_workers=workers, model=model)
    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo((Path(out) / "sweep.md").read_text())
