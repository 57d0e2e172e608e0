"""Layer specialisation within a step (paper section 5), through named hook points.

- token-norm and PCA maps: each layer's residual stream at one step, reshaped to the (frame, h, w)
  token grid; per-layer energy (mean token norm) per frame; layer x layer CKA.
- skip each block (identity) over all steps or a window: the solve-rate drop says which layers matter.
- activation patching: the writes of layer l (attention and MLP outputs) are copied from run A (another
  puzzle) into run B over a step window. Patching the whole residual stream would copy everything
  upstream (B's puzzle enters only at the input), so we patch what layer l adds; the curve over l
  shows where B's answer is overwritten by A's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..context import current_call
from ..hooks import hooks, tokens_to_grid
from ..interventions import patch_activations, record_activations, skip_blocks
from ..runner import Batch, generate
from ..stats import bootstrap_diff, proportion_ci
from ..tasks.maze import solution_mask
from .cka import cka_matrix
from .common import ProbeConfig, ProbeRun, chunks, plt, require_finite, run_sharded, save_npz, split_errors


def capture_step(den: Any, batch: Batch, noise: list[int], cfg: ProbeConfig, step: int) -> dict[int, Tensor]:
    """Each layer's residual stream (B, N, D) at denoising `step`."""
    depth = len(den.hook_blocks())
    acts: dict[int, Tensor] = {}

    def grab(t: Tensor, *, point) -> None:
        call = current_call()
        if call is not None and call.step == step and call.phase == "main":
            acts[point.layer] = t.detach().float().cpu()

    with hooks(den, {f"blocks.{i}.resid_post": grab for i in range(depth)}):
        generate(den, batch, noise, cfg.sampling)
    return acts


def pca_rgb(tokens: Tensor) -> np.ndarray:
    """(N, D) tokens -> (N, 3) colours in [0, 1] from the top 3 principal components."""
    x = tokens - tokens.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    p = x @ v[:3].T
    lo, hi = p.min(0).values, p.max(0).values
    return ((p - lo) / (hi - lo).clamp_min(1e-8)).numpy()


def _solved(den: Any, batch: Batch, lat: Tensor) -> np.ndarray:
    frames = den.decode(lat)
    return np.array([batch.task.score(i, f).success for i, f in zip(batch.instances, frames)], dtype=float)


def _path_iou(den: Any, lat: Tensor, insts: Sequence[Any]) -> np.ndarray:
    from .metrics import blueness, on_grid

    frames = den.decode(lat)
    out = []
    for f, inst in zip(frames, insts):
        truth = solution_mask(inst)
        blue = blueness(on_grid(f[-1], truth.shape)) >= 0.5
        out.append((blue & truth).sum() / max(1, (blue | truth).sum()))
    return np.array(out)


