"""Null and positive-control denoisers: oracles whose clean-estimate trajectories have a known property.

A measurement supports a claim only if it comes out differently on a denoiser without the claimed
property. These denoisers go through the same contract as the reference DiT (`Denoiser`: velocity
prediction for flow matching), so every probe and `steplens demo --model SPEC` runs on them:

- `null:shrink`  x0_hat = answer + sigma (mean - answer): moves linearly in sigma from each frame's mean
                 colour to the true answer. Converges; never holds a candidate.
- `null:blur`    x0_hat = the true answer box-blurred floor(3 sigma) times (3 passes at sigma 1, none
                 below 1/3). Converges; never holds a candidate.
- `null:noise`   velocity 0: the latent stays the starting noise (frame 0 re-imposed). Never solves.
- `null:forget`  as `null:shrink`, towards the task's `forgetful` video where it has one (a walk to one of
                 equal targets and the mark on another: every frame right, the choice forgotten), else the
                 answer: the null of the working-memory card, at its chance rate.
- `control:candidates[?prune=S&explore=E&keep=P]`  a positive control for Chain-of-Steps and pruning:
                 sigma > E: both candidates drawn at full strength (the true answer and one complete
                 wrong answer, `alternative`); E >= sigma > S: the wrong candidate alone (an early
                 x0_hat the scorer reads as a complete but different answer); sigma <= S: one
                 candidate, chosen by the trajectory's own noise (so seeds disagree); with probability
                 `keep` the true one. Defaults S=0.5 (step 10 of 20 Euler steps at shift 1), E=0.75, P=0.5.
- `control:commit[?commit=C]`  a positive control for the splice probe (an answer decided at a set step p):
                 sigma > C: both candidates superimposed at half strength, (truth + alt) / 2; sigma <= C: the
                 candidate the *state* leans to, sign of <x - (1 - sigma) mid, truth - alt>. At the first step at or
                 below C the state holds the two equally, so its noise decides; from then on the chosen candidate
                 dominates the state and the choice sticks. A clean estimate spliced in after p (x_s' = (1 - sigma)
                 x0_hat_B + sigma eps_A) hands the state B's choice: the final follows the plan from p on and the
                 noise before it. Default C=0.5 (p = step 10 of 20 Euler steps at shift 1).

Why `control:candidates` never follows a spliced plan: its choice is read from the implied noise on the
blocks where the candidates agree, and there every phase's clean estimate is the same content (the truth),
so after the splice x_s' = (1 - sigma) x0_hat_B + sigma eps_A the implied noise on those blocks is eps_A
exactly: A's noise, whatever B's plan. Its clean estimate depends on the state through nothing else, so the
final is A's at every splice step (observationally committed at p, causally never): a null for the splice.

What the wrong candidate is, per task (`alternative`): maze, a complete route from the start to a
dead end that branches off the true route for >= 2 blocks (a perfect maze has no second route to
the goal), one that does not pass the goal when the maze has it, else one running on past the goal
(about 1 in 4 of 6x6 mazes, 2 in 5 of 4x4), drawn growing frame by frame like the true one; every other task, the final frame of one
named rule violation (`ALTERNATIVE_VIOLATION`: another square for tictactoe, the counter-clockwise
turn for rotate, one block past (else short) for occlusion, off by one for shuttle, the wrong target for
shuttle_near). A task without one gets the true answer as its only candidate.

The answer is read through the task's solver: `make_cond` renders each instance's ground truth
(`task.blocks`, which runs the solver) and puts it in `cond.extra`, so it follows the batch through
`Cond.index` and `Cond.repeat`. The pruning choice is stateless: on the blocks where the candidates
agree every phase draws the same content, so there the implied noise (x - (1 - sigma) x0_hat) / sigma
stays the starting noise under Euler; its mean decides (a noise injection there changes it).

API: `CONTROLS` (name -> factory), `is_control(spec)`, `load_control(spec, device)`, `alternative(task, inst)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..tasks.base import COLOR_INDEX, PALETTE_ARRAY, Task
from .dit import BlockCodec
from .errors import resolve_device
from .protocol import Cond, DenoiserBase, Prediction, velocity_from_x0
from .serialize import ModelLoadError

__all__ = ["ALTERNATIVE_VIOLATION", "CONTROLS", "ControlDenoiser", "alternative", "commit_x0", "is_control", "load_control"]

PREFIXES = ("null", "control")
# the rule violations each task's candidates control draws as its complete wrong answer, the first the instance has
ALTERNATIVE_VIOLATION = {"maze_braid": ("longer_route",), "tictactoe": ("wrong_square",), "tictactoe_fork": ("wrong_square",), "rotate": ("counterclockwise",),
                         "rotate_large": ("counterclockwise",), "occlusion": ("one_past", "one_short", "stopped_before"),
                         "shuttle": ("off_by_one",), "shuttle_near": ("visited_wrong_target",),
                         "shuttle_choice": ("off_by_one",)}


# -- the complete wrong answer ---------------------------------------------------------------------
def maze_dead_end_route(task: Task, inst: Any) -> np.ndarray | None:
    """Maze block video drawing a route from the start to the dead end farthest off the true route (>= 2 blocks off it).

    A route that does not pass the goal is preferred; else one that runs on past the goal to a dead end (an overshoot).
    """
    from ..tasks.maze import PATH, bfs_path, dead_ends, floor_mask

    floor = floor_mask(inst)
    truth = task.blocks(inst)
    on_path = set(bfs_path(floor, inst.start, inst.goal))
    routes = [bfs_path(floor, inst.start, d) for d in dead_ends(floor, (inst.start, inst.goal))]
    scored = [(inst.goal not in r, sum(q not in on_path for q in r), r) for r in routes]
    scored = [x for x in scored if x[1] >= 2]
    if not scored:
        return None
    best = max(scored, key=lambda x: x[:2])[2]
    video = np.repeat(truth[:1], len(truth), axis=0).copy()
    inner = [q for q in best[1:] if q != inst.goal]  # start and goal keep their colours; the dead end is drawn blue
    for t in range(len(video)):
        k = int(np.ceil(len(inner) * t / (len(video) - 1)))
        for q in inner[:k]:
            video[t][q] = PALETTE_ARRAY[COLOR_INDEX[PATH]]
    return video


def alternative(task: Task, inst: Any) -> np.ndarray | None:
    """A complete but wrong answer as a block video (T, Hb, Wb, 3) uint8, or None when the task has none."""
    if task.name == "maze":
        return maze_dead_end_route(task, inst)
    if task.name == "maze_braid":
        from ..tasks.maze import longer_route_video

        return longer_route_video(task, inst)
    own = getattr(task, "violations", None)
    if task.name not in ALTERNATIVE_VIOLATION or not callable(own):
        return None
    found = own(inst)
    return next((found[n] for n in ALTERNATIVE_VIOLATION[task.name] if n in found), None)


def union_video(truth: np.ndarray, alt: np.ndarray) -> np.ndarray:
    """Both candidates in one video: the alternative's action (blocks unlike frame 0) drawn over the truth."""
    out = truth.copy()
    drawn = (alt != truth[:1]).any(-1) & (alt != truth).any(-1)  # (T, Hb, Wb)
    out[drawn] = alt[drawn]
    return out


