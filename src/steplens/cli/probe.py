"""`steplens probe ...`: the paper's analyses as commands (thin layer over steplens.probes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from .common import (MODEL, OUT, PRECISION, PROMPT_EMBEDS, RAY, SAMPLER, SHIFT, SIZE, STEPS, TASK, WORKERS, batch_option, load_model,
                     n_option, parse_ints, parse_window, record_precision, seed_option)

probe_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's analyses on any model: cos, perturb, cka, layers, behaviour.")

SEED = seed_option(20_000)
EVERY = typer.Option(3, "--every", min=1, help="Inject at every k-th step.")
MODE = typer.Option("replace", "--mode", help="replace: fresh noise; add: x += strength * sigma_next * noise.")
STRENGTH = typer.Option(1.0, "--strength", help="Scale of added noise (--mode add).")


def _run(out: str, body: Callable[..., dict[str, Any]], model: str, task: str, size: int, n: int, seed: int,
         steps: int, shift: float, batch: int, sampler: str = "euler", prompt_embeds: str | None = None,
         ray: str | None = None, workers: int | None = None, precision: str = "auto") -> None:
    """Build the probe config, load the model and run `body(den, cfg, ray_address=..., num_workers=...)`.

    Every probe folder is resumable: re-running the command skips the batches it already holds."""
    from ..precision import choose
    from ..probes.common import ProbeConfig
    from ..runner import SamplingConfig

    choice = choose(precision)
    cfg = ProbeConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch, precision=choice.precision.value,
                      sampling=SamplingConfig(sampler=sampler, steps=steps, shift=shift))
    if prompt_embeds and not model.startswith("wan:"):
        raise typer.BadParameter("--prompt-embeds applies to text-conditioned wan: models only")
    if prompt_embeds and ray:
        raise typer.BadParameter("--ray loads the model in each worker from --model; --prompt-embeds is not shipped to workers")
    den = load_model(model, choice, **({"text_encoder": False} if prompt_embeds else {}))
    if prompt_embeds:
        from ..evaluate_vbvr import load_prompt_embeds
        from ..tasks import get_task

        t = get_task(task)
        den.prompt_embeds, den.negative_prompt_embeds = load_prompt_embeds(prompt_embeds)(t.prompt(t.generate(seed, size)))
    summary = body(den, cfg, ray_address=ray, num_workers=workers)
    record_precision(out, choice)
    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo(f"wrote {out} ({len(json.dumps(summary))} bytes of summary)")


def _check_mode(mode: str) -> None:
    if mode not in ("replace", "add"):
        raise typer.BadParameter(f"--mode must be replace or add, got {mode!r}")


@probe_app.command("cos")
def cos(out: str = OUT, model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = n_option(16), seed: int = SEED,
        steps: int = STEPS, shift: float = SHIFT, batch: int = batch_option(16), prompt_embeds: str | None = PROMPT_EMBEDS,
        ray: str | None = RAY, workers: int | None = WORKERS, precision: str = PRECISION, sampler: str = SAMPLER,
        views: int = typer.Option(4, "--views", min=0, help="Samples to draw as strips and GIFs.")) -> None:
    """Chain-of-Steps: decode x0_hat at every step; candidate mass, lit branches, commit step."""
    from ..probes.cos import run_cos

    _run(out, lambda den, cfg, **kw: run_cos(den, cfg, out, n_views=views, **kw),
         model, task, size, n, seed, steps, shift, batch, sampler, prompt_embeds, ray, workers, precision)


@probe_app.command("perturb")
def perturb(out: str = OUT, model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = n_option(12), seed: int = SEED,
            steps: int = STEPS, shift: float = SHIFT, batch: int = batch_option(12), prompt_embeds: str | None = PROMPT_EMBEDS,
            ray: str | None = RAY, workers: int | None = WORKERS, precision: str = PRECISION, every: int = EVERY, mode: str = MODE,
            strength: float = STRENGTH) -> None:
    """Noise at a step (all frames) vs noise at a frame (every step): score vs injection index, 95% CIs."""
    from ..probes.perturb import run_perturb

    _check_mode(mode)
    _run(out, lambda den, cfg, **kw: run_perturb(den, cfg, out, every=every, mode=mode, strength=strength, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, precision)


@probe_app.command("cka")
def cka(out: str = OUT, model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = n_option(16), seed: int = SEED,
        steps: int = STEPS, shift: float = SHIFT, batch: int = batch_option(16), prompt_embeds: str | None = PROMPT_EMBEDS,
        ray: str | None = RAY, workers: int | None = WORKERS, precision: str = PRECISION, every: int = EVERY,
        layers: str = typer.Option("", "--layers", help="Comma-separated block indices (default: middle and last)."),
        mode: str = MODE, strength: float = STRENGTH) -> None:
    """Information flow: 1 - CKA between clean and perturbed states, injection step x observed step."""
    from ..probes.perturb import run_cka

    _check_mode(mode)
    ls = parse_ints(layers, "--layers") or None
    _run(out, lambda den, cfg, **kw: run_cka(den, cfg, out, every=every, layers=ls, mode=mode, strength=strength, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, precision)


@probe_app.command("layers")
def layers(out: str = OUT, model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = n_option(6), seed: int = SEED,
           steps: int = STEPS, shift: float = SHIFT, batch: int = batch_option(6),
           step: int = typer.Option(-1, "--step", help="Step for the maps (default: steps/4)."),
           window: str = typer.Option("", "--window", help="Steps START:END over which blocks are skipped (default: all)."),
           prompt_embeds: str | None = PROMPT_EMBEDS, ray: str | None = RAY, workers: int | None = WORKERS,
           precision: str = PRECISION) -> None:
    """Layer specialisation: norm/PCA maps, energy, layer CKA, block skipping, activation patching."""
    from ..probes.layers import run_layers

    w = parse_window(window) if window else None
    if w is not None and w[1] > steps:
        raise typer.BadParameter(f"--window {window} ends after the {steps} sampling steps")
    _run(out, lambda den, cfg, **kw: run_layers(den, cfg, out, step=None if step < 0 else step, window=w, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, precision)


@probe_app.command("behaviour")
def behaviour(out: str = OUT, model: str = MODEL, task: str = TASK, size: int = SIZE, n: int = n_option(16), seed: int = SEED,
              steps: int = STEPS, shift: float = SHIFT, batch: int = batch_option(16), prompt_embeds: str | None = PROMPT_EMBEDS,
              ray: str | None = RAY, workers: int | None = WORKERS, precision: str = PRECISION) -> None:
    """Emergent behaviours: self-correction, working memory, perception before action."""
    from ..probes.behaviour import run_behaviour

    _run(out, lambda den, cfg, **kw: run_behaviour(den, cfg, out, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers, precision)
