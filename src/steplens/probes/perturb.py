"""Noise at a step vs noise at a frame (paper Fig. 3b) and CKA information flow (Fig. 3c).

- Noise at step s: the latent leaving step s (all frames) is replaced by fresh Gaussian noise
  (`--mode replace`), or gets `strength * sigma_next * noise` added (`--mode add`); steps s+1..
  continue from it. Runs share the clean prefix: each injected run restarts at step s from the clean
  latent, so a sweep costs about half of running every injection from scratch.
- Noise at frame f: latent frame f is replaced (or noised) after every step.
- Information flow: after an injection at step s, 1 - linear CKA between the clean and the perturbed
  run's states at every later step t (latents x_t as tokens x channels, without the first frame when it
  is the given image, identical in both runs by construction; and chosen layers' residual
  streams as tokens x width), per sample, averaged over samples. For image-to-video runs also on the
  latent change from frame 0 (`x_t[:, :, 1:] - x_t[:, :, :1]`): what the model draws on top of the given
  image. Whole latents are dominated by what both runs share (a maze's walls and floor), so they
  understate how different two runs' answers are; the change is the answer.
Perturbation probes run on Euler: a corrector (UniPC, Heun) partly undoes an injected latent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..interventions import NoiseAtFrame, NoiseAtStep
from ..runner import Batch
from ..runs import RunFolder
from ..sampling import get_sampler, run, seeded_noise
from ..stats import bootstrap_diff, mean_ci
from .cka import linear_cka
from .common import ProbeConfig, ProbeRun, make_batch, plt, require_finite, run_sharded, save_npz, split_errors


def _check_euler(cfg: ProbeConfig) -> None:
    if cfg.sampling.sampler != "euler":
        raise ValueError("perturbation probes need the Euler sampler: a corrector step partly undoes injected noise")


class _States:
    """Per-step states of one run: latents x_t, and residual streams of chosen layers (full, for CKA)."""

    def __init__(self, den: Any, layers: Sequence[int]):
        self.den = den
        self.layers = list(layers)
        self.x: dict[int, Tensor] = {}
        self.acts: dict[tuple[int, int], Tensor] = {}

    def callback(self, e) -> None:
        self.x[e.step] = e.x.detach().float().cpu()

    def hook_map(self) -> dict[str, Any]:
        from ..context import current_call

        def fn(t: Tensor, *, point) -> None:
            call = current_call()
            if call is not None and call.phase == "main":
                self.acts[(call.step, point.layer)] = t.detach().float().cpu()

        return {f"blocks.{i}.resid_post": fn for i in self.layers}


def _sample(den: Any, batch: Batch, x: Tensor, cfg: ProbeConfig, first_step: int, callbacks: list, states: _States | None) -> Tensor:
    from ..hooks import hooks

    sig = cfg.sampling.sigmas(den).to(x.device)[first_step:]
    gen = get_sampler("euler")(den, x, sig, batch.cond, first_step=first_step)
    cbs = callbacks + ([states.callback] if states else [])
    if states and states.layers:
        with hooks(den, states.hook_map()):
            return run(gen, cbs)
    return run(gen, cbs)


def _score(den: Any, batch: Batch, lat: Tensor) -> list[float]:
    frames = den.decode(lat)
    return [float(batch.task.score(i, f).success) for i, f in zip(batch.instances, frames)]


def _change(x: Tensor) -> Tensor:
    """Latents (B, C, F, H, W) -> each later frame minus frame 0 (the given image in image-to-video runs)."""
    return x[:, :, 1:] - x[:, :, :1]


def _cka_rows(a: Tensor, b: Tensor) -> list[float]:
    """Per sample 1 - CKA, tokens as rows; a, b: (B, N, D) or latents (B, C, F, H, W)."""
    if a.ndim == 5:
        a, b = a.flatten(2).transpose(1, 2), b.flatten(2).transpose(1, 2)  # (B, N, C)
    return [1.0 - linear_cka(x, y) for x, y in zip(a, b)]


def perturb_batch(den: Any, batch: Batch, noise_seeds: list[int], cfg: ProbeConfig, *, inject_steps: Sequence[int],
                  frames: Sequence[int], mode: str = "replace", strength: float = 1.0, cka_layers: Sequence[int] = (),
                  tick: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One batch: the clean run, every injection at a step and at a frame, scored; 1 - CKA rows per sample.

    Per sample: clean (score), step / frame (score per injection index), flow_latent and flow_layer_{l}
    ((injections, steps) 1 - CKA, NaN at and before the injection step).
    """
    n_steps, b = cfg.sampling.steps, len(batch.instances)
    tick = tick or (lambda k: None)
    x0 = seeded_noise(batch.latent_shape, noise_seeds, device=den.device)
    clean = _States(den, cka_layers)
    out = _sample(den, batch, x0, cfg, 0, [], clean)
    require_finite(out)
    recs: list[dict[str, Any]] = [{"clean": c, "step": [], "frame": []} for c in _score(den, batch, out)]
    skip = 1 if batch.cond.image is not None else 0  # image-to-video: latent frame 0 is re-imposed in both runs
    names = ["flow_latent", *(["flow_change"] if skip else []), *(f"flow_layer_{l}" for l in cka_layers)]
    flow = {name: np.full((b, len(inject_steps), n_steps), np.nan) for name in names}
    tick(b)
    inj_seeds = tuple(s + 1 for s in noise_seeds)
    for si, s in enumerate(inject_steps):
        pert = _States(den, cka_layers)
        lat = _sample(den, batch, clean.x[s], cfg, s, [NoiseAtStep((s,), mode=mode, strength=strength, seeds=inj_seeds)], pert)
        for r, v in zip(recs, _score(den, batch, lat)):
            r["step"].append(v)
        for t in range(s + 1, n_steps):
            flow["flow_latent"][:, si, t] = _cka_rows(clean.x[t][:, :, skip:], pert.x[t][:, :, skip:])
            if skip:
                flow["flow_change"][:, si, t] = _cka_rows(_change(clean.x[t]), _change(pert.x[t]))
            for l in cka_layers:
                flow[f"flow_layer_{l}"][:, si, t] = _cka_rows(clean.acts[(t, l)], pert.acts[(t, l)])
        tick(b)
    for f in frames:
        lat = _sample(den, batch, x0, cfg, 0, [NoiseAtFrame((f,), mode=mode, strength=strength, seeds=inj_seeds)], None)
        for r, v in zip(recs, _score(den, batch, lat)):
            r["frame"].append(v)
        tick(b)
    for i, r in enumerate(recs):
        r.update({name: m[i] for name, m in flow.items()})
    return recs