# -- trajectories ------------------------------------------------------------------------------------
def box_blur(x: Tensor, passes: int) -> Tensor:
    """`passes` 3x3 box blurs of each frame of (B, C, F, H, W) latents, edges replicated."""
    if passes <= 0:
        return x
    b, c, f, h, w = x.shape
    y = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    for _ in range(passes):
        y = F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def shrink_x0(answer: Tensor, sigma: Tensor) -> Tensor:
    mean = answer.mean(dim=(-2, -1), keepdim=True)  # (B, C, F, 1, 1) each frame's mean colour
    return answer + sigma * (mean - answer)


def blur_x0(answer: Tensor, sigma: Tensor) -> Tensor:
    out = answer.clone()
    for b in range(answer.shape[0]):  # each sample at its own sigma
        out[b : b + 1] = box_blur(answer[b : b + 1], int(3.0 * float(sigma[b, 0, 0, 0, 0]) + 1e-6))
    return out


class ControlDenoiser(DenoiserBase):
    """A denoiser that draws `x0_fn(x, sigma, cond)` as its clean estimate (velocity = (x - x0_hat) / sigma)."""

    latent_channels = 3
    hidden_dim = 0
    n_frames = 4  # as the shipped reference models

    def __init__(self, name: str, x0_fn: Callable[[Tensor, Tensor, Cond], Tensor] | None, *, candidates: bool = False,
                 forget: bool = False, device: torch.device | str = "cpu"):
        self.name = name
        self.x0_fn = x0_fn
        self.candidates = candidates
        self.forget = forget  # the answer is the task's forgetful video where it has one
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def to_precision(self, precision: Any) -> ControlDenoiser:
        """No network to cast: any precision is accepted (and recorded); the oracle computes in the sampler's dtype."""
        from ..precision import Precision

        self.precision = Precision.of(precision)
        return self

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        if self.x0_fn is None:  # null:noise
            return Prediction(torch.zeros_like(x))
        if "answer" not in cond.extra:
            raise ValueError(f"{self.name} needs the conditioning of its own make_cond (cond.extra['answer'])")
        s = sigma.to(x.dtype).reshape(-1, 1, 1, 1, 1).clamp_min(1e-6)
        return Prediction(velocity_from_x0(x, s, self.x0_fn(x, s, cond).to(x.dtype)))

    def encode(self, blocks: np.ndarray) -> Tensor:
        """Block videos (B, T, Hb, Wb, 3) uint8 -> latents (B, 3, T, Hb, Wb), as the reference model's codec."""
        return BlockCodec.encode_blocks(blocks).to(self.device)

    def decode(self, latents: Tensor) -> np.ndarray:
        return BlockCodec.decode(latents)

    def make_cond(self, first: Tensor, task: Task, instances: Sequence[Any]) -> Cond:
        """The first frame, plus each instance's answer (its ground truth, from the task's solver) and candidates."""
        truth = np.stack([task.blocks(i) for i in instances])  # (B, T, Hb, Wb, 3)
        if self.forget:
            truth = np.stack([t if (f := task.forgetful(i)) is None else f for t, i in zip(truth, instances)])
        extra = {"answer": self.encode(truth).to(first)}
        if self.candidates:
            alts = [alternative(task, i) for i in instances]
            alt = np.stack([t if a is None else a for t, a in zip(truth, alts)])
            extra["alternative"] = self.encode(alt).to(first)
            extra["both"] = self.encode(np.stack([union_video(t, a) for t, a in zip(truth, alt)])).to(first)
        return Cond(image=first, task_id=torch.zeros(first.shape[0], dtype=torch.long, device=first.device), extra=extra)


