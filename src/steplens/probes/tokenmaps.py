"""Token maps as numbers: what each layer's tokens encode, per layer and step, measured with the task's own masks.

The paper reads layer token maps by eye ("early layers perceive, middle layers reason"). Here each token
of the answer (last) frame gets its block's role from the ground truth (`Task.roles`: scene = walls and
objects, action = the drawn path or moved object, background = the rest, e.g. a maze's dead-end floor),
and two linear probes are fitted per (step, layer) on half of the samples and scored on the other half:
- perception: scene vs background tokens (what the puzzle is);
- reasoning: action vs background tokens (for the maze: path vs dead-end floor, which only solving tells apart).
Score: balanced accuracy (chance 0.5) with a bootstrap CI over held-out samples. Layer "input" is the
stream entering block 0 (what is readable without any computation); the mean token norm of each role
is kept too, the quantity the paper's maps show. Pure functions over captured tokens.
"""

from __future__ import annotations

import warnings

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..context import current_call
from ..hooks import hooks

ROLES = ("background", "scene", "action")  # label codes 0, 1, 2; -1: no role (e.g. a maze block that changes mid-video)
PROBES = {"perception": ("scene", "background"), "reasoning": ("action", "background")}


def token_labels(roles: dict[str, np.ndarray], grid_hw: tuple[int, int]) -> np.ndarray:
    """Block role masks (Hb, Wb) -> (h*w,) role codes of the token grid's cells (each token takes its centre block)."""
    hb, wb = next(iter(roles.values())).shape
    h, w = grid_hw
    rows = np.minimum(((np.arange(h) + 0.5) * hb / h).astype(int), hb - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * wb / w).astype(int), wb - 1)
    lab = np.full((hb, wb), -1, dtype=np.int64)
    for code, name in enumerate(ROLES):
        lab[roles[name]] = code
    return lab[np.ix_(rows, cols)].reshape(-1)


def capture_last_frame(den: Any, steps: Sequence[int], grid: tuple[int, int, int]) -> tuple[dict[str, Any], dict[tuple[int, int], Tensor]]:
    """Hook mapping recording, at `steps`, the last token frame of the stream entering block 0 (layer 0 of the
    store) and leaving every block (layers 1..depth), as float16 (B, h*w, D); conditional branch only under CFG."""
    depth = len(den.hook_blocks())
    f, h, w = grid
    chosen = set(int(s) for s in steps)
    store: dict[tuple[int, int], Tensor] = {}

    def grab(layer: int) -> Callable[..., None]:
        def fn(t: Tensor, *, point: Any) -> None:
            c = current_call()
            if c is not None and c.step in chosen and c.phase == "main" and c.branch in ("main", "cond"):
                store[(c.step, layer)] = t[:, (f - 1) * h * w :].detach().to(torch.float16).cpu()
        return fn

    mapping = {"blocks.0.resid_pre": grab(0), **{f"blocks.{i}.resid_post": grab(i + 1) for i in range(depth)}}
    return mapping, store


def stack_capture(store: dict[tuple[int, int], Tensor], steps: Sequence[int], depth: int) -> np.ndarray:
    """(B, S', depth + 1, h*w, D) float16 from a `capture_last_frame` store."""
    return torch.stack([torch.stack([store[(s, l)] for l in range(depth + 1)], 1) for s in steps], 1).numpy()


def _fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Class-balanced ridge regression on standardised features, targets +-1: (mean, std, weights, bias)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    t = np.where(y, 1.0, -1.0)
    wt = np.where(y, 0.5 / max(1, y.sum()), 0.5 / max(1, (~y).sum()))  # each class weighs half
    zb = np.concatenate([z, np.ones((len(z), 1))], 1)
    a = zb.T @ (zb * wt[:, None]) + lam * np.eye(zb.shape[1]) / len(z)
    coef = np.linalg.solve(a, zb.T @ (wt * t))
    return mu, sd, coef[:-1], float(coef[-1])


