"""`steplens evaluate-vbvr`: a Wan model on VBVR-format samples, end to end (thin layer over steplens.evaluate_vbvr)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import DEVICE, SHIFT, STEPS, model_sampling, sample_failures

commands = typer.Typer()


@commands.command("evaluate-vbvr")
def evaluate_vbvr_cmd(
    model: str = typer.Option(..., "--model", help="wan:DIR, a local diffusers Wan folder (I2V: Wan2.1/2.2 A14B or TI2V)."),
    data: Path = typer.Option(..., "--data", help="VBVR-format samples: ROOT/<sample>/ or ROOT/<split>/<task>/<sample>/."),
    out: Path = typer.Option(..., "--out", help="Run folder (re-running resumes)."),
    steps: int | None = STEPS,
    shift: float | None = SHIFT,
    guidance: float = typer.Option(5.0, "--guidance", help="CFG scale (high-noise expert for Wan2.2 A14B)."),
    guidance_2: float | None = typer.Option(None, "--guidance-2", help="CFG scale of the low-noise expert (default: --guidance)."),
    seed: int = typer.Option(1, "--seed", help="Noise seed, the same for every sample."),
    prompt_embeds: Path | None = typer.Option(None, "--prompt-embeds", help="Precomputed embeddings (.pt); skips loading the text encoder."),
    height: int = typer.Option(0, "--height", help="Generate at this height (0: the sample's, rounded down to a multiple of 16)."),
    width: int = typer.Option(0, "--width"),
    lora: str | None = typer.Option(None, "--lora", help="LoRA for every transformer (both experts of Wan2.2 A14B)."),
    lora_high: str | None = typer.Option(None, "--lora-high", help="LoRA for Wan2.2's high-noise expert."),
    lora_low: str | None = typer.Option(None, "--lora-low", help="LoRA for Wan2.2's low-noise expert."),
    lora_scale: float = typer.Option(1.0, "--lora-scale", help="Adapter scale of the LoRA(s)."),
    lora_scale_low: float | None = typer.Option(None, "--lora-scale-low", help="Adapter scale of the low-noise expert's LoRA (default: --lora-scale)."),
    device: str = DEVICE,
    offload: str = typer.Option("none", "--offload", help="model: large modules wait on the CPU until they run (one A14B expert on the GPU at a time)."),
    preset: str = typer.Option("paper", "--preset", help="paper (expert switch at 875, shift 5) or folder (the folder's boundary_ratio and shift)."),
    vae_tiling: bool = typer.Option(False, "--vae-tiling", help="Decode in tiles (less VAE memory)."),
) -> None:
    """Generate every VBVR sample with a Wan model and score it with its task's scorer; exit 1 if some samples failed, 2 if all did."""
    from ..evaluate_vbvr import VbvrRunConfig, evaluate_vbvr
    from ..models.registry import with_options
    from ..models.wan import load_wan

    path = model.removeprefix("wan:")
    steps, shift = model_sampling(with_options(f"wan:{path}", preset=preset), steps, shift)
    cfg = VbvrRunConfig(model=model, data=str(data), steps=steps, shift=shift, guidance=guidance, guidance_2=guidance_2,
                        seed=seed, prompt_embeds=None if prompt_embeds is None else str(prompt_embeds), height=height,
                        width=width, lora=lora, lora_high=lora_high, lora_low=lora_low, lora_scale=lora_scale,
                        lora_scale_low=lora_scale_low, preset=preset, offload=offload)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such data folder")
    den = load_wan(path, device=device, lora=lora, lora_high=lora_high, lora_low=lora_low, lora_scale=lora_scale,
                   lora_scale_low=lora_scale_low, text_encoder=prompt_embeds is None, guidance_scale=guidance,
                   guidance_scale_2=guidance_2, offload=offload, preset=preset, vae_tiling=vae_tiling)
    summary = evaluate_vbvr(den, cfg, out, echo=typer.echo)
    typer.echo(json.dumps({k: summary[k] for k in ("n", "n_errors", "success", "score")}))
    if summary["n_errors"]:
        raise sample_failures(summary["n_errors"], summary["n"], summary["errors"][0], "run and scored")
