# long module: the sweep, its per-mode summary and the CKA flow maps share one record format (scores, recovery and flows per sample); split, each would re-read the others.
"""Noise at a step vs noise at a frame (paper Fig. 3b) and CKA information flow (Fig. 3c), each with its control.

- Noise at step s (all frames): the latent leaving step s, at sigma_{s+1}, is corrupted; steps s+1..
  continue from it. Modes (`MODES`): `replace`, the paper's wording, puts unit Gaussian noise there
  whatever sigma the next step expects, so a late injection is "sample from pure noise with too few
  steps left" and its damage must grow with the step; `renoise`, the level-matched control, keeps the
  step's clean estimate and draws fresh noise at the sampler's level,
  `x = (1 - sigma_{s+1}) x0_hat_s + sigma_{s+1} eps_new`, so only the noise part is new and a window
  of damage in the middle of the trajectory can show; `add` adds `strength * sigma_{s+1} * eps_new`.
  Runs share the clean prefix: each injected run restarts at step s from the clean latent.
- Noise at frame f: latent frame f is corrupted after every step (the paper's wording: never
  repaired), and, with a frame window A:B, only after steps A..B-1 and then released: does the
  answer survive, and how fast does the frame's clean estimate x0_hat come back to the clean run's.
- Information flow (with block layers): after an injection at step s, 1 - linear CKA between the
  clean and the perturbed run's x0_hat at every later step, their final outputs, and chosen blocks'
  residual streams at every later step: the injection-step x later-step matrix, cells at or before
  the injection empty (both runs are identical there). Each CKA is per sample, tokens as rows
  (`CKA_MATRICES` says which features are the columns), averaged over samples. The latent x_t itself
  is not compared: right after a `replace` injection it is the injected noise, so 1 - CKA = 1 there
  by construction. The floor: a run from other initial noise (a fresh seed), compared the same way.
Every step index is reported with its sigma, so runs with other step counts or shifts compare.
Perturbation probes run on Euler: a corrector (UniPC, Heun) partly undoes an injected latent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..config import write_json
from ..interventions import MODES, NoiseAtFrame, NoiseAtStep
from ..runner import Batch
from ..runs import RunFolder
from ..sampling import get_sampler, run, seeded_noise
from ..stats import calibration_split, paired_diff, proportion_ci, t_interval
from ..tasks.process import process_score
from .cka import linear_cka
from .common import ProbeConfig, ProbeRun, held_out, make_batch, plt, require_finite, run_sharded, save_npz, split_errors

MODE_NOTES = {
    "replace": "the paper's wording: the latent is replaced by unit Gaussian noise, whatever sigma the next step expects",
    "renoise": "level-matched control: x = (1 - sigma) * x0_hat + sigma * eps_new at the sampler's sigma, the clean estimate kept",
    "add": "x += strength * sigma * eps_new at the sampler's sigma",
    "destroy": "SNR-matched damage: x = (1 - sigma) ((1 - d) x0_hat + d eps_new) + sigma eps, d = strength, the same fraction of "
               "signal lost per damaged frame at a step or at a frame",
}
CKA_MATRICES = {
    "x0_hat": "per sample, rows: latent tokens (frame, h, w) of the frames after the given first frame; columns: the latent "
              "channels of x0_hat (at step t) or of the sampled output (column 'final')",
    "x0_hat_change": "as x0_hat, on each frame minus frame 0 (what is drawn on top of the given image)",
    "blocks": "per sample, rows: the transformer's tokens; columns: the block's residual-stream features (resid_post)",
}
FRESH_SEED_OFFSET = 7919  # the fresh-seed floor starts from noise seeded noise_seed + this


def _check_euler(cfg: ProbeConfig) -> None:
    if cfg.sampling.sampler != "euler":
        raise ValueError("perturbation probes need the Euler sampler: a corrector step partly undoes injected noise")


def parse_modes(modes: str | Sequence[str]) -> list[str]:
    """'replace,renoise' or a list -> validated, de-duplicated modes in the given order."""
    ms = [m.strip() for m in (modes.split(",") if isinstance(modes, str) else modes) if m.strip()]
    bad = [m for m in ms if m not in MODES]
    if not ms or bad:
        raise ValueError(f"--mode takes one or more of {', '.join(MODES)} (comma-separated), got {modes!r}")
    return list(dict.fromkeys(ms))


def parse_window(window: str | Sequence[int] | None, n_steps: int) -> tuple[int, int] | None:
    """'A:B' -> (A, B): the frame is corrupted after steps A..B-1 and released from step B on (B <= steps - 1)."""
    if window is None or window == "":
        return None
    try:
        a, b = (int(v) for v in (window.split(":") if isinstance(window, str) else window))
    except ValueError:
        raise ValueError(f"--frame-window must be A:B (two step indices), got {window!r}") from None
    if not 0 <= a < b <= n_steps - 1:
        raise ValueError(f"--frame-window {a}:{b} needs 0 <= A < B <= steps - 1 = {n_steps - 1} (released before the last step)")
    return a, b


class _States:
    """Per-step states of one run: x0_hat, the final output, chosen blocks' residual streams, and (to resume) x_t."""

    def __init__(self, layers: Sequence[int] = (), keep_x: bool = False):
        self.layers, self.keep_x = list(layers), keep_x
        self.x: dict[int, Tensor] = {}  # on the model's device: injected runs resume from it
        self.x0: dict[int, Tensor] = {}
        self.acts: dict[tuple[int, int], Tensor] = {}
        self.final: Tensor | None = None

    def callback(self, e) -> None:
        if self.keep_x:
            self.x[e.step] = e.x.detach()
        self.x0[e.step] = e.x0_hat.detach().float().cpu()

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
            out = run(gen, cbs)
    else:
        out = run(gen, cbs)
    if states:
        states.final = out.detach().float().cpu()
    return out