def probe_accuracy(train: Sequence[tuple[np.ndarray, np.ndarray]], test: Sequence[tuple[np.ndarray, np.ndarray]], *,
                   lam: float = 1.0, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Balanced accuracy of a linear probe fitted on `train` samples, scored on held-out `test` samples.

    Each sample is (features (n_i, D), labels (n_i,) bool). Returns (accuracy, CI low, CI high), the CI a
    percentile bootstrap over test samples. NaN when a split lacks a class.
    """
    x = np.concatenate([f for f, _ in train]).astype(np.float64)
    y = np.concatenate([l for _, l in train]).astype(bool)
    if not y.any() or y.all() or not test:
        return (float("nan"),) * 3
    mu, sd, w, b = _fit_ridge(x, y, lam)
    hits = np.zeros((len(test), 2))  # per held-out sample: correct positives, correct negatives
    counts = np.zeros((len(test), 2))
    for i, (f, l) in enumerate(test):
        pred = ((f.astype(np.float64) - mu) / sd) @ w + b > 0
        l = l.astype(bool)
        hits[i] = [(pred & l).sum(), (~pred & ~l).sum()]
        counts[i] = [l.sum(), (~l).sum()]

    def bacc(h: np.ndarray, c: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return 0.5 * (h[..., 0] / c[..., 0] + h[..., 1] / c[..., 1])

    acc = float(bacc(hits.sum(0), counts.sum(0)))
    if not np.isfinite(acc):
        return (float("nan"),) * 3
    idx = np.random.default_rng(seed).integers(0, len(test), size=(n_boot, len(test)))
    boots = bacc(hits[idx].sum(1), counts[idx].sum(1))
    boots = boots[np.isfinite(boots)]
    return acc, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def analyse(tokens: Sequence[np.ndarray], labels: Sequence[np.ndarray], steps: Sequence[int], depth: int, *,
            lam: float = 1.0) -> dict[str, Any]:
    """Per probe and (step, layer): held-out balanced accuracy with CI; mean token norm per role; the depth verdict.

    tokens: per sample (S', depth + 1, n_tok, D); labels: per sample (n_tok,) role codes. The first half of the
    samples (in the given order) trains each probe, the second half tests it.
    """
    n = len(tokens)
    if n < 2:
        raise ValueError(f"token-map probes fit on half of the samples and test on the other half: need n >= 2, got {n}")
    half = n // 2
    n_s, n_l = len(steps), depth + 1
    out: dict[str, Any] = {"steps": [int(s) for s in steps], "layers": ["input", *[str(l) for l in range(depth)]],
                           "n_train": half, "n_test": n - half}
    for name, (pos, neg) in PROBES.items():
        p, q = ROLES.index(pos), ROLES.index(neg)
        acc = np.full((n_s, n_l, 3), np.nan)
        for si in range(n_s):
            for li in range(n_l):
                data = []
                for t, lab in zip(tokens, labels):
                    keep = (lab == p) | (lab == q)
                    data.append((t[si, li][keep].astype(np.float32), lab[keep] == p))
                acc[si, li] = probe_accuracy(data[:half], data[half:], lam=lam)
        out[name] = {"positive": pos, "negative": neg, "accuracy": acc[..., 0].tolist(), "ci95": acc[..., 1:].tolist()}
    norms = {r: np.full((n_s, n_l), np.nan) for r in ROLES}
    for code, r in enumerate(ROLES):
        vals = [np.linalg.norm(t[:, :, lab == code].astype(np.float32), axis=-1) for t, lab in zip(tokens, labels) if (lab == code).any()]
        if vals:
            norms[r] = np.concatenate(vals, axis=2).mean(2)  # (S', L+1)
    out["norm"] = {r: v.tolist() for r, v in norms.items()}
    out.update(verdict(out, depth))
    return out


def verdict(res: dict[str, Any], depth: int, *, margin: float = 0.05, min_gain: float = 0.1) -> dict[str, Any]:
    """Where perception and reasoning become readable, and whether that is "early layers perceive, middle layers reason".

    Reasoning is judged only at steps whose input does not show more of the answer than at the first step (input
    accuracy within `margin` of the first captured step's, where x_t is pure noise and the input can only offer a
    prior such as position): later steps' x_t carries the drawn path, readable without any computation. Its layer is
    where the accuracy, averaged over those steps, first covers half of its rise from the input to its maximum; the
    perception layer is where the scene's accuracy first reaches 95% of its maximum. Depth: 0 for the input,
    (l + 1) / depth after block l.
    """
    with warnings.catch_warnings():  # a probe without both classes is all NaN: handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        perc = np.nanmean(np.array(res["perception"]["accuracy"], dtype=float), axis=0)  # (L+1,) mean over steps
        reas_all = np.array(res["reasoning"]["accuracy"], dtype=float)  # (S', L+1)
    if not np.isfinite(reas_all).any() or not np.isfinite(perc).any():
        return {"claim": "not measurable on this model: a probe lacks one of its classes in the samples"}
    first = next((v for v in reas_all[:, 0] if np.isfinite(v)), np.nan)
    blind_steps = [i for i in range(len(reas_all)) if np.isfinite(reas_all[i, 0]) and reas_all[i, 0] <= first + margin]
    p_layer = int(np.nonzero(perc >= 0.95 * np.nanmax(perc))[0][0])
    out: dict[str, Any] = {"perception_layer": res["layers"][p_layer], "perception_depth": p_layer / depth,
                           "reasoning_steps": [res["steps"][i] for i in blind_steps]}
    if not blind_steps:
        out["claim"] = "not measurable on this model: no captured step's input is free of the answer"
        return out
    reas = reas_all[blind_steps].mean(0)
    rise = reas[0] + 0.5 * (np.nanmax(reas) - reas[0])
    r_layer = int(np.nonzero(reas >= rise)[0][0])
    p_d, r_d = p_layer / depth, r_layer / depth
    out.update({"reasoning_layer": res["layers"][r_layer], "reasoning_depth": r_d, "reasoning_curve": reas.tolist(),
                "reasoning_peak_accuracy": float(np.nanmax(reas)), "reasoning_input_accuracy": float(reas[0])})
    if np.nanmax(reas) - reas[0] < min_gain:
        claim = f"not measurable on this model: no layer's tokens tell the action blocks from background better than the input (gain < {min_gain})"
    elif r_d < p_d:
        claim = "reversed: the action is readable before the scene"
    elif p_d <= 1 / 3 and 1 / 3 < r_d <= 2 / 3:
        claim = "reproduced: the scene is readable in the first third of the layers, the action becomes readable in the middle third"
    else:
        claim = (f"not reproduced: the scene is readable from depth {p_d:.2f}, the action becomes readable at depth {r_d:.2f} "
                 "(reproduction needs <= 1/3 and in (1/3, 2/3])")
    out["claim"] = claim
    return out


def plot(run: Any, res: dict[str, Any], name: str = "token_maps.png") -> None:
    """Layer x step heatmaps: perception and reasoning probe accuracy, and the action/background norm ratio."""
    from .common import plt

    pyplot = plt()
    panels = [("perception", "scene vs background (balanced acc.)"), ("reasoning", "action vs background (balanced acc.)")]
    fig, axes = pyplot.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, title) in zip(axes, panels):
        a = np.array(res[key]["accuracy"], dtype=float).T  # (L+1, S')
        im = ax.imshow(a, origin="lower", aspect="auto", vmin=0.5, vmax=1.0, cmap="viridis")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (np.array(res["norm"]["action"], dtype=float) / np.array(res["norm"]["background"], dtype=float)).T
    im = axes[2].imshow(ratio, origin="lower", aspect="auto", cmap="coolwarm")
    axes[2].set_title("token norm, action / background", fontsize=9)
    fig.colorbar(im, ax=axes[2])
    for ax in axes:
        ax.set_yticks(range(len(res["layers"])), res["layers"], fontsize=7)
        ax.set_xticks(range(len(res["steps"])), res["steps"], fontsize=7)
        ax.set_xlabel("denoising step")
        ax.set_ylabel("layer")
    fig.suptitle(res.get("claim", ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(run.figure(name, "Token maps: what each layer encodes",
                           "Linear probes on the answer frame's tokens, trained on half of the samples and scored on the other half: "
                           "scene (walls, objects) vs background, and action (path, moved object) vs background (for the maze: path vs "
                           "dead-end floor). Right: mean token norm of action over background tokens."), dpi=110)
    pyplot.close(fig)
