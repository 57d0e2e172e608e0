"""`steplens search ...`: test-time search on the steps at equal compute (thin layer over steplens.search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .common import (DEVICE, MODEL, OUT, PROMPT_EMBEDS, RAY, SAMPLER, SHIFT, SIZE, STEPS, TASK, WORKERS, RunByDefault, fail, load_model,
                     n_option, parse_ints, sampling_config, seed_option)

search_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                         help="Screen seeds by their early plan and compare with best-of-k, ensembles and cold starts at equal NFE "
                              "(`search --budget 4 ...` means `search run ...`).")

N = n_option(60)
SEED = seed_option(30_000)
K = typer.Option(12, "--k", min=1, help="Seeds per instance (seed k of instance i starts from noise_seed(i, k)).")
SCREEN_STEP = typer.Option(4, "--screen-step", min=1, help="Steps before the early score (default methods and curves).")
PRECISION = typer.Option("fp32", "--precision", help="fp32 or bf16 (autocast around the model).")


def _setup(model: str, sampler: str, steps: int | None, shift: float | None, prompt_embeds: str | None, ray: str | None,
           device: str, precision: str) -> tuple[Any, Any]:
    """The denoiser and SamplingConfig of the command line (the model's steps and shift where not given)."""
    from ..search.run import PRECISIONS

    if precision not in PRECISIONS:
        raise fail(f"--precision must be one of {list(PRECISIONS)}, got {precision!r}")
    sampling = sampling_config(model, steps, shift, sampler)
    return load_model(model, device, prompt_embeds, ray), sampling


@search_app.command("run")
def run_cmd(
    out: str = OUT,
    budget: float = typer.Option(4.0, "--budget", help="Compute per instance, in single-seed runs (B x steps NFE for Euler)."),
    model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = N, seed: int = SEED, k: int = K, screen_step: int = SCREEN_STEP,
    steps: int | None = STEPS, shift: float | None = SHIFT, sampler: str = SAMPLER, precision: str = PRECISION,
    prompt_embeds: str | None = PROMPT_EMBEDS, ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE,
) -> None:
    """Compare single, single_cold, the paper's ensemble, best-of-k and early screening at one budget; prints the table."""
    from ..search import default_methods, run_search

    den, sampling = _setup(model, sampler, steps, shift, prompt_embeds, ray, device, precision)
    default_methods(budget, k, screen_step, sampling, task)  # validate before sampling anything
    run_search(den, task, size, n, seed, sampling, out, budget=budget, k=k, screen_step=screen_step, precision=precision,
               ray_address=ray, num_workers=workers, model=model, device=device)
    typer.echo((Path(out) / "summary.txt").read_text())


@search_app.command("sweep")
def sweep_cmd(
    out: str = OUT,
    budgets: str = typer.Option("1,2,4,8", "--budgets", help="Budgets in single-seed runs."),
    ks: str = typer.Option("4,8,12", "--ks", help="Seeds screened."),
    ss: str = typer.Option("1,2,3,4,6,8", "--ss", help="Screening steps."),
    model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = N, seed: int = SEED, k: int = K, screen_step: int = SCREEN_STEP,
    steps: int | None = STEPS, shift: float | None = SHIFT, sampler: str = SAMPLER, precision: str = PRECISION,
    prompt_embeds: str | None = PROMPT_EMBEDS, ray: str | None = RAY, workers: int | None = WORKERS, device: str = DEVICE,
) -> None:
    """Solve rate vs NFE per method over K, s and m (writes sweep.json, sweep.md, curve.png)."""
    from ..search import run_sweep

    lists = {}
    for opt, text in (("--budgets", budgets), ("--ks", ks), ("--ss", ss)):
        lists[opt] = parse_ints(text, opt)
        if not lists[opt] or min(lists[opt]) < 1:
            raise fail(f"{opt} must be positive integers, got {text!r}")
    den, sampling = _setup(model, sampler, steps, shift, prompt_embeds, ray, device, precision)
    if screen_step >= sampling.steps:
        raise fail(f"--screen-step must be below --steps ({sampling.steps}), got {screen_step}")
    run_sweep(den, task, size, n, seed, sampling, out, budgets=lists["--budgets"], ks=lists["--ks"], ss=lists["--ss"], k=k,
              screen_step=screen_step, precision=precision, ray_address=ray, num_workers=workers, model=model, device=device)
    typer.echo((Path(out) / "summary.txt").read_text())