def _score(den: Any, batch: Batch, lat: Tensor) -> list[float]:
    frames = den.decode(lat)
    return [float(batch.task.score(i, f).success) for i, f in zip(batch.instances, frames)]


def _scores(den: Any, batch: Batch, lat: Tensor) -> tuple[list[float], list[float]]:
    """(final-state success, process success) per sample: the scorer reads the last frame, the process score every frame."""
    frames = den.decode(lat)
    final = [float(batch.task.score(i, f).success) for i, f in zip(batch.instances, frames)]
    return final, [float(process_score(batch.task, i, f).success) for i, f in zip(batch.instances, frames)]


def _change(x: Tensor) -> Tensor:
    """Latents (B, C, F, H, W) -> each later frame minus frame 0 (the given image in image-to-video runs)."""
    return x[:, :, 1:] - x[:, :, :1]


def _cka_rows(a: Tensor, b: Tensor) -> list[float]:
    """Per sample 1 - CKA, tokens as rows; a, b: (B, N, D) or latents (B, C, F, H, W)."""
    if a.ndim == 5:
        a, b = a.flatten(2).transpose(1, 2), b.flatten(2).transpose(1, 2)  # (B, N, C)
    return [1.0 - linear_cka(x, y) for x, y in zip(a, b)]


def _flow_keys(image: bool, layers: Sequence[int]) -> list[str]:
    return ["x0_hat", *(["x0_hat_change"] if image else []), *(f"layer_{l}" for l in layers)]


def _state_name(key: str) -> str:
    """A record's flow key -> the state's name in summaries and plots."""
    return f"blocks.{key.removeprefix('layer_')}.resid_post" if key.startswith("layer_") else key


def _flow_row(clean: _States, pert: _States, after: int, n_steps: int, image: bool) -> dict[str, np.ndarray]:
    """1 - CKA per sample at every step after `after` and at the output: {key: (B, n_steps + 1)}, NaN where not observed.

    Column t < n_steps: x0_hat and block activations at step t; column n_steps: the final outputs (no block there)."""
    skip = 1 if image else 0  # image-to-video: frame 0 is the given image in both runs
    b = clean.final.shape[0]
    out = {k: np.full((b, n_steps + 1), np.nan) for k in _flow_keys(image, clean.layers)}
    for t in range(after + 1, n_steps + 1):
        a, p = (clean.x0[t], pert.x0[t]) if t < n_steps else (clean.final, pert.final)
        out["x0_hat"][:, t] = _cka_rows(a[:, :, skip:], p[:, :, skip:])
        if image:
            out["x0_hat_change"][:, t] = _cka_rows(_change(a), _change(p))
        if t < n_steps:
            for l in clean.layers:
                out[f"layer_{l}"][:, t] = _cka_rows(clean.acts[(t, l)], pert.acts[(t, l)])
    return out


def _frame_distance(clean: _States, pert: _States, frame: int, first: int, n_steps: int) -> np.ndarray:
    """(B, n_steps + 1): |x0_hat_pert - x0_hat_clean| / |x0_hat_clean| on one latent frame, per step and at the output.

    Steps before `first` (where the perturbed run resumed from the clean one) are identical: 0."""
    b = clean.final.shape[0]
    out = np.zeros((b, n_steps + 1))
    for t in range(first, n_steps + 1):
        a, p = (clean.x0[t], pert.x0[t]) if t < n_steps else (clean.final, pert.final)
        a, p = a[:, :, frame].flatten(1), p[:, :, frame].flatten(1)
        out[:, t] = ((p - a).norm(dim=1) / a.norm(dim=1)).numpy()
    return out