def candidates_x0(prune: float, explore: float, keep: float) -> Callable[[Tensor, Tensor, Cond], Tensor]:
    """The positive control's clean estimate: both candidates, then the wrong one, then one chosen by the noise."""
    threshold = math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * keep - 1.0)).item() if 0 < keep < 1 else (math.inf if keep >= 1 else -math.inf)

    def x0(x: Tensor, s: Tensor, cond: Cond) -> Tensor:
        truth, alt, both = cond.extra["answer"], cond.extra["alternative"], cond.extra["both"]
        shared = (truth == alt).all(dim=1, keepdim=True)  # (B, 1, F, H, W) blocks where the candidates agree
        shared[:, :, 0] = False  # frame 0 is re-imposed, not noise
        eps = (x - (1.0 - s) * truth) / s  # the implied noise, exact on `shared`
        n = shared.sum(dim=(1, 2, 3, 4)).clamp_min(1) * x.shape[1]
        z = (eps * shared).sum(dim=(1, 2, 3, 4)) / n.sqrt()  # ~ N(0, 1) from the starting noise
        pick_true = (z < threshold).reshape(-1, 1, 1, 1, 1)
        chosen = torch.where(pick_true, truth, alt)
        return torch.where(s > explore, both, torch.where(s > prune, alt, chosen))

    return x0


