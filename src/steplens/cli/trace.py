"""`steplens trace ...`: record a trace (step events plus reduced captures) and show what a saved one holds."""

from __future__ import annotations

import typer

from .common import (DEVICE, MODEL, OUT, PRECISION, SIZE, STEPS, TASK, RunByDefault, choose_precision, load_model, n_option, parse_names,
                     parse_window, record_precision, sampling_config, seed_option)

trace_app = typer.Typer(cls=RunByDefault, no_args_is_help=True,
                        help="Record and inspect traces: step events plus reduced captures (`trace --model ...` means `trace run ...`).")


@trace_app.command("run")
def trace_run(
    out: str = OUT,
    model: str = MODEL,
    task: str = TASK,
    size: int | None = SIZE,
    n: int = n_option(8),
    seed: int = seed_option(20_000),
    steps: int | None = STEPS,
    capture: str = typer.Option("", "--capture", help="e.g. 'blocks.*.resid_post:norm,proj16' (';' separates specs, '@0-4' picks steps)."),
    budget_mb: float = typer.Option(512.0, "--budget-mb", help="Refuse plans whose captures would exceed this."),
    fields: str = typer.Option("x0_hat", "--fields", help="Event tensors to keep per step: x, x0_hat, velocity, x_next."),
    k: int = typer.Option(1, "--k", min=1, help="Record a latent-trajectory ensemble of K seeds per instance (1: plain sampling)."),
    window: str = typer.Option("0:2", "--window", help="With --k > 1: merge during steps START:END."),
    rule: str = typer.Option("mean_xt", "--rule", help="With --k > 1: mean_xt | mean_v | mean_x0_renoise."),
    after: str = typer.Option("single", "--after", help="With --k > 1: all (continue K, keep the first) or single."),
    device: str = DEVICE,
    precision: str = PRECISION,
) -> None:
    """Sample held-out instances and save a trace (events + reduced captures) to OUT."""
    from ..ensemble import EnsembleConfig
    from ..probes.common import ProbeConfig, batches
    from ..runner import noise_seed
    from ..trace import CapturePlan, describe, record

    choice = choose_precision(precision, device)
    sampling = sampling_config(model, steps, None)  # the model's shift
    steps = sampling.steps
    cfg = ProbeConfig(model=model, task=task, size=size, n=n, seed=seed, batch=n, device=device, sampling=sampling,
                      precision=choice.precision.value)
    ens = None
    if k > 1:
        ens = EnsembleConfig(k=k, window=parse_window(window), rule=rule, after=after)
        ens.check(steps)
    plan = CapturePlan.parse(capture, budget_mb)
    den = load_model(model, device, choice)
    (batch, noise), = batches(den, cfg)
    if ens is not None:  # the K noises of `steplens ensemble` for the same instances
        noise = [noise_seed(s, j) for s in cfg.seeds() for j in range(k)]
    tr = record(den, batch, noise, cfg.sampling, plan, fields=tuple(parse_names(fields)),
                config={"model": model, "task": task, "size": cfg.size, "n": n, "seed": seed, "steps": steps, "capture": capture,
                        "seeds": cfg.seeds(), "precision": choice.to_dict()}, ensemble=ens)
    tr.save(out)
    record_precision(out, choice)
    typer.echo(describe(tr))
    typer.echo(f"wrote {out}")


@trace_app.command("show")
def trace_show(path: str = typer.Argument(..., help="A trace folder.")) -> None:
    """Print what a saved trace holds (no model needed)."""
    from ..trace import Trace, describe

    typer.echo(describe(Trace.load(path)))