def perturb_batch(den: Any, batch: Batch, noise_seeds: list[int], cfg: ProbeConfig, *, inject_steps: Sequence[int],
                  frames: Sequence[int], modes: Sequence[str] = ("replace",), strength: float = 1.0, cka_layers: Sequence[int] = (),
                  frame_window: tuple[int, int] | None = None, tick: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """One batch: the clean run, and per mode every injection at a step and at a frame, scored.

    Per sample: clean (score); per mode m: `step:m`, `frame:m` (score per injection index), with a frame window
    `window:m` and the array `recovery__m` ((frames, steps + 1) distance of the frame's x0_hat to the clean run's);
    with CKA layers the arrays `flow__m__key` ((injections, steps + 1) 1 - CKA, NaN at and before the injection step)
    and `flow__seed__key` ((steps + 1,) against a run from other initial noise).
    """
    n_steps, b = cfg.sampling.steps, len(batch.instances)
    tick = tick or (lambda k: None)
    image = batch.cond.image is not None
    layers = list(cka_layers)
    clean = _States(layers, keep_x=True)
    out = _sample(den, batch, seeded_noise(batch.latent_shape, noise_seeds, device=den.device), cfg, 0, [], clean)
    require_finite(out)
    recs: list[dict[str, Any]] = [{"clean": c, "clean_process": p} for c, p in zip(*_scores(den, batch, out))]
    arrays: dict[str, np.ndarray] = {}
    tick(b)
    if layers:  # the floor: a run that shares nothing with the clean one but the puzzle
        other = _States(layers)
        _sample(den, batch, seeded_noise(batch.latent_shape, [s + FRESH_SEED_OFFSET for s in noise_seeds], device=den.device), cfg, 0, [], other)
        arrays.update({f"flow__seed__{k}": v for k, v in _flow_row(clean, other, -1, n_steps, image).items()})
        tick(b)
    inj_seeds = tuple(s + 1 for s in noise_seeds)
    for m in modes:
        scores: dict[str, list[list[float]]] = {f"step:{m}": [], f"frame:{m}": [], f"pstep:{m}": [], f"pframe:{m}": [],
                                                **({f"window:{m}": []} if frame_window else {})}
        flows = {k: np.full((b, len(inject_steps), n_steps + 1), np.nan) for k in _flow_keys(image, layers)} if layers else {}
        for si, s in enumerate(inject_steps):
            pert = _States(layers) if layers else None
            lat = _sample(den, batch, clean.x[s], cfg, s, [NoiseAtStep((s,), mode=m, strength=strength, seeds=inj_seeds)], pert)
            final, proc = _scores(den, batch, lat)
            scores[f"step:{m}"].append(final)
            scores[f"pstep:{m}"].append(proc)
            if pert is not None:
                for k, v in _flow_row(clean, pert, s, n_steps, image).items():
                    flows[k][:, si] = v
            tick(b)
        for f in frames:
            x_init = clean.x[0]
            lat = _sample(den, batch, x_init, cfg, 0, [NoiseAtFrame((f,), mode=m, strength=strength, seeds=inj_seeds)], None)
            final, proc = _scores(den, batch, lat)
            scores[f"frame:{m}"].append(final)
            scores[f"pframe:{m}"].append(proc)
            tick(b)
        if frame_window:
            a, z = frame_window
            dist = np.zeros((b, len(frames), n_steps + 1))
            for fi, f in enumerate(frames):
                pert = _States()
                lat = _sample(den, batch, clean.x[a], cfg, a,
                              [NoiseAtFrame((f,), steps=tuple(range(a, z)), mode=m, strength=strength, seeds=inj_seeds)], pert)
                scores[f"window:{m}"].append(_score(den, batch, lat))
                dist[:, fi] = _frame_distance(clean, pert, f, a, n_steps)
                tick(b)
            arrays[f"recovery__{m}"] = dist
        for k, per_index in scores.items():  # (indices, B) -> per sample
            for i, r in enumerate(recs):
                r[k] = [v[i] for v in per_index]
        arrays.update({f"flow__{m}__{k}": v for k, v in flows.items()})
    for i, r in enumerate(recs):
        r.update({k: v[i] for k, v in arrays.items()})
    return recs


def perturb_sweep(den: Any, cfg: ProbeConfig, *, inject_steps: Sequence[int], frames: Sequence[int], modes: Sequence[str] = ("replace",),
                  strength: float = 1.0, cka_layers: Sequence[int] = (), frame_window: tuple[int, int] | None = None,
                  progress: bool = True, folder: RunFolder | None = None, ray_address: str | None = None,
                  num_workers: int | None = None) -> dict[str, Any]:
    """Scores per sample for every mode and injection index; per-sample recovery distances and CKA flows as arrays.

    Returns {clean, errors, seed_flows: {key: (samples, steps + 1)}, modes: {m: {step: {s: scores}, frame: {f: scores},
    window: {f: scores}, recovery: (samples, frames, steps + 1) | None, flows: {key: (samples, injections, steps + 1)}}}}.
    """
    _check_euler(cfg)
    modes = parse_modes(modes)
    fn = partial(perturb_batch, inject_steps=list(inject_steps), frames=list(frames), modes=modes, strength=strength,
                 cka_layers=list(cka_layers), frame_window=frame_window)
    work = 1 + bool(cka_layers) + len(modes) * (len(inject_steps) + len(frames) * (1 + bool(frame_window)))
    recs = run_sharded(den, cfg, fn, folder=folder, label=f"perturb ({','.join(modes)})", work_per_sample=work,
                       progress=progress, ray_address=ray_address, num_workers=num_workers)
    ok, errors = split_errors(recs)

    order = _flow_keys(True, cka_layers)

    def stack(prefix: str) -> dict[str, np.ndarray]:  # per state in _flow_keys order: x0_hat, its change, blocks
        keys = sorted((k for k in ok[0] if k.startswith(prefix)), key=lambda k: order.index(k.removeprefix(prefix)))
        return {k.removeprefix(prefix): np.stack([r[k] for r in ok]) for k in keys}

    res: dict[str, Any] = {"clean": [r["clean"] for r in ok], "errors": errors, "seed_flows": stack("flow__seed__"), "modes": {}}
    for m in modes:
        res["modes"][m] = {
            "step": {s: [r[f"step:{m}"][i] for r in ok] for i, s in enumerate(inject_steps)},
            "frame": {f: [r[f"frame:{m}"][i] for r in ok] for i, f in enumerate(frames)},
            "window": {f: [r[f"window:{m}"][i] for r in ok] for i, f in enumerate(frames)} if frame_window else {},
            "recovery": np.stack([r[f"recovery__{m}"] for r in ok]) if frame_window else None,
            "flows": stack(f"flow__{m}__"),
        }
        if all(f"pstep:{m}" in r for r in ok):  # the process score (every frame); absent in records resumed from before it
            res["modes"][m]["process"] = {"clean": [r["clean_process"] for r in ok],
                                          "step": {s: [r[f"pstep:{m}"][i] for r in ok] for i, s in enumerate(inject_steps)},
                                          "frame": {f: [r[f"pframe:{m}"][i] for r in ok] for i, f in enumerate(frames)}}
    return res


def _curve(scores: dict[int, list[float]], sigma: Callable[[int], float] | None = None) -> list[dict[str, Any]]:
    """Per index: mean with its 95% interval inside [0, 1] (and the sigma of the injected latent for step indices)."""
    rows = []
    for k, v in scores.items():
        m, lo, hi = proportion_ci(v)
        rows.append({"index": k, **({"sigma": sigma(k)} if sigma else {}), "mean": m, "lo": lo, "hi": hi})
    return rows


def _worst(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lowest point of a curve; `tied` lists every index at that minimum, and a tie names no index (it is no location)."""
    if not curve:
        return None
    low = min(r["mean"] for r in curve)
    tied = [r["index"] for r in curve if abs(r["mean"] - low) < 1e-12]
    first = next(r for r in curve if r["index"] == tied[0])
    if len(tied) > 1:
        return {"index": None, "tied": tied, **{k: first[k] for k in ("mean", "lo", "hi")}}
    return {**first, "tied": tied}


def _worst_text(w: dict[str, Any], what: str) -> str:
    ci = f"{w['mean']:.2f} [{w['lo']:.2f}, {w['hi']:.2f}]"
    if len(w["tied"]) > 1:
        return f"{what}s {', '.join(map(str, w['tied']))} tie at the minimum, {ci} (no single worst {what})"
    sig = f" (sigma {w['sigma']:.3f})" if "sigma" in w else ""
    return f"{what} {w['index']}{sig} -> {ci}"


def _thirds(step_scores: dict[int, list[float]], sigma: Callable[[int], float], clean: float) -> list[dict[str, Any]]:
    """Injection steps cut into early / middle / late thirds: the solve rate over each third's injections, per sample."""
    steps = list(step_scores)
    out = []
    for name, part in zip(("early", "middle", "late"), np.array_split(np.array(steps), 3)):
        if not len(part):
            continue
        per_sample = np.mean([step_scores[int(s)] for s in part], axis=0)
        m, lo, hi = proportion_ci(per_sample)
        out.append({"third": name, "steps": [int(s) for s in part], "sigmas": [sigma(int(part[0])), sigma(int(part[-1]))],
                    "mean": m, "lo": lo, "hi": hi, "drop": clean - m})
    return out


def run_perturb(den: Any, cfg: ProbeConfig, out: str, *, every: int = 2, mode: str | Sequence[str] = "replace", strength: float = 1.0,
                frames: Sequence[int] | None = None, frame_window: str | Sequence[int] | None = None, progress: bool = True,
                cka_layers: Sequence[int] = (), ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """Noise at step vs noise at frame, per mode: score vs injection index with 95% CIs (and CKA flow if layers given).

    `mode`: one mode or several ('replace,renoise': the paper's wording with the level-matched control beside it).
    `frame_window` 'A:B': also corrupt each frame only after steps A..B-1, then release it, and measure its recovery."""
    _check_euler(cfg)
    modes = parse_modes(mode)
    window = parse_window(frame_window, cfg.sampling.steps)
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    if frames is None:  # every latent frame after the first (the given image for image-to-video)
        n_latent = make_batch(den, cfg, cfg.seeds()[:1])[0].latent_shape[1]
        frames = list(range(1, n_latent))
    frames = list(frames)
    steps = list(range(0, cfg.sampling.steps - 1, every))
    run_ = ProbeRun(out, "probe-perturb", held=held_out(cfg), config={"probe": cfg.__dict__ | {"sampling": cfg.sampling.__dict__}, "every": every, "modes": modes,
                                           "strength": strength, "frames": frames, "frame_window": list(window) if window else None,
                                           "cka_layers": list(cka_layers)})
    res = perturb_sweep(den, cfg, inject_steps=steps, frames=frames, modes=modes, strength=strength, cka_layers=cka_layers,
                        frame_window=window, progress=progress, folder=run_.folder, ray_address=ray_address, num_workers=num_workers)
    sigmas = [float(v) for v in cfg.sampling.sigmas(den)]
    return _write_perturb(run_, cfg, res, sigmas, window)


def _mode_summary(res: dict[str, Any], sigmas: list[float], clean: float, window: tuple[int, int] | None) -> dict[str, Any]:
    """One mode's curves, worst points (with ties), thirds, the step-vs-frame comparison and the frame-window recovery."""
    sig_after = lambda s: sigmas[s + 1]  # noqa: E731 - the level of the latent an injection at step s replaces
    step_curve, frame_curve = _curve(res["step"], sig_after), _curve(res["frame"])
    worst_step, worst_frame = _worst(step_curve), _worst(frame_curve)
    # the last latent frame is the one the scorer reads: noise there every step overwrites the answer
    # itself, which no attention can repair. The paper's comparison is about the frames in between.
    answer = max(res["frame"]) if res["frame"] else None
    worst_inner = _worst([r for r in frame_curve if r["index"] != answer])
    s: dict[str, Any] = {
        "what": MODE_NOTES[res["mode"]], "noise_at_step": step_curve, "worst_step": worst_step,
        "worst_drop_step": clean - worst_step["mean"] if worst_step else None, "step_by_third": _thirds(res["step"], sig_after, clean),
        "noise_at_frame": frame_curve, "worst_frame": worst_frame, "worst_drop_frame": clean - worst_frame["mean"] if worst_frame else None,
        "answer_frame": answer, "worst_frame_before_answer": worst_inner,
        "worst_drop_frame_before_answer": clean - worst_inner["mean"] if worst_inner else None,
    }
    if worst_step and worst_inner:
        # paired over samples: how much more the worst step injection costs than the worst frame injection, with the
        # worst step and frame chosen on a calibration half and the difference measured on the held-out half
        # (0/1 outcomes: Newcombe's paired interval, exact McNemar)
        cal, held, split = calibration_split(len(res["step"][worst_step["tied"][0]]))
        pick = lambda scores, keys: min(keys, key=lambda k: float(np.mean(np.asarray(scores[k])[cal])))  # noqa: E731 - first lowest
        step = pick(res["step"], list(res["step"]))
        frame = pick(res["frame"], [f for f in res["frame"] if f != answer])
        d = paired_diff(np.asarray(res["step"][step])[held], np.asarray(res["frame"][frame])[held], rates=True)
        s["step_minus_frame_drop"], s["step_minus_frame_drop_ci95"], s["step_minus_frame_drop_stats"] = d[0], [d[1], d[2]], d[3]
        s["step_minus_frame_drop_n"] = len(held)
        for key, scores, k in (("worst_step_held_out", res["step"], step), ("worst_frame_before_answer_held_out", res["frame"], frame)):
            m, lo, hi = proportion_ci(np.asarray(scores[k])[held])  # the chosen point's rate where it was not chosen
            s[key] = {"index": k, "mean": m, "lo": lo, "hi": hi, "ci95": [lo, hi], "n": len(held)}
        s["selection"] = {"step": step, "frame": frame, "calibration_n": len(cal), "held_out_n": len(held),
                          "how": ("worst step and frame chosen on the calibration half (even samples), the difference measured on "
                                  "the held-out half (odd samples)") if split else "worst step and frame chosen in-sample (n < 4)"}
    if res.get("process"):  # the same comparison scored over every frame (steplens.tasks.process), beside the final-frame one
        p = res["process"]
        s["process"] = _mode_summary({"mode": res["mode"], "step": p["step"], "frame": p["frame"]}, sigmas,
                                     float(np.mean(p["clean"])), None)
        s["process"]["what"] = "process score: every frame a legal successor of the one before (steplens.tasks.process)"
        s["process"]["clean_rate"] = float(np.mean(p["clean"]))
    if window:
        a, z = window
        rec = res["recovery"]  # (samples, frames, steps + 1)
        n_steps = len(sigmas) - 1
        after = list(range(z, n_steps)) + [n_steps]  # steps from the release on, then the output
        s["frame_window"] = {
            "window": [a, z], "corrupted_after_steps": list(range(a, z)), "released_from_step": z,
            "sigmas": [sigmas[a + 1], sigmas[z]],  # the levels of the first and the last corrupted latent
            "scores": _curve(res["window"]),
            "recovery": [{"frame": f, "distance_after_release": [
                {"step": t if t < n_steps else "final", "sigma": sigmas[t], **_mean_ci(rec[:, fi, t])}
                for t in after]} for fi, f in enumerate(res["window"])],
            "distance": "|x0_hat_perturbed - x0_hat_clean| / |x0_hat_clean| on the frame's latent (Frobenius), per sample, mean with "
                        "a Student t 95% CI; 'final' compares the sampled outputs",
        }
    return s


def _write_perturb(run_: ProbeRun, cfg: ProbeConfig, res: dict[str, Any], sigmas: list[float], window: tuple[int, int] | None) -> dict[str, Any]:
    clean = proportion_ci(res["clean"])
    modes = list(res["modes"])
    by_mode = {m: _mode_summary({**r, "mode": m}, sigmas, clean[0], window) for m, r in res["modes"].items()}
    _save_perturb(run_, res, sigmas)
    _plot_perturb(run_, cfg, res, by_mode, clean[0], sigmas, window)
    summary: dict[str, Any] = {
        "n": len(res["clean"]), "n_errors": len(res["errors"]), "errors": res["errors"], "modes": modes,
        "protocol": {m: MODE_NOTES[m] for m in modes}, "clean_solve_rate": clean[0], "clean_solve_rate_ci95": [clean[1], clean[2]],
        "step_sigmas": sigmas, "injection_sigma": "an injection at step s replaces the latent leaving step s, at sigma_{s+1}",
        "by_mode": by_mode,
    }
    text = [f"noise at step vs frame, {summary['n']} held-out {cfg.task} {cfg.size}x{cfg.size}, {cfg.sampling.steps} Euler steps "
            f"(shift {cfg.sampling.shift}): clean solve rate {clean[0]:.2f} [{clean[1]:.2f}, {clean[2]:.2f}] (95% CI, Wilson)"]
    for m, s in by_mode.items():
        text += _mode_text(m, s)
    if res["seed_flows"]:
        summary["cka"] = _write_flow(run_, res, sigmas, list(res["modes"][modes[0]]["step"]))
        text += summary["cka"].pop("text")
    return run_.finish(summary, "\n".join(text))


def _mode_text(m: str, s: dict[str, Any]) -> list[str]:
    t = [f"[{m}] {s['what']}",
         "  noise at step s (all frames), solve rate per s (sigma of the injected latent): "
         + "; ".join(f"{r['index']} ({r['sigma']:.2f}) {r['mean']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in s["noise_at_step"]),
         f"  lowest point (in-sample, descriptive): {_worst_text(s['worst_step'], 'step')}" if s["worst_step"] else "  no step injections",
         "  by third of the injections: " + ", ".join(f"{r['third']} (steps {r['steps'][0]}-{r['steps'][-1]}) {r['mean']:.2f} "
                                                     f"[{r['lo']:.2f}, {r['hi']:.2f}]" for r in s["step_by_third"])]
    if s["noise_at_frame"]:
        t.append("  noise at frame f (every step), solve rate per f: "
                 + "; ".join(f"{r['index']} {r['mean']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in s["noise_at_frame"])
                 + f" (frame {s['answer_frame']} is the answer frame the scorer reads: noise there overwrites what is scored)")
    if "step_minus_frame_drop" in s:
        lo, hi = s["step_minus_frame_drop_ci95"]
        sel = s["selection"]
        t.append(f"  worst step ({sel['step']}) costs {s['step_minus_frame_drop']:.2f} more than the worst frame before the answer "
                 f"({sel['frame']}; Newcombe paired 95% CI [{lo:.2f}, {hi:.2f}], n={s['step_minus_frame_drop_n']}): {sel['how']}")
        ws, wf = s["worst_step_held_out"], s["worst_frame_before_answer_held_out"]
        t.append(f"  held-out solve rate after noise at step {ws['index']}: {ws['mean']:.2f} [{ws['lo']:.2f}, {ws['hi']:.2f}], "
                 f"on frame {wf['index']}: {wf['mean']:.2f} [{wf['lo']:.2f}, {wf['hi']:.2f}] (n={ws['n']})")
    if w := s.get("frame_window"):
        a, z = w["window"]
        t.append(f"  frame corrupted after steps {a}-{z - 1} only, then released: solve rate per frame "
                 + "; ".join(f"{r['index']} {r['mean']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in w["scores"]))
        for r in w["recovery"]:
            d = r["distance_after_release"]
            t.append(f"  frame {r['frame']} x0_hat distance to the clean run's after release: "
                     + ", ".join(f"{p['step']}: {p['mean']:.2f}" for p in d))
    return t


def _save_perturb(run_: ProbeRun, res: dict[str, Any], sigmas: list[float]) -> None:
    n = len(res["clean"])
    table = lambda d: np.array(list(d.values()), dtype=float).reshape(len(d), n)  # noqa: E731 - (indices, samples)
    arrays: dict[str, np.ndarray] = {"clean": np.array(res["clean"]), "sigmas": np.array(sigmas)}
    for m, r in res["modes"].items():
        arrays[f"{m}_step_index"], arrays[f"{m}_step_scores"] = np.array(list(r["step"])), table(r["step"])
        arrays[f"{m}_frame_index"], arrays[f"{m}_frame_scores"] = np.array(list(r["frame"])), table(r["frame"])
        if r["recovery"] is not None:
            arrays[f"{m}_window_scores"] = table(r["window"])
            arrays[f"{m}_recovery"] = r["recovery"]  # (samples, frames, steps + 1)
    save_npz(run_.root / "perturb.npz", **arrays)


def _plot_perturb(run_: ProbeRun, cfg: ProbeConfig, res: dict[str, Any], by_mode: dict[str, Any], clean: float, sigmas: list[float],
                  window: tuple[int, int] | None) -> None:
    pyplot = plt()
    panels = [("noise_at_step", "noise at step (all frames)"), ("noise_at_frame", "noise at frame (every step)")]
    if window:
        panels.append(("window", f"noise at frame, steps {window[0]}-{window[1] - 1} only"))
    fig, axes = pyplot.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for m, s in by_mode.items():
            curve = s["frame_window"]["scores"] if key == "window" else s[key]
            xs = [r["index"] for r in curve]
            ax.errorbar(xs, [r["mean"] for r in curve], yerr=[[r["mean"] - r["lo"] for r in curve], [r["hi"] - r["mean"] for r in curve]],
                        marker="o", capsize=3, label=m)
            if key == "noise_at_step":
                ax.set_xticks(xs, [f"{x}\n{sigmas[x + 1]:.2f}" for x in xs], fontsize=7)
        ax.axhline(clean, color="k", ls=":", label="no noise")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("injection step / sigma of the injected latent" if key == "noise_at_step" else "injected latent frame")
    axes[0][0].set_ylabel("solve rate (95% CI)")
    axes[0][0].set_ylim(-0.05, 1.05)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_.figure("perturb.png", "Noise at step vs noise at frame",
                            f"Solve rate after noise injection by injection index, per mode ({', '.join(by_mode)}; 95% CI over "
                            f"{len(res['clean'])} samples, Wilson). replace is the paper's wording; renoise keeps the clean estimate "
                            "and draws noise at the sampler's level, the control for 'too few steps left'."), dpi=120)
    pyplot.close(fig)
    if not window:
        return
    a, z = window
    n_steps = len(sigmas) - 1
    fig, axes = pyplot.subplots(1, len(by_mode), figsize=(5 * len(by_mode), 3.4), sharey=True, squeeze=False)
    for ax, (m, r) in zip(axes[0], res["modes"].items()):
        mean = r["recovery"].mean(0)  # (frames, steps + 1)
        for fi, f in enumerate(r["window"]):
            ax.plot(range(n_steps + 1), mean[fi], marker=".", label=f"frame {f}")
        ax.axvspan(a + 1, z, color="#eee", label="corrupted latent")
        ax.set_xticks(range(0, n_steps + 1, max(1, n_steps // 10)))
        ax.set_title(f"{m}: frame x0_hat vs clean run", fontsize=10)
        ax.set_xlabel(f"step ({n_steps}: the output)")
    axes[0][0].set_ylabel("relative distance")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_.figure("frame_recovery.png", "Does a released frame recover?",
                            f"Distance of a frame's clean estimate to the clean run's, per step, when the frame is corrupted after steps "
                            f"{a}-{z - 1} only (mean over samples); the paper says bidirectional attention repairs a damaged frame."), dpi=120)
    pyplot.close(fig)


def _mean_ci(values: np.ndarray) -> dict[str, float | None]:
    """Mean and Student t 95% CI of an unbounded quantity (a distance, 1 - CKA), None where undefined (one sample)."""
    return {k: float(x) if np.isfinite(x) else None for k, x in zip(("mean", "lo", "hi"), t_interval(values))}


def _nullable(a: np.ndarray) -> list:
    return [_nullable(v) for v in a] if a.ndim > 1 else [None if not np.isfinite(v) else float(v) for v in a]


def _write_flow(run_: ProbeRun, res: dict[str, Any], sigmas: list[float], inject_steps: list[int]) -> dict[str, Any]:
    """The injection-step x later-step 1 - CKA maps per mode and state: cka_flow.json / .npz / .png, and the headline."""
    n_steps = len(sigmas) - 1
    keys = list(res["seed_flows"])
    names = {k: _state_name(k) for k in keys}
    what = {names[k]: CKA_MATRICES["blocks" if k.startswith("layer_") else k] for k in keys}
    cols = [*range(n_steps), "final"]
    doc = {"what": "1 - linear CKA between the clean and the perturbed run, mean over samples (lo/hi: Student t 95% CI); rows: injection "
                   "steps, columns: observed steps then the final output; null at and before the injection step (identical runs)",
           "matrices": what, "injection_steps": inject_steps, "injection_sigmas": [sigmas[s + 1] for s in inject_steps],
           "observed_steps": cols, "observed_sigmas": sigmas, "modes": {}}
    ci = lambda m: np.apply_along_axis(lambda v: np.array(t_interval(v) if np.isfinite(v).all() else (np.nan,) * 3), 0, m)  # noqa: E731 - (samples, ...) -> (3, ...)
    doc["fresh_seed"] = {names[k]: dict(zip(("mean", "lo", "hi"), map(_nullable, ci(v)))) for k, v in res["seed_flows"].items()}
    npz: dict[str, np.ndarray] = {"injection_steps": np.array(inject_steps), "sigmas": np.array(sigmas)}
    headline: dict[str, Any] = {"matrices": what, "injection_steps": inject_steps, "injection_sigmas": doc["injection_sigmas"], "modes": {}}
    text = ["information flow: 1 - CKA between the clean and the perturbed run (0: no effect, 1: unrelated); each CKA is per sample with "
            "tokens as rows; columns: " + "; ".join(f"{n}: {w.split('columns: ')[-1]}" for n, w in what.items())]
    for m, r in res["modes"].items():
        doc["modes"][m], headline["modes"][m] = {}, {}
        for k, v in r["flows"].items():  # (samples, injections, steps + 1)
            c = ci(v)
            doc["modes"][m][names[k]] = dict(zip(("mean", "lo", "hi"), map(_nullable, c)))
            npz[f"{m}__{names[k].replace('.', '_')}"] = c[0]
            col = n_steps if k.startswith("x0_hat") else n_steps - 1  # blocks have no output column: their last step
            end = [dict(zip(("mean", "lo", "hi"), (None if not np.isfinite(x) else float(x) for x in c[:, i, col]))) for i in range(len(inject_steps))]
            seed_end = res["seed_flows"][k][:, col]
            h = {"observed": "final output" if col == n_steps else f"step {col}", "per_injection_step": end,
                 "fresh_seed": _mean_ci(seed_end)}
            ok = [i for i in range(len(inject_steps)) if np.isfinite(v[:, i, col]).all()]
            if len(ok) >= 2:  # positive: early injections reach the end more than late ones
                d, lo, hi, rec = paired_diff(v[:, ok[-1], col], v[:, ok[0], col], rates=False)  # Student t
                h["first_minus_last_injection"] = {"diff": d, "ci95": [lo, hi], "stats": rec}
            headline["modes"][m][names[k]] = h
            text.append(f"  [{m}] {names[k]} at {'the output' if col == n_steps else f'step {col}'}, per injection step: "
                        + ", ".join(f"{s}: {e['mean']:.2f}" for s, e in zip(inject_steps, end) if e["mean"] is not None)
                        + (f"; a fresh seed: {h['fresh_seed']['mean']:.2f}" if h["fresh_seed"]["mean"] is not None else "")
                        + (f"; earliest minus latest {h['first_minus_last_injection']['diff']:.2f} [{h['first_minus_last_injection']['ci95'][0]:.2f}, "
                           f"{h['first_minus_last_injection']['ci95'][1]:.2f}]" if "first_minus_last_injection" in h else ""))
    write_json(run_.root / "cka_flow.json", doc)
    save_npz(run_.root / "cka_flow.npz", **npz)
    _plot_flow(run_, res, doc, sigmas, inject_steps)
    return {**headline, "text": text}


def _plot_flow(run_: ProbeRun, res: dict[str, Any], doc: dict[str, Any], sigmas: list[float], inject_steps: list[int]) -> None:
    pyplot = plt()
    modes = list(doc["modes"])
    states = list(doc["modes"][modes[0]])
    n_steps = len(sigmas) - 1
    fig, axes = pyplot.subplots(len(modes), len(states), figsize=(4.6 * len(states) + 1, 3.8 * len(modes)), squeeze=False,
                              constrained_layout=True)
    im = None
    for i, m in enumerate(modes):
        for j, name in enumerate(states):
            ax = axes[i][j]
            mat = np.array(doc["modes"][m][name]["mean"], dtype=float)
            im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", vmin=0, vmax=1, cmap="magma", origin="upper")
            ax.set_yticks(range(len(inject_steps)), [f"{s} ({sigmas[s + 1]:.2f})" for s in inject_steps], fontsize=7)
            xt = list(range(0, n_steps, max(1, n_steps // 8))) + [n_steps]
            ax.set_xticks(xt, [f"{t}\n{sigmas[t]:.2f}" if t < n_steps else "out" for t in xt], fontsize=7)
            ax.set_xlabel("observed step / sigma")
            ax.set_ylabel("injection step (sigma)")
            ax.set_title(f"[{m}] 1 - CKA, {name}", fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
    fig.savefig(run_.figure("cka_flow.png", "Information flow across steps (1 - CKA)",
                            "Dissimilarity between the clean and the perturbed run at every later step and at the output ('out'), per "
                            "injection step and mode (1: unrelated, 0: no effect); blank: at or before the injection. Rows of each "
                            "CKA are one sample's tokens; x0_hat has the latent channels as features, blocks their residual width."),
                dpi=120, bbox_inches="tight")
    pyplot.close(fig)


def run_cka(den: Any, cfg: ProbeConfig, out: str, *, every: int = 2, layers: Sequence[int] | None = None, mode: str | Sequence[str] = "replace",
            strength: float = 1.0, progress: bool = True, ray_address: str | None = None, num_workers: int | None = None) -> dict[str, Any]:
    """Information flow: noise-at-step injections with the clean and perturbed states compared by CKA (needs block layers)."""
    depth = len(den.hook_blocks())
    if not depth:
        raise ValueError(f"probe cka compares block activations; model {getattr(den, 'name', '?')!r} has no transformer blocks")
    layers = list(layers) if layers is not None else default_cka_layers(den)
    if not layers:
        raise ValueError("probe cka compares block activations beside x0_hat: give at least one layer")
    if any(not 0 <= l < depth for l in layers):
        raise ValueError(f"layers {layers} outside the model's {depth} blocks")
    return run_perturb(den, cfg, out, every=every, mode=mode, strength=strength, frames=[], progress=progress, cka_layers=layers,
                       ray_address=ray_address, num_workers=num_workers)


def default_cka_layers(den: Any) -> list[int]:
    """The blocks `probe cka` compares beside x0_hat: the middle one and the last one."""
    depth = len(den.hook_blocks())
    return sorted({depth // 2, depth - 1})


def cka_from_perturb(perturb: dict[str, Any], src: str | Path, out: str | Path, cfg: ProbeConfig, *, every: int,
                     mode: str | Sequence[str], layers: Sequence[int]) -> dict[str, Any]:
    """The run folder `run_cka` would write, read off a perturb run that recorded CKA flows on the same instances
    (`run_perturb(..., cka_layers=layers)`): its clean runs and step injections are the same ones, so no model runs."""
    import json
    import shutil

    modes = parse_modes(mode)
    if "cka" not in perturb or any(m not in perturb["cka"]["modes"] for m in modes):
        raise ValueError(f"the perturb run at {src} recorded no CKA flows for {modes}")
    src = Path(src)
    run_ = ProbeRun(out, "probe-perturb", held=held_out(cfg), config={"probe": cfg.__dict__ | {"sampling": cfg.sampling.__dict__}, "every": every, "modes": modes,
                                           "strength": 1.0, "frames": [], "frame_window": None, "cka_layers": list(layers),
                                           "shared_from": src.name})
    for name in ("cka_flow.json", "cka_flow.npz", "cka_flow.png"):
        shutil.copyfile(src / name, run_.root / name)
    run_.figures = [f for f in json.loads((src / "figures.json").read_text()) if f["path"].startswith("cka_flow")]
    cka = {**perturb["cka"], "modes": {m: perturb["cka"]["modes"][m] for m in modes}}
    summary = {"n": perturb["n"], "n_errors": perturb["n_errors"], "errors": perturb["errors"], "modes": modes,
               "step_sigmas": perturb["step_sigmas"], "cka": cka,
               "shared_with": f"read off the perturb stage's runs ({src.name}): the same clean runs and step injections"}
    lines = (src / "summary.txt").read_text().splitlines()
    text = [ln for ln in lines if ln.startswith("information flow")] + [ln for ln in lines if any(ln.startswith(f"  [{m}] ") for m in modes)]
    return run_.finish(summary, "\n".join([*text, summary["shared_with"]]))