def perturb_sweep(den: Any, cfg: ProbeConfig, *, inject_steps: Sequence[int], frames: Sequence[int], mode: str = "replace",
                  strength: float = 1.0, cka_layers: Sequence[int] = (), progress: bool = True, folder: RunFolder | None = None,
                  ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """Scores per sample for every injection index, and the per-sample CKA flow per state (`flows`) with its mean for latents."""
    _check_euler(cfg)
    fn = partial(perturb_batch, inject_steps=list(inject_steps), frames=list(frames), mode=mode, strength=strength,
                 cka_layers=list(cka_layers))
    recs = run_sharded(den, cfg, fn, folder=folder, label=f"perturb ({mode})", work_per_sample=1 + len(inject_steps) + len(frames),
                       progress=progress, ray_address=ray_address, num_workers=num_workers)
    ok, errors = split_errors(recs)

    keys = [k for k in ("flow_latent", "flow_change", *(f"flow_layer_{l}" for l in cka_layers)) if not ok or k in ok[0]]
    # per state, (samples, injections, steps); NaN (not observed) at the same places in every sample
    flows = {_state_name(k): np.stack([r[k] for r in ok]) for k in keys}
    return {"clean": [r["clean"] for r in ok],
            "step": {s: [r["step"][i] for r in ok] for i, s in enumerate(inject_steps)},
            "frame": {f: [r["frame"][i] for r in ok] for i, f in enumerate(frames)},
            "flow_latent": flows["latent"].mean(0), "flows": flows, "errors": errors}


def _state_name(key: str) -> str:
    """A record's flow key -> the state's name in summaries and plots."""
    if key.startswith("flow_layer_"):
        return f"blocks.{key.removeprefix('flow_layer_')}.resid_post"
    return {"flow_latent": "latent", "flow_change": "latent_change"}[key]


def _curve(scores: dict[int, list[float]]) -> list[dict[str, float]]:
    return [dict(zip(("index", "mean", "lo", "hi"), (k, *mean_ci(v)))) for k, v in scores.items()]


def run_perturb(den: Any, cfg: ProbeConfig, out: str, *, every: int = 2, mode: str = "replace", strength: float = 1.0,
                frames: Sequence[int] | None = None, progress: bool = True, cka_layers: Sequence[int] = (),
                ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """Noise at step vs noise at frame: score vs injection index with 95% CIs (and CKA flow if layers given)."""
    if frames is None:  # every latent frame after the first (the given image for image-to-video)
        n_latent = make_batch(den, cfg, cfg.seeds()[:1])[0].latent_shape[1]
        frames = list(range(1, n_latent))
    frames = list(frames)
    steps = list(range(0, cfg.sampling.steps - 1, every))
    run_ = ProbeRun(out, "probe-perturb", {"probe": cfg.__dict__ | {"sampling": cfg.sampling.__dict__}, "every": every, "mode": mode,
                                           "strength": strength, "frames": frames, "cka_layers": list(cka_layers)})
    res = perturb_sweep(den, cfg, inject_steps=steps, frames=frames, mode=mode, strength=strength, cka_layers=cka_layers, progress=progress,
                        folder=run_.folder, ray_address=ray_address, num_workers=num_workers)
    return _write_perturb(run_, cfg, res, mode)


def _write_perturb(run_: ProbeRun, cfg: ProbeConfig, res: dict[str, Any], mode: str) -> dict[str, Any]:
    clean = mean_ci(res["clean"])
    step_curve, frame_curve = _curve(res["step"]), _curve(res["frame"])
    worst_step = min(step_curve, key=lambda r: r["mean"])
    worst_frame = min(frame_curve, key=lambda r: r["mean"]) if frame_curve else None
    # the last latent frame is the one the scorer reads: noise there every step overwrites the answer
    # itself, which no attention can repair. The paper's comparison is about the frames in between.
    answer = max(res["frame"]) if res["frame"] else None
    inner = [r for r in frame_curve if r["index"] != answer]
    worst_inner = min(inner, key=lambda r: r["mean"]) if inner else None
    save_npz(run_.root / "perturb.npz", clean=np.array(res["clean"]),
             step_index=np.array(list(res["step"])), step_scores=np.array(list(res["step"].values())),
             frame_index=np.array(list(res["frame"])), frame_scores=np.array(list(res["frame"].values())) if res["frame"] else np.zeros((0, 0)),
             flow_latent=res["flow_latent"])
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for ax, curve, label in ((axes[0], step_curve, "noise at step (all frames)"), (axes[1], frame_curve, "noise at frame (every step)")):
        xs = [r["index"] for r in curve]
        ax.errorbar(xs, [r["mean"] for r in curve], yerr=[[r["mean"] - r["lo"] for r in curve], [r["hi"] - r["mean"] for r in curve]],
                    marker="o", capsize=3)
        ax.axhline(clean[0], color="k", ls=":", label="no noise")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("injection step" if "step" in label else "injected frame")
    axes[0].set_ylabel("solve rate (95% CI)")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_.figure("perturb.png", "Noise at step vs noise at frame",
                            f"Solve rate after {mode} noise injection, by injection index (95% CI over {cfg.n} samples). "
                            "Corrupting one denoising step costs far more than corrupting one frame at every step."), dpi=120)
    pyplot.close(fig)
    summary: dict[str, Any] = {
        "n": len(res["clean"]), "n_errors": len(res["errors"]), "errors": res["errors"], "mode": mode, "clean_solve_rate": clean[0],
        "noise_at_step": step_curve, "noise_at_frame": frame_curve,
        "worst_step": worst_step, "worst_frame": worst_frame,
        "worst_drop_step": clean[0] - worst_step["mean"],
        "worst_drop_frame": clean[0] - worst_frame["mean"] if worst_frame else None,
        "answer_frame": answer, "worst_frame_before_answer": worst_inner,
        "worst_drop_frame_before_answer": clean[0] - worst_inner["mean"] if worst_inner else None,
    }
    if worst_inner:
        # paired over samples: how much more the worst step injection costs than the worst frame injection
        d = bootstrap_diff(res["step"][worst_step["index"]], res["frame"][worst_inner["index"]])
        summary["step_minus_frame_drop"], summary["step_minus_frame_drop_ci95"] = d[0], [d[1], d[2]]
    text = [f"noise at step vs frame ({mode}), {cfg.n} held-out {cfg.task} {cfg.size}x{cfg.size}: clean solve rate {clean[0]:.2f}",
            f"worst step injection: step {worst_step['index']} -> {worst_step['mean']:.2f} (drop {summary['worst_drop_step']:.2f})"]
    if worst_frame:
        text.append(f"worst frame injection: frame {worst_frame['index']} -> {worst_frame['mean']:.2f} (drop {summary['worst_drop_frame']:.2f})")
    if worst_inner:
        text.append(f"worst frame before the answer frame {answer}: frame {worst_inner['index']} -> {worst_inner['mean']:.2f} "
                    f"(drop {summary['worst_drop_frame_before_answer']:.2f}); noise on the answer frame itself overwrites what is scored")
        lo, hi = summary["step_minus_frame_drop_ci95"]
        text.append(f"worst step costs {summary['step_minus_frame_drop']:.2f} more than the worst frame before the answer "
                    f"(paired bootstrap 95% CI [{lo:.2f}, {hi:.2f}])")
    if np.isfinite(res["flow_latent"]).any():
        summary.update(_write_flow(run_, res))
        text.append(f"1 - CKA at the last step (latents): earliest injection {summary['flow_last_step_first_injection']:.3f}, "
                    f"latest injection {summary['flow_last_step_last_injection']:.3f}")
        if ch := summary["flow_layers_last_step"].get("latent_change"):
            text.append("1 - CKA at the last step (latent change from frame 0) per injection step: "
                        + ", ".join(f"{st}: {v:.2f}" for st, v in zip(summary["flow_injection_steps"], ch) if v is not None))
        for name, r in summary["flow_first_minus_last_injection"].items():
            text.append(f"{name}: earliest minus latest injection {r['diff']:.3f} (paired bootstrap 95% CI [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}])")
    return run_.finish(summary, "\n".join(text))


def _write_flow(run_: ProbeRun, res: dict[str, Any]) -> dict[str, Any]:
    steps = list(res["step"])
    mats = {name: m.mean(0) for name, m in res["flows"].items()}  # (injections, steps): mean over samples
    save_npz(run_.root / "cka_flow.npz", injection_steps=np.array(steps), **{k.replace(".", "_"): v for k, v in mats.items()})
    pyplot = plt()
    fig, axes = pyplot.subplots(1, len(mats), figsize=(4.6 * len(mats), 3.8), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = ax.imshow(np.ma.masked_invalid(m), aspect="auto", vmin=0, vmax=1, cmap="magma", origin="upper")
        ax.set_yticks(range(len(steps)), steps, fontsize=7)
        ax.set_xlabel("observed step")
        ax.set_ylabel("injection step")
        ax.set_title(f"1 - CKA, {name}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(run_.figure("cka_flow.png", "Information flow across steps (1 - CKA)",
                            "Dissimilarity between the clean and the perturbed run at every later step, per injection step "
                            "(1: complete corruption, 0: no effect)."), dpi=120, bbox_inches="tight")
    pyplot.close(fig)
    last = res["flow_latent"][:, -1]
    ok = np.isfinite(last)
    return {"flow_injection_steps": steps, "flow_latent": [[None if not np.isfinite(v) else float(v) for v in row] for row in res["flow_latent"]],
            "flow_last_step_first_injection": float(last[ok][0]) if ok.any() else float("nan"),
            "flow_last_step_last_injection": float(last[ok][-1]) if ok.any() else float("nan"),
            "flow_layers_last_step": {k: [None if not np.isfinite(v) else float(v) for v in m[:, -1]] for k, m in mats.items()},
            "flow_first_minus_last_injection": _first_minus_last(res["flows"])}


def _first_minus_last(flows: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per state: 1 - CKA at the last step after the earliest minus after the latest observed injection (paired over
    samples, bootstrap 95% CI). Positive: early injections propagate to the end more than late ones."""
    out = {}
    for name, m in flows.items():
        last = m[:, :, -1]  # (samples, injections)
        cols = [i for i in range(last.shape[1]) if np.isfinite(last[:, i]).all()]
        if len(cols) >= 2:
            d, lo, hi = bootstrap_diff(last[:, cols[-1]], last[:, cols[0]])
            out[name] = {"diff": d, "ci95": [lo, hi]}
    return out


def run_cka(den: Any, cfg: ProbeConfig, out: str, *, every: int = 2, layers: Sequence[int] | None = None, mode: str = "replace",
            strength: float = 1.0, progress: bool = True, ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """Information flow: noise-at-step injections with the clean and perturbed states compared by CKA."""
    depth = len(den.hook_blocks())
    layers = list(layers) if layers is not None else sorted({depth // 2, depth - 1})
    return run_perturb(den, cfg, out, every=every, mode=mode, strength=strength, frames=[], progress=progress, cka_layers=layers,
                       ray_address=ray_address, num_workers=num_workers)


# -- demo hooks: small default sizes ---------------------------------------------------------------
def demo_perturb(den: Any, cfg: ProbeConfig, out: str, demo: Any, progress: bool) -> dict[str, Any]:
    s = run_perturb(den, cfg, out, every=max(2, cfg.sampling.steps // 5), progress=progress)
    return {k: s[k] for k in ("clean_solve_rate", "worst_step", "worst_frame", "worst_drop_step", "worst_drop_frame",
                              "answer_frame", "worst_frame_before_answer", "worst_drop_frame_before_answer",
                              "step_minus_frame_drop", "step_minus_frame_drop_ci95") if k in s}


def demo_cka(den: Any, cfg: ProbeConfig, out: str, demo: Any, progress: bool) -> dict[str, Any]:
    s = run_cka(den, cfg, out, every=max(2, cfg.sampling.steps // 5), progress=progress)
    return {k: s[k] for k in ("flow_injection_steps", "flow_last_step_first_injection", "flow_last_step_last_injection", "flow_layers_last_step",
                              "flow_first_minus_last_injection")}
