"""`steplens probe ...`: the paper's analyses as commands (thin layer over steplens.probes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer

probe_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's analyses on any model: cos, perturb, cka, layers, behaviour.")

_COMMON = {
    "model": typer.Option("maze", "--model", help="Shipped model name, exported path, or wan:DIR."),
    "task": typer.Option("maze", "--task"),
    "size": typer.Option(5, "--size"),
    "n": typer.Option(16, "--n", help="Held-out instances."),
    "seed": typer.Option(20_000, "--seed", help="First held-out instance seed."),
    "steps": typer.Option(20, "--steps"),
    "shift": typer.Option(1.0, "--shift"),
    "batch": typer.Option(16, "--batch"),
    "prompt_embeds": typer.Option(None, "--prompt-embeds",
                                  help="wan: models: precomputed prompt embeddings (.pt, as evaluate-vbvr takes); skips the text encoder."),
    "ray": typer.Option(None, "--ray", metavar="ADDRESS",
                        help="Shard the samples over Ray workers: 'local' starts a local cluster, else a cluster address. Needs steplens[ray]."),
    "workers": typer.Option(None, "--workers", min=1, help="With --ray: most batches in flight (default: the cluster's GPUs, else CPUs)."),
}


def _run(out: str, body: Callable[..., dict[str, Any]], model: str, task: str, size: int, n: int, seed: int,
         steps: int, shift: float, batch: int, sampler: str = "euler", prompt_embeds: str | None = None,
         ray: str | None = None, workers: int | None = None) -> None:
    """Load the model, build the probe config and run `body(den, cfg, ray_address=..., num_workers=...)`; errors exit 2.

    Every probe folder is resumable: re-running the command skips the batches it already holds."""
    from .models.registry import load
    from .probes.common import ProbeConfig
    from .runner import SamplingConfig

    try:
        cfg = ProbeConfig(model=model, task=task, size=size, n=n, seed=seed, batch=batch,
                          sampling=SamplingConfig(sampler=sampler, steps=steps, shift=shift))
        if prompt_embeds and not model.startswith("wan:"):
            raise ValueError("--prompt-embeds applies to text-conditioned wan: models only")
        if prompt_embeds and ray:
            raise ValueError("--ray loads the model in each worker from --model; --prompt-embeds is not shipped to workers")
        den = load(model, **({"text_encoder": False} if prompt_embeds else {}))
        if prompt_embeds:
            from .cli_wan import load_prompt_embeds
            from .tasks import get_task

            t = get_task(task)
            den.prompt_embeds, den.negative_prompt_embeds = load_prompt_embeds(prompt_embeds)(t.prompt(t.generate(seed, size)))
        summary = body(den, cfg, ray_address=ray, num_workers=workers)
    except Exception as e:  # noqa: BLE001 - one clear line, non-zero exit
        typer.echo(f"error: {type(e).__name__}: {e}", err=True)
        raise typer.Exit(2) from None
    from pathlib import Path

    typer.echo((Path(out) / "summary.txt").read_text())
    typer.echo(f"wrote {out} ({len(json.dumps(summary))} bytes of summary)")


@probe_app.command("cos")
def cos(out: str = typer.Option(..., "--out"), model: str = _COMMON["model"], task: str = _COMMON["task"], size: int = _COMMON["size"],
        n: int = _COMMON["n"], seed: int = _COMMON["seed"], steps: int = _COMMON["steps"], shift: float = _COMMON["shift"],
        batch: int = _COMMON["batch"], prompt_embeds: str | None = _COMMON["prompt_embeds"],
        ray: str | None = _COMMON["ray"], workers: int | None = _COMMON["workers"], sampler: str = typer.Option("euler", "--sampler"),
        views: int = typer.Option(4, "--views", help="Samples to draw as strips and GIFs.")) -> None:
    """Chain-of-Steps: decode x0_hat at every step; candidate mass, lit branches, commit step."""
    from .probes.cos import run_cos

    _run(out, lambda den, cfg, **kw: run_cos(den, cfg, out, n_views=views, **kw),
         model, task, size, n, seed, steps, shift, batch, sampler, prompt_embeds, ray, workers)


_MODE = typer.Option("replace,renoise", "--mode",
                     help="One or more of replace (the paper's wording: unit noise), renoise (level-matched control: "
                          "(1 - sigma) x0_hat + sigma noise), add (x += strength * sigma * noise); comma-separated, each reported.")
_STRENGTH = typer.Option(1.0, "--strength", help="Scale of added noise (--mode add).")


@probe_app.command("perturb")
def perturb(out: str = typer.Option(..., "--out"), model: str = _COMMON["model"], task: str = _COMMON["task"], size: int = _COMMON["size"],
            n: int = typer.Option(12, "--n", help="Held-out instances."), seed: int = _COMMON["seed"], steps: int = _COMMON["steps"], shift: float = _COMMON["shift"],
            batch: int = typer.Option(12, "--batch"), prompt_embeds: str | None = _COMMON["prompt_embeds"],
            ray: str | None = _COMMON["ray"], workers: int | None = _COMMON["workers"], every: int = typer.Option(3, "--every", help="Inject at every k-th step."),
            mode: str = _MODE, strength: float = _STRENGTH,
            frame_window: str = typer.Option("", "--frame-window", metavar="A:B",
                                             help="Also corrupt each frame only after steps A..B-1, then release it: "
                                                  "does the answer survive, how fast does the frame's x0_hat recover.")) -> None:
    """Noise at a step (all frames) vs noise at a frame (every step): score vs injection index, 95% CIs."""
    from .probes.perturb import run_perturb

    _run(out, lambda den, cfg, **kw: run_perturb(den, cfg, out, every=every, mode=mode, strength=strength, frame_window=frame_window, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers)


@probe_app.command("cka")
def cka(out: str = typer.Option(..., "--out"), model: str = _COMMON["model"], task: str = _COMMON["task"], size: int = _COMMON["size"],
        n: int = typer.Option(8, "--n", help="Held-out instances."), seed: int = _COMMON["seed"], steps: int = _COMMON["steps"], shift: float = _COMMON["shift"],
        batch: int = _COMMON["batch"], prompt_embeds: str | None = _COMMON["prompt_embeds"],
        ray: str | None = _COMMON["ray"], workers: int | None = _COMMON["workers"], every: int = typer.Option(3, "--every", help="Inject at every k-th step."),
        layers: str = typer.Option("", "--layers", help="Comma-separated block indices (default: middle and last)."),
        mode: str = _MODE, strength: float = _STRENGTH) -> None:
    """Information flow: 1 - CKA between clean and perturbed x0_hat, outputs and block streams, injection step x later step."""
    from .probes.perturb import run_cka

    ls = [int(v) for v in layers.split(",") if v.strip()] or None
    _run(out, lambda den, cfg, **kw: run_cka(den, cfg, out, every=every, layers=ls, mode=mode, strength=strength, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers)


@probe_app.command("layers")
def layers(out: str = typer.Option(..., "--out"), model: str = _COMMON["model"], task: str = _COMMON["task"], size: int = _COMMON["size"],
           n: int = typer.Option(6, "--n"), seed: int = _COMMON["seed"], steps: int = _COMMON["steps"], shift: float = _COMMON["shift"],
           batch: int = typer.Option(6, "--batch"), step: int = typer.Option(-1, "--step", help="Step for the maps (default: steps/4)."),
           window: str = typer.Option("", "--window", help="Steps a:b over which blocks are skipped (default: all)."),
           prompt_embeds: str | None = _COMMON["prompt_embeds"],
           ray: str | None = _COMMON["ray"], workers: int | None = _COMMON["workers"]) -> None:
    """Layer specialisation: norm/PCA maps, energy, layer CKA, block skipping, activation patching."""
    from .probes.layers import run_layers

    w = tuple(int(v) for v in window.split(":")) if window else None
    _run(out, lambda den, cfg, **kw: run_layers(den, cfg, out, step=None if step < 0 else step, window=w, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers)


@probe_app.command("behaviour")
def behaviour(out: str = typer.Option(..., "--out"), model: str = _COMMON["model"], task: str = _COMMON["task"], size: int = _COMMON["size"],
              n: int = _COMMON["n"], seed: int = _COMMON["seed"], steps: int = _COMMON["steps"], shift: float = _COMMON["shift"],
              batch: int = _COMMON["batch"], prompt_embeds: str | None = _COMMON["prompt_embeds"],
              ray: str | None = _COMMON["ray"], workers: int | None = _COMMON["workers"]) -> None:
    """Emergent behaviours: self-correction, working memory, perception before action."""
    from .probes.behaviour import run_behaviour

    _run(out, lambda den, cfg, **kw: run_behaviour(den, cfg, out, **kw),
         model, task, size, n, seed, steps, shift, batch, "euler", prompt_embeds, ray, workers)


def register(app: typer.Typer) -> None:
    app.add_typer(probe_app, name="probe")