def layers_batch(den: Any, batch: Batch, noise: list[int], cfg: ProbeConfig, *, step: int, window: tuple[int, int],
                 patch_window: tuple[int, int], tick: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One batch: residual streams at `step`, a plain run, each block skipped, each layer's writes patched from a donor.

    Per sample: energy (L, F) mean token norm, cka (L, L), base (solved), skip[l] (solved), iou_own[l] /
    iou_donor[l] (path IoU with its own / the donor's answer); the batch's first sample also carries the
    norm and PCA maps. The donor of sample i is sample i+1 of the batch (another puzzle of the same size).
    """
    depth, b = len(den.hook_blocks()), len(batch.instances)
    tick = tick or (lambda k: None)
    grid = den.token_grid((b, *batch.latent_shape))
    acts = capture_step(den, batch, noise, cfg, step)
    norms = {l: a.norm(dim=-1) for l, a in acts.items()}  # (B, N)
    energy = np.stack([tokens_to_grid(norms[l], grid).mean(dim=(2, 3)).numpy() for l in range(depth)], axis=1)  # (B, L, F)
    recs: list[dict[str, Any]] = [{"energy": energy[i], "cka": cka_matrix([acts[l][i] for l in range(depth)]).numpy()} for i in range(b)]
    recs[0]["norm_map"] = np.stack([tokens_to_grid(norms[l][:1], grid)[0].numpy() for l in range(depth)])  # (L, F, H, W)
    recs[0]["pca_map"] = np.stack([pca_rgb(acts[l][0]).reshape(*grid, 3) for l in range(depth)])  # (L, F, H, W, 3)
    tick(b)
    plain = generate(den, batch, noise, cfg.sampling)
    require_finite(plain)
    for r, v in zip(recs, _solved(den, batch, plain)):
        r.update(base=float(v), skip=[], iou_own=[], iou_donor=[])
    tick(b)
    for l in range(depth):
        with hooks(den, skip_blocks([l], steps=range(*window))):
            for r, v in zip(recs, _solved(den, batch, generate(den, batch, noise, cfg.sampling))):
                r["skip"].append(float(v))
        tick(b)
    perm = [(i + 1) % b for i in range(b)]
    donor = Batch(batch.task, [batch.instances[i] for i in perm], batch.cond.index(perm), batch.latent_shape, batch.truth[perm])
    every = [f"blocks.{l}.{site}" for l in range(depth) for site in ("attn_out", "mlp_out")]
    with record_activations(den, every, steps=range(*patch_window)) as store:  # the donor run, once for all layers
        generate(den, donor, [noise[i] for i in perm], cfg.sampling)
    for l in range(depth):
        with hooks(den, patch_activations(store, [f"blocks.{l}.attn_out", f"blocks.{l}.mlp_out"], steps=range(*patch_window))):
            lat = generate(den, batch, noise, cfg.sampling)
        for r, own, other in zip(recs, _path_iou(den, lat, batch.instances), _path_iou(den, lat, donor.instances)):
            r["iou_own"].append(float(own))
            r["iou_donor"].append(float(other))
        tick(b)
    return recs


def run_layers(den: Any, cfg: ProbeConfig, out: str, *, step: int | None = None, window: tuple[int, int] | None = None,
               patch_window: tuple[int, int] | None = None, progress: bool = True, ray_address: str | None = None,
               num_workers: int | None = None) -> dict[str, Any]:
    depth = len(den.hook_blocks())
    n_steps = cfg.sampling.steps
    step = n_steps // 4 if step is None else step
    window = window or (0, n_steps)
    patch_window = patch_window or (0, n_steps // 2)
    if any(len(c) < 2 for c in chunks(cfg)):
        raise ValueError(f"the layer probe patches each sample from another one of its batch: n={cfg.n} in batches of "
                         f"{cfg.batch} leaves a batch of one (choose n and --batch so that every batch holds two or more)")
    run_ = ProbeRun(out, "probe-layers", {"probe": cfg.__dict__ | {"sampling": cfg.sampling.__dict__}, "step": step,
                                          "window": list(window), "patch_window": list(patch_window)})
    fn = partial(layers_batch, step=step, window=tuple(window), patch_window=tuple(patch_window))
    recs = run_sharded(den, cfg, fn, folder=run_.folder, label="layers", work_per_sample=2 + 2 * depth, progress=progress,
                       ray_address=ray_address, num_workers=num_workers)
    ok, errors = split_errors(recs)
    n = len(ok)
    base_all = np.array([r["base"] for r in ok])
    drops = {l: bootstrap_diff([r["skip"][l] for r in ok], base_all) for l in range(depth)}  # base - skipped
    patch_b = {l: proportion_ci([r["iou_own"][l] for r in ok]) for l in range(depth)}
    patch_a = {l: proportion_ci([r["iou_donor"][l] for r in ok]) for l in range(depth)}
    flip = next((l for l in range(depth) if patch_a[l][0] > patch_b[l][0]), None)
    energy = np.stack([r["energy"] for r in ok]).mean(0)  # (L, F)
    cka = np.stack([r["cka"] for r in ok]).mean(0)
    first = next(r for r in ok if "norm_map" in r)
    maps = {"norm": first["norm_map"], "pca": first["pca_map"]}
    save_npz(run_.root / "layers.npz", norm_maps=maps["norm"], pca_maps=maps["pca"], energy=energy, cka=cka)
    _plots(run_, maps, energy, cka, drops, patch_a, patch_b, step, window, patch_window)
    ranked = sorted(drops, key=lambda l: -drops[l][0])
    summary = {"n": n, "n_errors": len(errors), "errors": errors, "depth": depth, "step": step, "clean_solve_rate": float(base_all.mean()),
               "skip_drop": {str(l): {"drop": d[0], "ci95": [d[1], d[2]]} for l, d in drops.items()},
               "most_important_layers": ranked[:3],
               "patch_iou_own": {str(l): v[0] for l, v in patch_b.items()}, "patch_iou_donor": {str(l): v[0] for l, v in patch_a.items()},
               "patch_flip_layer": flip, "energy_per_frame": energy.tolist(), "layer_cka": cka.tolist()}
    text = [f"layers of a {depth}-block model on {n} {cfg.task} {cfg.size}x{cfg.size} instances (maps at step {step})",
            "solve-rate drop when a block is skipped (steps %d-%d): " % window
            + ", ".join(f"L{l} {drops[l][0]:+.2f}" for l in range(depth)),
            f"most important layers: {ranked[:3]}",
            "patching layer writes from another puzzle (steps %d-%d): path IoU with own/donor answer: " % patch_window
            + ", ".join(f"L{l} {patch_b[l][0]:.2f}/{patch_a[l][0]:.2f}" for l in range(depth)),
            f"outcome flips to the donor from layer: {flip}"]
    return run_.finish(summary, "\n".join(text))


def _plots(run_: ProbeRun, maps: dict[str, np.ndarray], energy: np.ndarray, cka: np.ndarray, drops: dict, patch_a: dict,
           patch_b: dict, step: int, window: tuple[int, int], patch_window: tuple[int, int]) -> None:
    pyplot = plt()
    depth, f = maps["norm"].shape[:2]
    for key, title in (("norm", "token L2 norm"), ("pca", "PCA (top 3 components as RGB)")):
        fig, axes = pyplot.subplots(depth, f, figsize=(1.3 * f, 1.3 * depth), squeeze=False)
        for l in range(depth):
            for fr in range(f):
                ax = axes[l, fr]
                ax.imshow(maps[key][l, fr], interpolation="nearest", cmap="viridis" if key == "norm" else None)
                ax.set_xticks([])
                ax.set_yticks([])
                if fr == 0:
                    ax.set_ylabel(f"L{l}", fontsize=8)
                if l == 0:
                    ax.set_title(f"frame {fr}", fontsize=8)
        fig.suptitle(f"{title}, step {step}", fontsize=9)
        fig.tight_layout()
        fig.savefig(run_.figure(f"layers_{key}.png", f"Per-layer {title}",
                                f"Residual stream of each layer (rows) on the token grid of each frame (columns), one sample at step {step}."), dpi=110)
        pyplot.close(fig)
    fig, axes = pyplot.subplots(1, 4, figsize=(17, 3.4))
    im = axes[0].imshow(energy, aspect="auto", cmap="viridis")
    axes[0].set_xlabel("frame")
    axes[0].set_ylabel("layer")
    axes[0].set_title("mean token norm", fontsize=9)
    fig.colorbar(im, ax=axes[0])
    im = axes[1].imshow(cka, vmin=0, vmax=1, cmap="magma")
    axes[1].set_title("layer x layer CKA", fontsize=9)
    fig.colorbar(im, ax=axes[1])
    ls = list(drops)
    axes[2].errorbar(ls, [drops[l][0] for l in ls], yerr=[[drops[l][0] - drops[l][1] for l in ls], [drops[l][2] - drops[l][0] for l in ls]],
                     marker="o", capsize=3)
    axes[2].set_title(f"solve-rate drop, block skipped (steps {window[0]}-{window[1]})", fontsize=9)
    axes[2].set_xlabel("layer")
    axes[3].plot(ls, [patch_b[l][0] for l in ls], "o-", label="own answer")
    axes[3].plot(ls, [patch_a[l][0] for l in ls], "s-", label="donor's answer")
    axes[3].set_title(f"patch layer writes from another puzzle (steps {patch_window[0]}-{patch_window[1]})", fontsize=9)
    axes[3].set_xlabel("layer")
    axes[3].set_ylabel("path IoU")
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_.figure("layers_summary.png", "Layer specialisation",
                            "Energy per frame, similarity between layers, the cost of skipping each block, and activation patching."), dpi=110)
    pyplot.close(fig)


def demo_layers(den: Any, cfg: ProbeConfig, out: str, demo: Any, progress: bool) -> dict[str, Any]:
    from dataclasses import replace

    s = run_layers(den, replace(cfg, n=min(cfg.n, 4), batch=min(cfg.n, 4)), out, progress=progress)
    return {k: s[k] for k in ("most_important_layers", "skip_drop", "patch_flip_layer")}
