"""Layer specialisation within a step (paper section 5), through named hook points.

- token-norm and PCA maps: each layer's residual stream at one step, reshaped to the (frame, h, w)
  token grid; per-layer energy (mean token norm) per frame; layer x layer CKA.
- token maps as numbers (`probes.tokenmaps`): per layer and step, linear-probe accuracy of scene vs
  background and action vs background tokens of the answer frame (for the maze: walls, path vs dead end).
- skip each block (identity) over all steps or a window: the solve-rate drop says which layers matter.
- activation patching from a donor run on another puzzle of the same size (same noise), over a step window,
  one layer at a time; each answer is scored against both puzzles: flip (the donor's solution), keep (its
  own) or break (neither). Two variants:
  `resid` (the paper's protocol): block L's output, all tokens, replaced. Where the puzzle enters only at the
  input (the reference model: no cross-attention to it), everything after L is then the donor's, so the
  outcome cannot depend on L; a flip layer can only appear where conditioning re-enters in later blocks.
  `writes`: only what block L adds (its attention and MLP outputs), so the rest of the stream stays the
  recipient's; the curve over L shows which layers' contributions carry the answer.
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
from ..config import write_json
from ..stats import calibration_split, paired_diff, rate_record, wilson
from .cka import cka_matrix
from .common import ProbeConfig, ProbeRun, held_out, chunks, plt, require_finite, run_sharded, save_npz, split_errors
from .tokenmaps import capture_last_frame, stack_capture, token_labels


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


PATCH_SITES = {"resid": ("resid_post",), "writes": ("attn_out", "mlp_out")}
OUTCOMES = ("flip", "keep", "break")


def patch_points(den: Any, patch: str, layer: int) -> list[str]:
    """The hook points `patch` replaces at `layer`: its output (resid) or what it adds to the stream (writes)."""
    if patch not in PATCH_SITES:
        raise ValueError(f"--patch must be one of {sorted(PATCH_SITES)}, got {patch!r}")
    missing = [s for s in PATCH_SITES[patch] if s != "resid_post" and s not in den.hook_sites()]
    if missing:
        raise ValueError(f"--patch {patch} needs the hook sites {missing}, which this model does not declare (try --patch resid)")
    return [f"blocks.{layer}.{s}" for s in PATCH_SITES[patch]]


def outcome(task: Any, own: Any, donor: Any, frames: np.ndarray) -> tuple[str, float, float]:
    """A patched run's answer: "keep" (scores as its own puzzle's solution), "flip" (as the donor's), "break" (neither);
    with the partial scores against both."""
    a, b = task.score(own, frames), task.score(donor, frames)
    return ("keep" if a.success else "flip" if b.success else "break"), float(a.score), float(b.score)


def donor_batch(batch: Batch, shift: int) -> Batch:
    """Sample i's donor is sample i + shift of the batch (shift 0: itself, a control)."""
    b = len(batch.instances)
    perm = [(i + shift) % b for i in range(b)]
    return Batch(batch.task, [batch.instances[i] for i in perm], batch.cond.index(perm), batch.latent_shape, batch.truth[perm])


def patch_layers(den: Any, batch: Batch, noise: list[int], cfg: ProbeConfig, *, patch: str, window: tuple[int, int],
                 shift: int = 1, tick: Callable[[int], None] | None = None, budget_bytes: int = 2**28) -> list[dict[str, list]]:
    """Per sample and layer: the outcome of patching that layer from the donor's run over steps `window`.

    The donor run shares the recipient's noise, so the puzzle is the only difference between the two runs.
    Activations of every layer are recorded in one donor run when they fit in `budget_bytes`, else one layer at a time.
    """
    depth, b = len(den.hook_blocks()), len(batch.instances)
    donor = donor_batch(batch, shift)
    steps = range(*window)
    per_layer = [patch_points(den, patch, l) for l in range(depth)]
    n_tok = int(np.prod(den.token_grid((b, *batch.latent_shape))))
    width = getattr(den, "hidden_dim", 0) or 1
    est = depth * len(steps) * b * n_tok * width * 4 * len(per_layer[0]) * (2 if getattr(den, "do_cfg", False) else 1)
    recs: list[dict[str, list]] = [{"outcome": [], "score_own": [], "score_donor": []} for _ in range(b)]
    store: dict = {}
    if est <= budget_bytes:
        with record_activations(den, [p for ps in per_layer for p in ps], steps=steps) as store:
            generate(den, donor, noise, cfg.sampling)
    for l in range(depth):
        if est > budget_bytes:
            with record_activations(den, per_layer[l], steps=steps) as store:
                generate(den, donor, noise, cfg.sampling)
        with hooks(den, patch_activations(store, per_layer[l], steps=steps)):
            lat = generate(den, batch, noise, cfg.sampling)
        require_finite(lat)
        for r, own, other, frames in zip(recs, batch.instances, donor.instances, den.decode(lat)):
            kind, s_own, s_donor = outcome(batch.task, own, other, frames)
            r["outcome"].append(kind)
            r["score_own"].append(s_own)
            r["score_donor"].append(s_donor)
        if tick:
            tick(b)
    return recs


def layers_batch(den: Any, batch: Batch, noise: list[int], cfg: ProbeConfig, *, step: int, window: tuple[int, int],
                 patch_window: tuple[int, int], patch: str = "resid", skip: bool = True, token_steps: Sequence[int] = (),
                 tick: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One batch: residual streams at `step`, a plain run (with token-map captures), each block skipped, each layer patched.

    Per sample: energy (L, F) mean token norm, cka (L, L), base (solved), skip[l] (solved), outcome[l] / score_own[l] /
    score_donor[l] of patching layer l from a donor, tokens (S', L+1, h*w, D) float16 and labels (h*w,) for the token
    maps; the batch's first sample also carries the norm and PCA maps. The donor of sample i is sample i+1 of the batch
    (another puzzle of the same size).
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
    mapping, store = capture_last_frame(den, token_steps, grid)
    with hooks(den, mapping):
        plain = generate(den, batch, noise, cfg.sampling)
    require_finite(plain)
    tokens = stack_capture(store, token_steps, depth) if token_steps else None
    for i, (r, v) in enumerate(zip(recs, _solved(den, batch, plain))):
        r.update(base=float(v), skip=[])
        if tokens is not None:
            r["tokens"] = tokens[i]
            r["labels"] = token_labels(batch.task.roles(batch.instances[i]), grid[1:])
    tick(b)
    for l in range(depth if skip else 0):
        with hooks(den, skip_blocks([l], steps=range(*window))):
            for r, v in zip(recs, _solved(den, batch, generate(den, batch, noise, cfg.sampling))):
                r["skip"].append(float(v))
        tick(b)
    for r, p in zip(recs, patch_layers(den, batch, noise, cfg, patch=patch, window=patch_window, tick=tick)):
        r.update(p)
    return recs


def flip_layer(rates: dict[str, np.ndarray]) -> dict[str, Any]:
    """Where patching flips the answer: the first layer whose flip rate exceeds its keep rate, and whether the
    outcome depends on depth at all (some layer keeps and a later one flips)."""
    flip, keep = rates["flip"], rates["keep"]
    depth = len(flip)
    first = next((l for l in range(depth) if flip[l] > keep[l]), None)
    exists = first is not None and any(keep[l] >= flip[l] for l in range(first))
    if first is None:
        note = "no layer's patch flips the answer to the donor's"
    elif not exists:
        note = "every layer's patch flips the answer: the answer is carried by the whole stream from the first block on"
    else:
        note = f"patching flips the answer from block {first} on (normalised depth {(first + 1) / depth:.2f})"
    return {"flip_layer": first if exists else None, "first_flipping_layer": first,
            "flip_depth": (first + 1) / depth if exists else None, "flip_layer_exists": bool(exists), "note": note}


def run_layers(den: Any, cfg: ProbeConfig, out: str, *, step: int | None = None, window: tuple[int, int] | None = None,
               patch_window: tuple[int, int] | None = None, patch: str = "resid", skip: bool = True, token_maps: bool = True,
               n_token_steps: int = 10, progress: bool = True, ray_address: str | None = None,
               num_workers: int | None = None) -> dict[str, Any]:
    depth = len(den.hook_blocks())
    if not depth:
        raise ValueError(f"probe layers needs transformer blocks; model {getattr(den, 'name', '?')!r} has none")
    n_steps = cfg.sampling.steps
    step = n_steps // 4 if step is None else step
    window = window or (0, n_steps)
    patch_window = patch_window or (0, n_steps // 2)
    for name, (a, b_) in (("--window", window), ("--patch-window", patch_window)):
        if not 0 <= a < b_ <= n_steps:
            raise ValueError(f"{name} {a}:{b_} must satisfy 0 <= start < end <= {n_steps} (the sampling steps)")
    patch_points(den, patch, 0)
    if any(len(c) < 2 for c in chunks(cfg)):
        raise ValueError(f"the layer probe patches each sample from another one of its batch: n={cfg.n} in batches of "
                         f"{cfg.batch} leaves a batch of one (choose n and --batch so that every batch holds two or more)")
    if token_maps and cfg.n < 2:
        raise ValueError("token maps fit on half of the samples and test on the other half: need n >= 2")
    token_steps = sorted(set(np.linspace(0, n_steps - 1, min(n_steps, n_token_steps)).round().astype(int).tolist())) if token_maps else []
    run_ = ProbeRun(out, "probe-layers", held=held_out(cfg), config={"probe": cfg.__dict__ | {"sampling": cfg.sampling.__dict__}, "step": step,
                                          "window": list(window), "patch_window": list(patch_window), "patch": patch,
                                          "skip": skip, "token_steps": token_steps})
    fn = partial(layers_batch, step=step, window=tuple(window), patch_window=tuple(patch_window), patch=patch, skip=skip,
                 token_steps=token_steps)
    recs = run_sharded(den, cfg, fn, folder=run_.folder, label="layers", work_per_sample=2 + (depth if skip else 0) + depth,
                       progress=progress, ray_address=ray_address, num_workers=num_workers)
    ok, errors = split_errors(recs)
    n = len(ok)
    base_all = np.array([r["base"] for r in ok])
    # base - skipped, over 0/1 outcomes: Newcombe's paired interval, exact McNemar
    drops = {l: paired_diff([r["skip"][l] for r in ok], base_all, rates=True) for l in range(depth)} if skip else {}
    counts = {k: np.array([sum(r["outcome"][l] == k for r in ok) for l in range(depth)]) for k in OUTCOMES}
    rates = {k: v / n for k, v in counts.items()}
    flips = flip_layer(rates)
    energy = np.stack([r["energy"] for r in ok]).mean(0)  # (L, F)
    cka = np.stack([r["cka"] for r in ok]).mean(0)
    first = next(r for r in ok if "norm_map" in r)
    maps = {"norm": first["norm_map"], "pca": first["pca_map"]}
    save_npz(run_.root / "layers.npz", norm_maps=maps["norm"], pca_maps=maps["pca"], energy=energy, cka=cka)
    patching = {"variant": patch, "window": list(patch_window),
                "sites": "blocks.L.resid_post (the block's output, all tokens)" if patch == "resid"
                else "blocks.L.attn_out and blocks.L.mlp_out (what the block writes, all tokens)",
                "per_layer": {str(l): {k: {"rate": float(rates[k][l]), "ci95": list(wilson(int(counts[k][l]), n)),
                                                      "stats": rate_record(int(counts[k][l]), n)} for k in OUTCOMES}
                              | {"score_own": float(np.mean([r["score_own"][l] for r in ok])),
                                 "score_donor": float(np.mean([r["score_donor"][l] for r in ok]))} for l in range(depth)},
                **flips}
    patching["flip_held_out"] = _held_out_flip(ok, depth)
    summary = {"n": n, "n_errors": len(errors), "errors": errors, "depth": depth, "step": step, "clean_solve_rate": float(base_all.mean()),
               "clean_solve_rate_ci95": list(wilson(int(base_all.sum()), n)), "patching": patching,
               "patch_flip_layer": flips["flip_layer"], "energy_per_frame": energy.tolist(), "layer_cka": cka.tolist()}
    text = [f"layers of a {depth}-block model on {n} {cfg.task} {cfg.size}x{cfg.size} instances (maps at step {step}); "
            f"clean solve rate {base_all.mean():.2f}"]
    if skip:
        ranked = sorted(drops, key=lambda l: -drops[l][0])
        top = _held_out_skip(ok, base_all, depth)
        summary |= {"skip_drop": {str(l): {"drop": d[0], "ci95": [d[1], d[2]], "stats": d[3]} for l, d in drops.items()},
                    "most_important_layers": ranked[:3], "skip_drop_held_out": top}
        text += ["solve-rate drop when a block is skipped (steps %d-%d): " % window + ", ".join(f"L{l} {drops[l][0]:+.2f}" for l in range(depth)),
                 f"largest drops, in-sample (descriptive): {ranked[:3]}; most important block L{top['layer']}: drop {top['drop']:+.2f} "
                 f"[{top['ci95'][0]:+.2f}, {top['ci95'][1]:+.2f}] (n={top['n']}), {top['selection']}"]
    text += [f"patching {patch} from another puzzle (steps {patch_window[0]}-{patch_window[1]}), flip/keep/break per layer: "
             + ", ".join(f"L{l} {rates['flip'][l]:.2f}/{rates['keep'][l]:.2f}/{rates['break'][l]:.2f}" for l in range(depth)),
             flips["note"]]
    if token_maps:
        from .tokenmaps import analyse as token_analyse, plot as token_plot

        tm = token_analyse([r["tokens"] for r in ok], [r["labels"] for r in ok], token_steps, depth)
        write_json(run_.root / "token_maps.json", tm)
        token_plot(run_, tm)
        summary["token_maps"] = {k: tm[k] for k in ("perception_layer", "perception_depth", "reasoning_layer", "reasoning_depth",
                                                    "reasoning_steps", "reasoning_peak_accuracy", "reasoning_input_accuracy", "claim") if k in tm}
        text.append(f"token maps: {tm['claim']}")
    _plots(run_, maps, energy, cka, drops, rates, counts, n, step, window, patch, patch_window)
    return run_.finish(summary, "\n".join(text))


def _plots(run_: ProbeRun, maps: dict[str, np.ndarray], energy: np.ndarray, cka: np.ndarray, drops: dict, rates: dict,
           counts: dict, n: int, step: int, window: tuple[int, int], patch: str, patch_window: tuple[int, int]) -> None:
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
    if ls:
        axes[2].errorbar(ls, [drops[l][0] for l in ls], yerr=[[drops[l][0] - drops[l][1] for l in ls], [drops[l][2] - drops[l][0] for l in ls]],
                         marker="o", capsize=3)
    axes[2].set_title(f"solve-rate drop, block skipped (steps {window[0]}-{window[1]})" if ls else "block skipping not run", fontsize=9)
    axes[2].set_xlabel("layer")
    layers = np.arange(len(rates["flip"]))
    for key, marker in (("flip", "s-"), ("keep", "o-"), ("break", "x:")):
        ci = np.array([wilson(int(c), n) for c in counts[key]])
        axes[3].plot(layers, rates[key], marker, label=key)
        axes[3].fill_between(layers, ci[:, 0], ci[:, 1], alpha=0.15)
    axes[3].set_title(f"patch {patch} from another puzzle (steps {patch_window[0]}-{patch_window[1]})", fontsize=9)
    axes[3].set_xlabel("layer")
    axes[3].set_ylabel("fraction of answers (95% Wilson CI)")
    axes[3].set_ylim(-0.02, 1.02)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_.figure("layers_summary.png", "Layer specialisation",
                            "Energy per frame, similarity between layers, the cost of skipping each block, and activation patching."), dpi=110)
    pyplot.close(fig)


def demo_layers(den: Any, cfg: ProbeConfig, out: str, demo: Any, progress: bool) -> dict[str, Any]:
    from dataclasses import replace

    s = run_layers(den, replace(cfg, n=min(cfg.n, 4), batch=min(cfg.n, 4)), out, progress=progress)
    return {k: s[k] for k in ("most_important_layers", "skip_drop", "patch_flip_layer")}


def _selection_note(split: bool) -> str:
    return ("chosen on the calibration half (even samples), measured on the held-out half (odd samples)" if split
            else "chosen in-sample (n < 4)")


def _held_out_skip(ok: list[dict[str, Any]], base: np.ndarray, depth: int) -> dict[str, Any]:
    """The most important block (largest skip drop) picked on a calibration half, its drop measured on the other half."""
    cal, held, split = calibration_split(len(ok))
    skips = np.array([r["skip"] for r in ok])  # (n, depth) solved with block l skipped
    top = max(range(depth), key=lambda l: float((base[cal] - skips[cal, l]).mean()))  # the first largest
    d = paired_diff(skips[held, top], base[held], rates=True)  # base - skipped
    return {"layer": int(top), "drop": d[0], "ci95": [d[1], d[2]], "stats": d[3], "n": int(len(held)), "selection": _selection_note(split)}


def _held_out_flip(ok: list[dict[str, Any]], depth: int) -> dict[str, Any]:
    """The layer with the largest flip rate picked on a calibration half, its flip rate measured on the other half."""
    cal, held, split = calibration_split(len(ok))
    flip = np.array([[r["outcome"][l] == "flip" for l in range(depth)] for r in ok])  # (n, depth)
    top = max(range(depth), key=lambda l: float(flip[cal, l].mean()))
    k, m = int(flip[held, top].sum()), int(len(held))
    return {"layer": int(top), "rate": k / m, "ci95": list(wilson(k, m)), "stats": rate_record(k, m), "n": m,
            "selection": _selection_note(split)}
