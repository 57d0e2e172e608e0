"""What steplens costs on a real-size Wan: the Wan2.1-1.3B transformer config, random weights, bf16, one GPU.

    python benchmarks/bench_wan_gpu.py                      # 1.3B, 480x832, 33 frames, 20 steps, CFG 5
    python benchmarks/bench_wan_gpu.py --frames 81 --steps 50
    python benchmarks/bench_wan_gpu.py --preset tiny --device cpu   # smoke test of this script (no GPU)

Times, median over --reps after one warm-up, each in latent space (no VAE decode):
- plain:    WanPipeline(output_type="latent") with FlowMatchEulerDiscreteScheduler (the reference);
- trace:    steplens Euler over WanDenoiser, every step's x0_hat copied to the CPU;
- capture:  trace plus reduced captures on all blocks (per-token L2 norm and the token mean, per step,
            layer and CFG branch, recorded as they happen);
- ensemble: the 3-seed ensemble batched (mean of x_t over steps 0-1, then all three continue) vs 3
            single-seed runs one after another.
Prints one JSON object with the seconds, ratios and peak GPU memory. Random weights: the numbers measure
speed, not video quality. Without CUDA the 1.3B preset exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

WAN21_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                  text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                  eps=1e-6, image_dim=None, rope_max_seq_len=1024)
TINY = dict(WAN21_1_3B, num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32)
PRESETS = {"1.3b": WAN21_1_3B, "tiny": TINY}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="1.3b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=33, help="pixel frames (4k+1)")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--shift", type=float, default=5.0)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--text-len", type=int, default=512, help="prompt embedding length (Wan pads to 512)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args(argv)


def timed(fn: Callable[[], Any], reps: int, sync: Callable[[], None]) -> tuple[float, list[float], Any]:
    """Median seconds of `reps` runs after one warm-up, all times, and the last result."""
    out = fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_wan_gpu: no CUDA device here; this benchmark needs a GPU (try --preset tiny --device cpu for a smoke test)",
              file=sys.stderr)
        return 2
    if a.preset != "tiny" and not a.device.startswith("cuda"):
        print("bench_wan_gpu: the 1.3B preset runs on CUDA only", file=sys.stderr)
        return 2
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    from steplens.context import current_call
    from steplens.ensemble import EnsembleConfig, ensemble_latents
    from steplens.models.protocol import Cond
    from steplens.models.wan import WanDenoiser, wan_sigmas
    from steplens.sampling import sample, seeded_noise

    dev = torch.device(a.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = PRESETS[a.preset]
    torch.manual_seed(0)
    with torch.device(dev):
        transformer = WanTransformer3DModel(**cfg).eval().requires_grad_(False)
    keep = set(transformer._keep_in_fp32_modules or [])
    for pname, p in transformer.named_parameters():  # as from_pretrained(torch_dtype=bf16) does: norms, time embedding in fp32
        p.data = p.data.to(torch.float32 if keep & set(pname.split(".")) else dtype)
    # only the VAE's config (z_dim, strides) is used in latent space: a tiny one keeps start-up short
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    sched = FlowMatchEulerDiscreteScheduler(shift=a.shift)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=sched, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    den = WanDenoiser.from_pipeline(pipe, guidance_scale=a.guidance)
    shape = den.latent_shape(a.frames, a.height, a.width)
    g = torch.Generator().manual_seed(a.seed)
    text = torch.randn(1, a.text_len, cfg["text_dim"], generator=g).to(dev)
    neg = torch.randn(1, a.text_len, cfg["text_dim"], generator=g).to(dev)
    x = seeded_noise(shape, [a.seed], device=dev)
    cond = Cond(text=text, negative_text=neg)
    sigmas = wan_sigmas(sched, a.steps).to(dev)
    layers = len(den.hook_blocks())

    def plain() -> Any:
        return pipe(prompt_embeds=text, negative_prompt_embeds=neg, latents=x.clone(), height=a.height, width=a.width,
                    num_frames=a.frames, num_inference_steps=a.steps, guidance_scale=a.guidance, output_type="latent").frames

    def trace() -> Any:
        x0s = []
        out = sample(den, x.clone(), sigmas, cond, callback=lambda e: x0s.append(e.x0_hat.to("cpu", non_blocking=True)))
        return out, x0s

    def capture() -> Any:
        store: dict[tuple[int, int, str], tuple[Any, Any]] = {}

        def hook(layer: int) -> Callable[..., None]:
            def fn(module: Any, args: Any, out: Any) -> None:
                c = current_call()
                store[(c.step, layer, c.branch)] = (out.float().norm(dim=-1).to(torch.float16), out.float().mean(dim=1))  # (B, N), (B, D)
            return fn

        handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(den.hook_blocks())]
        try:
            out, x0s = trace()
        finally:
            for h in handles:
                h.remove()
        return out, x0s, {k: (n.cpu(), m.cpu()) for k, (n, m) in store.items()}

    k = 3
    noises = seeded_noise(shape, [a.seed + j for j in range(k)], device=dev)
    ens = EnsembleConfig(k=k, window=(0, 2), rule="mean_xt", after="all")

    def batched() -> Any:
        return ensemble_latents(den, noises.clone(), sigmas, cond.repeat(k), ens)

    def sequential() -> Any:
        return [sample(den, noises[j : j + 1].clone(), sigmas, cond) for j in range(k)]

    res: dict[str, Any] = {"preset": a.preset, "device": torch.cuda.get_device_name(dev) if cuda else str(dev), "dtype": str(dtype),
                           "latent_shape": list(shape), "tokens": int(torch.tensor(den.token_grid((1, *shape))).prod()),
                           "layers": layers, "steps": a.steps, "cfg": a.guidance, "reps": a.reps}
    with torch.no_grad():
        for name, fn in (("plain", plain), ("trace", trace), ("capture", capture), ("ensemble_batched", batched),
                         ("ensemble_sequential", sequential)):
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            med, times, out = timed(fn, a.reps, sync)
            res[f"{name}_s"] = round(med, 3)
            res[f"{name}_all_s"] = [round(t, 3) for t in times]
            if cuda:
                res[f"{name}_peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
            if name == "plain":
                ref = out.float()
            elif name == "trace":
                res["max_abs_diff_vs_plain"] = float((out[0].float() - ref).abs().max())
            elif name == "capture":
                res["captures"] = len(out[2])
                res["capture_mib"] = round(sum(n.numel() * n.element_size() + m.numel() * m.element_size() for n, m in out[2].values()) / 2**20, 2)
    res["trace_over_plain"] = round(res["trace_s"] / res["plain_s"], 3)
    res["capture_over_plain"] = round(res["capture_s"] / res["plain_s"], 3)
    res["batched_over_sequential"] = round(res["ensemble_batched_s"] / res["ensemble_sequential_s"], 3)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
