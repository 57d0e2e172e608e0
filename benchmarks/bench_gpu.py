"""What steplens costs on real-size Wan models on one GPU: random weights, bf16, latent space (no VAE decode).

    python benchmarks/bench_gpu.py                 # Wan2.1-1.3B config (+ one Wan2.2-A14B expert if memory allows)
    python benchmarks/bench_gpu.py --no-a14b       # the 1.3B figures only
    python benchmarks/bench_gpu.py --tiny          # the same code path on tiny configs on the CPU (tests run this)

Prints one JSON line per figure: {"figure", "value", "unit", "target", "ok", ...}. Figures:
- plain_s:                    WanPipeline(output_type="latent") with FlowMatchEulerDiscreteScheduler (the reference);
- trace_over_plain:           steplens Euler over WanDenoiser, every step's x0_hat copied to the CPU (target <= 1.03);
- capture_over_plain:         trace plus reduced captures of every block (per-token L2 norm and token mean, per step,
                              layer and CFG branch, recorded as they happen) (target <= 1.15);
- ensemble_over_plain:        the paper's K=3 ensemble (mean of x_t over steps 0-1, then one trajectory), batched, in
                              plain runs (target <= 0.5 x K);
- ensemble_batched_over_sequential: K=3 trajectories all continued, batched vs one after another (no target: speed-up);
- peak_gib_no_offload / peak_gib_offload: two experts of this size sampled with both on the GPU vs offload="model"
                              (one expert at a time); the offload run must peak lower;
- a14b_expert_step_s / a14b_expert_peak_gib: one Wan2.2-A14B expert (40 layers, width 5120), a few CFG steps.
Times are medians over --reps after one warm-up. Random weights measure speed, not video quality. The whole run
is sized to finish within 8 minutes on one H200 (--budget-s stops optional parts early and says so).
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
WAN22_A14B_EXPERT = dict(WAN21_1_3B, num_attention_heads=40, attention_head_dim=128, in_channels=36, ffn_dim=13824, num_layers=40)
TINY = dict(WAN21_1_3B, num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32)
TINY_A14B = dict(TINY, in_channels=36, num_layers=3)
K = 3


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU: checks the script end to end")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--frames", type=int, default=33, help="pixel frames (4k+1)")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--a14b-steps", type=int, default=3)
    ap.add_argument("--shift", type=float, default=5.0)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--text-len", type=int, default=512, help="prompt embedding length (Wan pads to 512)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-a14b", action="store_true", help="skip the A14B expert")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip optional parts once this much time has passed")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if a.tiny:
        a.device = a.device or "cpu"
        a.frames, a.height, a.width, a.steps, a.text_len, a.reps = 9, 32, 32, 4, 8, 1
    a.device = a.device or "cuda"
    return a


def emit(figure: str, value: Any, unit: str, target: str | None = None, ok: bool | None = None, **extra: Any) -> dict[str, Any]:
    row = {"figure": figure, "value": value, "unit": unit, "target": target, "ok": ok, **extra}
    print(json.dumps(row), flush=True)
    return row


def timed(fn: Callable[[], Any], reps: int, sync: Callable[[], None]) -> tuple[float, Any]:
    """Median seconds of `reps` runs after one warm-up, and the last result."""
    out = fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def transformer(cfg: dict[str, Any], dev: Any, dtype: Any, seed: int) -> Any:
    """Random weights in `dtype`, the modules diffusers keeps in float32 in float32 (as from_pretrained does)."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype != torch.float16 else torch.float32)
    try:
        with torch.device(dev):
            t = WanTransformer3DModel(**cfg).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(old)
    keep = set(t._keep_in_fp32_modules or [])
    for name, p in t.named_parameters():
        p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return t


