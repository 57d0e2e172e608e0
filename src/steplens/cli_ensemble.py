"""`steplens ensemble ...`: training-free latent trajectory ensembles (thin layer over steplens.ensemble)."""

from __future__ import annotations

import json
from typing import Any

import typer

from .cli_common import RunByDefault, precision_option, record_precision, resolve_precision

ensemble_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                           help="Merge K seeds' latents during early steps; compare with compute-matched baselines "
                                "(`ensemble --k 3 ...` means `ensemble run ...`).")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _window(s: str) -> tuple[int, int]:
    try:
        a, b = s.split(":")
        return int(a), int(b)
    except ValueError:
        raise _fail(f"window must be START:END steps (e.g. 0:2), got {s!r}") from None


def _csv(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def _sampling(sampler: str, steps: int, shift: float) -> Any:
    from .config import ConfigError
    from .runner import SamplingConfig

    try:
        return SamplingConfig(sampler=sampler, steps=steps, shift=shift)
    except (ConfigError, ValueError) as e:
        raise _fail(str(e)) from None


def _load(model: str, precision: str) -> tuple[Any, Any]:
    """The model in the resolved precision, and the choice (printed; recorded after the run)."""
    from .models.registry import load

    try:
        choice = resolve_precision(precision)
        return load(model).to_precision(choice.precision), choice
    except Exception as e:  # noqa: BLE001 - one clear line, exit 2
        raise _fail(f"{type(e).__name__}: {e}") from None


@ensemble_app.command("run")
def run_cmd(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    model: str = typer.Option("maze", "--model", help="Shipped model name or path to an exported model."),
    task: str = typer.Option("maze", "--task"),
    size: int = typer.Option(5, "--size"),
    k: int = typer.Option(3, "--k", help="Seeds (trajectories) per instance."),
    window: str = typer.Option("0:2", "--window", help="Merge during steps START:END (end exclusive)."),
    rule: str = typer.Option("mean_xt", "--rule", help="mean_xt | mean_v | mean_x0_renoise."),
    norm_correct: bool = typer.Option(False, "--norm-correct", help="mean_xt: restore the std of the merged noise part."),
    after: str = typer.Option("all", "--after", help="all: continue K and select one; single: keep the first after the window."),
    select: str = typer.Option("first", "--select", help="first | agreement | vote | oracle (oracle needs ground truth)."),
    n: int = typer.Option(100, "--n", min=1, help="Held-out instances."),
    seed: int = typer.Option(30_000, "--seed", help="First held-out instance seed."),
    steps: int = typer.Option(20, "--steps"),
    shift: float = typer.Option(1.0, "--shift"),
    sampler: str = typer.Option("euler", "--sampler"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also run the compute-matched baselines."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Trajectories per forward pass."),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray: 'local' starts a local cluster; else a cluster address ('auto', 'ray://host:10001')."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: most chunks in flight (default: the cluster's GPUs, else CPUs)."),
    precision: str = precision_option(),
) -> None:
    """Evaluate one ensemble setting (and its baselines) on the same instances; prints the JSON summary."""
    from .config import ConfigError
    from .ensemble import EnsembleConfig, Method, baselines as make_baselines, compare

    sampling = _sampling(sampler, steps, shift)
    try:
        ens = EnsembleConfig(k=k, window=_window(window), rule=rule, norm_correct=norm_correct, after=after, select=select)
        ens.check(steps)
        methods = make_baselines(ens, sampling) if baselines else [Method("single"), Method("ensemble", ens)]
    except ConfigError as e:
        raise _fail(str(e)) from None
    den, choice = _load(model, precision)
    try:
        summary = compare(den, task, size, n, seed, sampling, methods, out, max_batch=max_batch, ray_address=ray,
                          num_workers=workers, model=model)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{type(e).__name__}: {e}") from None
    record_precision(out, choice)
    typer.echo(json.dumps(summary, indent=1))


@ensemble_app.command("sweep")
def sweep_cmd(
    out: str = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    model: str = typer.Option("maze", "--model"),
    task: str = typer.Option("maze", "--task"),
    size: int = typer.Option(5, "--size"),
    n: int = typer.Option(100, "--n", min=1),
    seed: int = typer.Option(30_000, "--seed"),
    ks: str = typer.Option("2,3,4,8", "--ks", help="Comma-separated K values."),
    windows: str = typer.Option("0:1,0:2,0:4", "--windows", help="Comma-separated START:END windows."),
    rules: str = typer.Option("mean_xt,mean_v,mean_x0_renoise", "--rules"),
    norm_correct: bool = typer.Option(True, "--norm-correct/--no-norm-correct", help="Also sweep mean_xt with norm correction."),
    after: str = typer.Option("single", "--after", help="single (default: same answer as all with select=first, less compute) or all."),
    select: str = typer.Option("first", "--select"),
    steps: int = typer.Option(20, "--steps"),
    shift: float = typer.Option(1.0, "--shift"),
    sampler: str = typer.Option("euler", "--sampler"),
    max_batch: int = typer.Option(64, "--max-batch", min=1),
    ray: str | None = typer.Option(None, "--ray", metavar="ADDRESS",
                                   help="Run on Ray: 'local' starts a local cluster; else a cluster address ('auto', 'ray://host:10001')."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="With --ray: most chunks in flight (default: the cluster's GPUs, else CPUs)."),
    precision: str = precision_option(),
) -> None:
    """Sweep K x window x rule (x norm correction) against single seed; writes sweep.json/.md/.png."""
    from .config import ConfigError
    from .ensemble import sweep, sweep_methods

    sampling = _sampling(sampler, steps, shift)
    try:
        k_list = [int(v) for v in _csv(ks)]
    except ValueError:
        raise _fail(f"--ks must be comma-separated integers, got {ks!r}") from None
    wins = [_window(w) for w in _csv(windows)]
    rule_list = _csv(rules)
    ncs = (False, True) if norm_correct else (False,)
    try:
        if not k_list or not wins or not rule_list:
            raise ConfigError("--ks, --windows and --rules must not be empty")
        for m in sweep_methods(k_list, wins, rule_list, ncs, after=after, select=select):
            m.ens.check(steps)
    except ConfigError as e:
        raise _fail(str(e)) from None
    den, choice = _load(model, precision)
    try:
        sweep(den, task, size, n, seed, sampling, out, ks=k_list, windows=wins, rules=rule_list, norm_correct=ncs,
              after=after, select=select, max_batch=max_batch, ray_address=ray, num_workers=workers, model=model)
    except Exception as e:  # noqa: BLE001
        raise _fail(f"{type(e).__name__}: {e}") from None
    record_precision(out, choice)
    from pathlib import Path

    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo((Path(out) / "sweep.md").read_text())


def register(app: typer.Typer) -> None:
    app.add_typer(ensemble_app, name="ensemble")
