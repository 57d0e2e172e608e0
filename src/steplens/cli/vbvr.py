"""`steplens evaluate-vbvr`: a Wan model on VBVR-format samples, end to end (thin layer over steplens.evaluate_vbvr)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import sample_failures

commands = typer.Typer()


@commands.command("evaluate-vbvr")
def evaluate_vbvr_cmd(
    model: str = typer.Option(..., "--model", help="wan:DIR, a local diffusers Wan folder (I2V: Wan2.1/2.2 A14B or TI2V)."),
    data: Path = typer.Option(..., "--data", help="VBVR-format samples: ROOT/<sample>/ or ROOT/<split>/<task>/<sample>/."),
    out: Path = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    steps: int = typer.Option(50, "--steps", min=1),
    shift: float = typer.Option(5.0, "--shift"),
    guidance: float = typer.Option(5.0, "--guidance", help="CFG scale (high-noise expert for Wan2.2 A14B)."),
    guidance_2: float | None = typer.Option(None, "--guidance-2", help="CFG scale of the low-noise expert (default: --guidance)."),
    seed: int = typer.Option(1, "--seed", help="Noise seed, the same for every sample."),
    prompt_embeds: Path | None = typer.Option(None, "--prompt-embeds", help="Precomputed embeddings (.pt); skips loading the text encoder."),
    height: int = typer.Option(0, "--height", help="Generate at this height (0: the sample's, rounded down to a multiple of 16)."),
    width: int = typer.Option(0, "--width"),
    lora: str | None = typer.Option(None, "--lora", help="LoRA for a one-transformer model."),
    lora_high: str | None = typer.Option(None, "--lora-high", help="LoRA for Wan2.2's high-noise expert."),
    lora_low: str | None = typer.Option(None, "--lora-low", help="LoRA for Wan2.2's low-noise expert."),
    device: str = typer.Option("auto", "--device", help="auto: cuda if available, else cpu."),
) -> None:
    """Generate every VBVR sample with a Wan model and score it with its task's scorer; exit 1 if some samples failed, 2 if all did."""
    import torch

    from ..evaluate_vbvr import VbvrRunConfig, evaluate_vbvr
    from ..models.wan import load_wan

    cfg = VbvrRunConfig(model=model, data=str(data), steps=steps, shift=shift, guidance=guidance, guidance_2=guidance_2,
                        seed=seed, prompt_embeds=None if prompt_embeds is None else str(prompt_embeds), height=height,
                        width=width, lora=lora, lora_high=lora_high, lora_low=lora_low)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such data folder")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    den = load_wan(model.removeprefix("wan:"), device=dev, lora=lora, lora_high=lora_high, lora_low=lora_low,
                   text_encoder=prompt_embeds is None, guidance_scale=guidance, guidance_scale_2=guidance_2)
    summary = evaluate_vbvr(den, cfg, out, echo=typer.echo)
    typer.echo(json.dumps({k: summary[k] for k in ("n", "n_errors", "success", "score")}))
    if summary["n_errors"]:
        raise sample_failures(summary["n_errors"], summary["n"], summary["errors"][0], "run and scored")