def tiny_vae() -> Any:
    """Only the VAE's config (z_dim, strides) is used in latent space: a tiny one keeps start-up short."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]).eval()


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; run with --tiny for the CPU check of this script", file=sys.stderr)
        return 2
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline

    from steplens.context import current_call
    from steplens.ensemble import EnsembleConfig, ensemble_latents
    from steplens.models.protocol import Cond
    from steplens.models.wan import WanDenoiser, wan_sigmas
    from steplens.sampling import sample, seeded_noise

    t_start = time.perf_counter()
    if a.tiny:
        torch.set_num_threads(1)  # tiny models gain nothing from threads
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cfg = TINY if a.tiny else WAN21_1_3B
    head = {"config": "tiny" if a.tiny else "wan2.1-1.3b", "device": torch.cuda.get_device_name(dev) if cuda else str(dev)}
    sched = FlowMatchEulerDiscreteScheduler(shift=a.shift)
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae().to(dev), scheduler=sched, transformer=transformer(cfg, dev, dtype, 0))
    pipe.set_progress_bar_config(disable=True)
    den = WanDenoiser.from_pipeline(pipe, guidance_scale=a.guidance)
    shape = den.latent_shape(a.frames, a.height, a.width)
    g = torch.Generator().manual_seed(a.seed)
    text = torch.randn(1, a.text_len, cfg["text_dim"], generator=g).to(dev)
    neg = torch.randn(1, a.text_len, cfg["text_dim"], generator=g).to(dev)
    x = seeded_noise(shape, [a.seed], device=dev)
    cond = Cond(text=text, negative_text=neg)
    sigmas = wan_sigmas(sched, a.steps).to(dev)
    head.update(latent_shape=list(shape), tokens=int(torch.tensor(den.token_grid((1, *shape))).prod()), steps=a.steps, cfg=a.guidance)

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
            out, _ = trace()
        finally:
            for h in handles:
                h.remove()
        return out, {k: (n.cpu(), m.cpu()) for k, (n, m) in store.items()}

    noises = seeded_noise(shape, [a.seed + j for j in range(K)], device=dev)
    paper = EnsembleConfig(k=K, window=(0, 2), rule="mean_xt", after="single")
    every = EnsembleConfig(k=K, window=(0, 2), rule="mean_xt", after="all")

    def ensemble() -> Any:
        return ensemble_latents(den, noises.clone(), sigmas, cond.repeat(K), paper)

    def batched() -> Any:
        return ensemble_latents(den, noises.clone(), sigmas, cond.repeat(K), every)

    def sequential() -> Any:
        return [sample(den, noises[j : j + 1].clone(), sigmas, cond) for j in range(K)]

    rows = []
    with torch.no_grad():
        t_plain, ref = timed(plain, a.reps, sync)
        rows.append(emit("plain_s", round(t_plain, 3), "s", **head))
        t_trace, (out, _) = timed(trace, a.reps, sync)
        diff = float((out.float() - ref.float()).abs().max())
        rows.append(emit("trace_over_plain", round(t_trace / t_plain, 3), "x", "<= 1.03", t_trace / t_plain <= 1.03,
                         trace_s=round(t_trace, 3), max_abs_diff_vs_plain=diff))
        t_cap, (_, store) = timed(capture, a.reps, sync)
        mib = sum(n.numel() * n.element_size() + m.numel() * m.element_size() for n, m in store.values()) / 2**20
        rows.append(emit("capture_over_plain", round(t_cap / t_plain, 3), "x", "<= 1.15", t_cap / t_plain <= 1.15,
                         capture_s=round(t_cap, 3), captures=len(store), capture_mib=round(mib, 2)))
        t_ens, _ = timed(ensemble, a.reps, sync)
        rows.append(emit("ensemble_over_plain", round(t_ens / t_plain, 3), "plain runs", f"<= {0.5 * K}", t_ens / t_plain <= 0.5 * K,
                         k=K, window=[0, 2], after="single", ensemble_s=round(t_ens, 3)))
        t_b, _ = timed(batched, a.reps, sync)
        t_s, _ = timed(sequential, a.reps, sync)
        rows.append(emit("ensemble_batched_over_sequential", round(t_b / t_s, 3), "x", None, None, k=K, after="all",
                         batched_s=round(t_b, 3), sequential_s=round(t_s, 3)))

        # peak memory: two experts of this size (an A14B-shaped pair), both resident vs offload="model"
        i2v_cfg = dict(cfg, in_channels=36)
        high, low = transformer(i2v_cfg, "cpu", dtype, 1), transformer(i2v_cfg, "cpu", dtype, 2)
        pair = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, image_encoder=None, image_processor=None, vae=tiny_vae(),
                                       scheduler=sched, transformer=high, transformer_2=low, boundary_ratio=0.875)
        image = (torch.rand(1, a.height, a.width, 3, generator=g) * 255).to(torch.uint8).numpy()
        peaks = {}
        for mode in ("none", "model"):
            if mode == "none":
                pair.to(dev)
            d2 = WanDenoiser.from_pipeline(pair, offload=mode, device=dev)
            c2 = d2.condition(image, a.frames, text=text, negative_text=neg)
            if cuda:
                sync()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            sample(d2, x.clone(), sigmas, c2)
            sync()
            secs = time.perf_counter() - t0
            peaks[mode] = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None
            est = d2.memory_estimate(shape, 1)["total"] / 2**30
            rows.append(emit(f"peak_gib_{'offload' if mode == 'model' else 'no_offload'}", None if peaks[mode] is None else round(peaks[mode], 2),
                             "GiB", None, None, sample_s=round(secs, 3), estimate_gib=round(est, 3), moves=len(d2.moves),
                             note=None if cuda else "no CUDA: peak memory is measured on GPUs only"))
            if mode == "none":
                pair.to("cpu")
        if cuda:
            rows[-1]["ok"] = peaks["model"] < peaks["none"]
            rows[-1]["target"] = "< peak_gib_no_offload"
        del pair, high, low, d2
        if cuda:
            torch.cuda.empty_cache()

        # one Wan2.2-A14B expert, if there is room and time
        need = 14.3e9 * 2 / 2**30 + 20  # bf16 weights + activations at 480p, GiB (rough)
        free = torch.cuda.mem_get_info(dev)[0] / 2**30 if cuda else None
        if a.no_a14b:
            rows.append(emit("a14b_expert_step_s", None, "s", note="skipped (--no-a14b)"))
        elif cuda and free < need:
            rows.append(emit("a14b_expert_step_s", None, "s", note=f"skipped: {free:.0f} GiB free, about {need:.0f} needed"))
        elif time.perf_counter() - t_start > a.budget_s:
            rows.append(emit("a14b_expert_step_s", None, "s", note=f"skipped: past the {a.budget_s:.0f} s budget"))
        else:
            expert = transformer(TINY_A14B if a.tiny else WAN22_A14B_EXPERT, dev, dtype, 3)
            one = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, image_encoder=None, image_processor=None,
                                          vae=tiny_vae().to(dev), scheduler=sched, transformer=expert)
            d3 = WanDenoiser.from_pipeline(one, guidance_scale=a.guidance)
            c3 = d3.condition(image, a.frames, text=text, negative_text=neg)
            s3 = wan_sigmas(sched, a.a14b_steps).to(dev)
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            t3, _ = timed(lambda: sample(d3, x.clone(), s3, c3), 1, sync)
            rows.append(emit("a14b_expert_step_s", round(t3 / a.a14b_steps, 3), "s per CFG step", None, None, steps=a.a14b_steps,
                             params_b=round(sum(p.numel() for p in expert.parameters()) / 1e9, 2)))
            rows.append(emit("a14b_expert_peak_gib", round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if cuda else None, "GiB"))
    emit("total_s", round(time.perf_counter() - t_start, 1), "s", "<= 480", time.perf_counter() - t_start <= 480)
    return 0


if __name__ == "__main__":
    sys.exit(main())