def commit_x0(commit: float) -> Callable[[Tensor, Tensor, Cond], Tensor]:
    """The committing control's clean estimate: the two candidates at half strength, then the one the state leans to."""

    def x0(x: Tensor, s: Tensor, cond: Cond) -> Tensor:
        truth, alt = cond.extra["answer"], cond.extra["alternative"]
        mid, d = (truth + alt) / 2, truth - alt
        lean = ((x - (1 - s) * mid) * d).sum(dim=(1, 2, 3, 4))  # > 0: the state leans to the truth; ~ sigma N(0, |d|^2) at mid
        pick_true = (lean > 0).reshape(-1, 1, 1, 1, 1)
        return torch.where(s > commit, mid, torch.where(pick_true, truth, alt))

    return x0


def _options(spec: str, query: str, allowed: dict[str, float]) -> dict[str, float]:
    out = dict(allowed)
    for part in filter(None, query.split("&")):
        key, eq, val = part.partition("=")
        if key not in allowed or not eq:
            raise ModelLoadError(f"{spec}: unknown option {part!r}; options are key=value among {', '.join(allowed) or 'none'}")
        try:
            out[key] = float(val)
        except ValueError:
            raise ModelLoadError(f"{spec}: option {key} needs a number, got {val!r}") from None
    return out


def _candidates(spec: str, query: str, device: torch.device) -> ControlDenoiser:
    o = _options(spec, query, {"prune": 0.5, "explore": 0.75, "keep": 0.5})
    if not 0.0 < o["prune"] < o["explore"] < 1.0 or not 0.0 <= o["keep"] <= 1.0:
        raise ModelLoadError(f"{spec}: need 0 < prune < explore < 1 and 0 <= keep <= 1, got {o}")
    return ControlDenoiser(spec, candidates_x0(o["prune"], o["explore"], o["keep"]), candidates=True, device=device)


def _commit(spec: str, query: str, device: torch.device) -> ControlDenoiser:
    o = _options(spec, query, {"commit": 0.5})
    if not 0.0 < o["commit"] < 1.0:
        raise ModelLoadError(f"{spec}: need 0 < commit < 1, got {o}")
    return ControlDenoiser(spec, commit_x0(o["commit"]), candidates=True, device=device)


def _simple(fn: Callable[[Tensor, Tensor], Tensor] | None) -> Callable[[str, str, torch.device], ControlDenoiser]:
    def make(spec: str, query: str, device: torch.device) -> ControlDenoiser:
        _options(spec, query, {})
        return ControlDenoiser(spec, None if fn is None else (lambda x, s, cond: fn(cond.extra["answer"], s)), device=device)

    return make


def _forget(spec: str, query: str, device: torch.device) -> ControlDenoiser:
    _options(spec, query, {})
    return ControlDenoiser(spec, lambda x, s, cond: shrink_x0(cond.extra["answer"], s), forget=True, device=device)


# name -> factory(spec, query, device); the keys are what `--model` takes
CONTROLS: dict[str, Callable[[str, str, torch.device], ControlDenoiser]] = {
    "null:shrink": _simple(shrink_x0),
    "null:blur": _simple(blur_x0),
    "null:noise": _simple(None),
    "null:forget": _forget,
    "control:candidates": _candidates,
    "control:commit": _commit,
}


def is_control(spec: str) -> bool:
    return spec.partition(":")[0] in PREFIXES


def load_control(spec: str, device: str | torch.device = "cpu") -> ControlDenoiser:
    """The control denoiser `spec` names (`null:shrink`, `control:candidates?prune=0.4`, ...)."""
    base, _, query = spec.partition("?")
    if base not in CONTROLS:
        raise ModelLoadError(f"unknown control model {base!r}; controls: {', '.join(CONTROLS)}")
    return CONTROLS[base](spec, query, resolve_device(device))
