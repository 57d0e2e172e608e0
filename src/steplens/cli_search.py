"""`steplens search ...`: test-time search on the steps at equal compute (thin layer over steplens.search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .cli_common import RunByDefault

search_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                         help="Screen seeds by their early plan and compare with best-of-k, ensembles and cold starts at equal NFE "
                              "(`search --budget 4 ...` means `search run ...`).")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _ints(s: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise _fail(f"{what} must be comma-separated integers, got {s!r}") from None
    if not out or min(out) < 1:
        raise _fail(f"{what} must be positive integers, got {s!r}")
    return out


def _setup(model: str, sampler: str, steps: int, shift: float, prompt_embeds: str | None, ray: str | None,
           task: str, size: int, seed: int, precision: str) -> tuple[Any, Any]:
    from .config import ConfigError
    from .models.registry import load
    from .runner import SamplingConfig
    from .search.run import PRECISIONS

    if precision not in PRECISIONS:
        raise _fail(f"--precision must be one of {list(PRECISIONS)}, got {precision!r}")
    try:
        sampling = SamplingConfig(sampler=sampler, steps=steps, shift=shift)
    except (ConfigError, ValueError) as e:
        raise _fail(str(e)) from None
    if prompt_embeds and not model.startswith("wan:"):
        raise _fail("--prompt-embeds applies to text-conditioned wan: models only")
    if prompt_embeds and ray:
        raise _fail("--ray loads the model in each worker from --model; --prompt-embeds is not shipped to workers")
    try:
        den = load(model, **({"text_encoder": False} if prompt_embeds else {}))
        if prompt_embeds:
            from .cli_wan import load_prompt_embeds

            from .tasks import get_task

            t = get_task(task)
            den.prompt_embeds, den.negative_prompt_embeds = load_prompt_embeds(prompt_embeds)(t.prompt(t.generate(seed, size)))
    except Exception as e:  # noqa: BLE001 - one clear line, exit 2
        raise _fail(f"{type(e).__name__}: {e}") from None
    return den, sampling


COMMON: dict[str, Any] = {
    "model": typer.Option("maze", "--model", help="Shipped model name, path to an exported model, or wan:DIR."),
    "task": typer.Option("maze", "--task"),
    "size": typer.Option(7, "--size"),
    "n": typer.Option(60, "--n", min=1, help="Held-out instances (a run folder extends to more)."),
    "seed": typer.Option(30_000, "--seed", help="First held-out instance seed."),
    "k": typer.Option(12, "--k", min=1, help="Seeds per instance (seed k of instance i starts from noise_seed(i, k))."),
    "screen_step": typer.Option(4, "--screen-step", min=1, help="Steps before the early score (default methods and curves)."),
    "steps": typer.Option(20, "--steps"),
    "shift": typer.Option(1.0, "--shift"),
    "sampler": typer.Option("euler", "--sampler"),
    "precision": typer.Option("fp32", "--precision", help="fp32 or bf16 (autocast around the model)."),
    "prompt_embeds": typer.Option(None, "--prompt-embeds", help="wan: models without a text encoder: a .pt of prompt embeddings."),
    "ray": typer.Option(None, "--ray", metavar="ADDRESS", help="Run on Ray: 'local' or a cluster address ('auto', 'ray://host:10001')."),
    "workers": typer.Option(None, "--workers", min=1, help="With --ray: most instances in flight."),
}


@search_app.command("run")
def run_cmd(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes; `search sweep` may share it)."),
    budget: float = typer.Option(4.0, "--budget", help="Compute per instance, in single-seed runs (B x steps NFE for Euler)."),
    model: str = COMMON["model"], task: str = COMMON["task"], size: int = COMMON["size"], n: int = COMMON["n"], seed: int = COMMON["seed"],
    k: int = COMMON["k"], screen_step: int = COMMON["screen_step"], steps: int = COMMON["steps"], shift: float = COMMON["shift"],
    sampler: str = COMMON["sampler"], precision: str = COMMON["precision"], prompt_embeds: str | None = COMMON["prompt_embeds"],
    ray: str | None = COMMON["ray"], workers: int | None = COMMON["workers"],
) -> None:
    """Compare single, single_cold, the paper's ensemble, best-of-k and early screening at one budget; prints the table."""
    from .config import ConfigError
    from .search import default_methods, run_search

    den, sampling = _setup(model, sampler, steps, shift, prompt_embeds, ray, task, size, seed, precision)
    try:
        default_methods(budget, k, screen_step, sampling, task)  # validate before sampling anything
        run_search(den, task, size, n, seed, sampling, out, budget=budget, k=k, screen_step=screen_step, precision=precision,
                   ray_address=ray, num_workers=workers, model=model)
    except ConfigError as e:
        raise _fail(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{type(e).__name__}: {e}") from None
    typer.echo((Path(out) / "summary.txt").read_text())


@search_app.command("sweep")
def sweep_cmd(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes; may be a `search run` folder)."),
    budgets: str = typer.Option("1,2,4,8", "--budgets", help="Budgets in single-seed runs."),
    ks: str = typer.Option("4,8,12", "--ks", help="Seeds screened."),
    ss: str = typer.Option("1,2,3,4,6,8", "--ss", help="Screening steps."),
    model: str = COMMON["model"], task: str = COMMON["task"], size: int = COMMON["size"], n: int = COMMON["n"], seed: int = COMMON["seed"],
    k: int = COMMON["k"], screen_step: int = COMMON["screen_step"], steps: int = COMMON["steps"], shift: float = COMMON["shift"],
    sampler: str = COMMON["sampler"], precision: str = COMMON["precision"], prompt_embeds: str | None = COMMON["prompt_embeds"],
    ray: str | None = COMMON["ray"], workers: int | None = COMMON["workers"],
) -> None:
    """Solve rate vs NFE per method over K, s and m (writes sweep.json, sweep.md, curve.png)."""
    from .config import ConfigError
    from .search import run_sweep

    b_list, k_list, s_list = _ints(budgets, "--budgets"), _ints(ks, "--ks"), _ints(ss, "--ss")
    if screen_step >= steps:
        raise _fail(f"--screen-step must be below --steps ({steps}), got {screen_step}")
    den, sampling = _setup(model, sampler, steps, shift, prompt_embeds, ray, task, size, seed, precision)
    try:
        run_sweep(den, task, size, n, seed, sampling, out, budgets=b_list, ks=k_list, ss=s_list, k=k, screen_step=screen_step,
                  precision=precision, ray_address=ray, num_workers=workers, model=model)
    except ConfigError as e:
        raise _fail(str(e)) from None
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{type(e).__name__}: {e}") from None
    typer.echo((Path(out) / "summary.txt").read_text())


def register(app: typer.Typer) -> None:
    app.add_typer(search_app, name="search")


__all__ = ["register", "search_app"]
