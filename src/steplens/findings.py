"""The paper's findings as verdicts: one spec per claim, one documented rule, pure functions over a demo summary.

A `FindingSpec` says where a claim's measurement lives in the demo's summary.json (slash paths such as
`cos/off_solution_mass_early_minus_late`; integers index lists, `a:b` slices them), which sign the paper
predicts, and the smallest effect that would matter. Pointing a card at another measurement is a
one-line change to its spec in `SPECS`.

The verdict rule (`verdict`), applied to the measured value and its 95% CI, in this order:
1. the stage did not run, the spec names no measurement yet, or the key is absent -> NOT_MEASURED;
2. the probe says the claim does not apply (its `applicable` path holds a reason other than
   "measured"), or the value is null or not a finite number, or it has no CI -> NOT_MEASURABLE;
3. the CI, minus the null value and oriented so that the paper's direction is positive, lies above
   0 -> "reproduced"; below 0 -> "reversed";
4. the CI lies within +-(smallest effect of interest) -> "not reproduced" (any effect is too small
   to matter);
5. otherwise -> "inconclusive at n=N" (more samples would decide it).

A rate, or a difference of rates, whose bootstrap CI has zero width (every sample, or every pair,
agreed) is first widened to +-3/n around the value, clipped to the possible range: the 95% bound on
a rate never observed in n samples (the rule of three). Otherwise 8 agreeing pairs would read as
proof of no effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
REVERSED = "reversed"
INCONCLUSIVE = "inconclusive"  # shown as "inconclusive at n=N"
NOT_MEASURABLE = "not measurable on this model"
NOT_MEASURED = "not measured in this run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, REVERSED, INCONCLUSIVE, NOT_MEASURABLE, NOT_MEASURED)

_MISSING = object()


@dataclass(frozen=True)
class FindingSpec:
    """One claim of the paper (or of steplens) and where the demo measures it.

    Paths are slash-separated keys into the demo summary; `ci95` resolves to [lo, hi]. `null` is the
    value of no effect (0 for a difference, 0.5 for 'most samples'); `sign` is +1 when the paper
    predicts a value above `null`, -1 below. `figure` is relative to the demo folder; the command is
    the demo's command for `stage` (summary["commands"][stage]) unless `command` is given.
    """

    id: str
    title: str
    claim: str
    stage: str
    value: str | None  # None: no measurement of this claim exists yet
    ci95: str | None
    n: str | None
    measure: str  # what the value is, in words
    unit: str = ""  # "points": a difference of rates, shown x100; "%": a rate, shown x100; else as is
    sign: int = 1
    min_effect: float = 0.0
    null: float = 0.0
    figure: str | None = None
    command: str | None = None
    applicable: str | None = None  # a path to the probe's own statement: a reason other than "measured" -> not measurable
    extras: tuple[tuple[str, str, str], ...] = ()  # (label, path, unit): context shown on the card, never used by the verdict
    note: str = ""
    source: str = "paper"  # "paper" or "steplens" (what steplens adds)

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"{self.id}: sign must be +1 or -1, got {self.sign}")
        if self.min_effect < 0:
            raise ValueError(f"{self.id}: min_effect must be >= 0")
        if self.value is not None and (self.ci95 is None or self.n is None):
            raise ValueError(f"{self.id}: a measured value needs its ci95 and n paths")


def verdict(value: Any, ci95: Any, n: Any, *, sign: int = 1, min_effect: float = 0.0, null: float = 0.0) -> str:
    """The documented rule (module docstring, steps 2-5) on one measurement; pure."""
    if not _finite(value) or not (isinstance(ci95, Sequence) and len(ci95) == 2 and all(_finite(x) for x in ci95)):
        return NOT_MEASURABLE
    lo, hi = sorted(((ci95[0] - null) * sign, (ci95[1] - null) * sign))
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return REVERSED
    if -min_effect <= lo and hi <= min_effect:
        return NOT_REPRODUCED
    return f"{INCONCLUSIVE} at n={n if isinstance(n, int) else '?'}"


def widen(value: Any, ci95: Any, n: Any, unit: str) -> Any:
    """The rule-of-three interval for a rate (unit '%') or a difference of rates ('points') whose CI has zero width."""
    if unit not in ("%", "points") or not (_finite(value) and isinstance(n, int) and n > 0 and isinstance(ci95, Sequence)
                                           and len(ci95) == 2 and all(_finite(x) for x in ci95) and ci95[0] == ci95[1]):
        return ci95
    lo, hi = (0.0, 1.0) if unit == "%" else (-1.0, 1.0)
    return [max(lo, value - 3 / n), min(hi, value + 3 / n)]


def resolve(tree: Any, path: str | None) -> Any:
    """The value at a slash path (`a/b/0`, `a/1:3`), or _MISSING; dict keys may contain dots."""
    if path is None:
        return _MISSING
    node = tree
    for part in path.split("/"):
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list):
            try:
                if ":" in part:
                    a, b = (int(x) if x else None for x in part.split(":"))
                    node = node[a:b]
                else:
                    node = node[int(part)]
            except (ValueError, IndexError):
                return _MISSING
        else:
            return _MISSING
    return node


def evaluate(summary: Mapping[str, Any], specs: Sequence[FindingSpec] | None = None) -> list[dict[str, Any]]:
    """One record per spec: id, title, claim, value, ci95, n, verdict, figure, command (+ measure, unit, extras, note)."""
    out = []
    for s in SPECS if specs is None else specs:
        value, ci, n = (resolve(summary, p) for p in (s.value, s.ci95, s.n))
        reason = resolve(summary, s.applicable)
        if s.stage in summary and isinstance(reason, str) and reason != "measured":
            v, why = NOT_MEASURABLE, reason  # the stage ran and says why this model/task cannot show it (no value then)
        elif s.stage not in summary or s.value is None or value is _MISSING:
            v, why = NOT_MEASURED, s.note
        else:
            wide = widen(value, ci, n, s.unit)
            if wide is not ci:
                why = (f"All {n} samples agreed, so the bootstrap CI has zero width; the verdict uses +-3/n (rule of three). "
                       + s.note).strip()
                ci = wide
            else:
                why = s.note
            v = verdict(value, ci, n, sign=s.sign, min_effect=s.min_effect, null=s.null)
        commands = summary.get("commands", {})
        out.append({
            "id": s.id, "title": s.title, "claim": s.claim, "source": s.source,
            "value": _num(value), "ci95": [_num(x) for x in ci] if isinstance(ci, list) and len(ci) == 2 else None,
            "n": n if isinstance(n, int) else None, "verdict": v,
            "figure": s.figure, "command": s.command or (commands.get(s.stage) if isinstance(commands, Mapping) else None),
            "measure": s.measure, "unit": s.unit, "null": s.null, "sign": s.sign, "min_effect": s.min_effect,
            "extras": [{"label": label, "value": _num(resolve(summary, p)), "unit": unit} for label, p, unit in s.extras
                       if resolve(summary, p) is not _MISSING],
            "note": why,
        })
    return out


def format_number(x: Any, unit: str = "") -> str:
    """One number for people: 'points' and '%' are fractions shown x100, 'steps' (a difference) one decimal, else 3 digits."""
    if isinstance(x, list):
        return ", ".join(format_number(v, unit) for v in x) if x else "none"
    if x is None or isinstance(x, bool) or not isinstance(x, int | float):
        return "none" if x is None else str(x)
    if not math.isfinite(x):
        return "nan"
    if unit in ("points", "%"):
        return f"{100 * x:.1f}"
    if unit == "steps":  # a difference of steps
        return f"{x:.1f}"
    if unit == "step":  # a step index or a mean of them
        return f"{x:.1f}" if isinstance(x, float) and not x.is_integer() else f"{x:.0f}"
    if isinstance(x, int) or unit in ("block", "blocks", "frame"):
        return str(int(x))
    return f"{x:.3g}"


def format_value(f: Mapping[str, Any]) -> str:
    """A finding's value, its 95% CI and n: '+77.1 points [64.6, 87.5], n=8'."""
    unit = f.get("unit", "")
    sign = "+" if unit in ("points", "steps") and _finite(f["value"]) and f["value"] > 0 else ""
    ci = f.get("ci95")
    ci_txt = f" [{format_number(ci[0], unit)}, {format_number(ci[1], unit)}]" if ci else ""
    suffix = {"points": " points", "%": "%", "steps": " steps"}.get(unit, "")
    return f"{sign}{format_number(f['value'], unit)}{suffix}{ci_txt}, n={f.get('n')}"


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: Any) -> Any:
    """JSON-safe: _MISSING -> None, NaN/inf -> None."""
    if x is _MISSING or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return x


SPECS: tuple[FindingSpec, ...] = (
    FindingSpec(
        id="chain_of_steps", title="Chain-of-Steps", stage="cos",
        claim="Early denoising steps draw several candidate solutions at once; later steps prune them to one.",
        value="cos/off_solution_mass_early_minus_late", ci95="cos/off_solution_mass_early_minus_late_ci95", n="cos/n",
        measure="path colour on floor off the solution, first quarter of the steps minus last quarter (paired bootstrap)",
        min_effect=0.005, figure="cos/cos_curves.png",
        extras=(("samples lighting a dead-end branch early", "cos/multiple_candidates_early", "%"),
                ("median commit step", "cos/commit_step/median", "step"), ("solve rate", "cos/solve_rate", "%"))),
    FindingSpec(
        id="noise_step_vs_frame", title="Noise at a step vs at a frame", stage="perturb",
        claim="Fresh noise at one denoising step costs far more than noise on one frame at every step.",
        value="perturb/by_mode/renoise/step_minus_frame_drop", ci95="perturb/by_mode/renoise/step_minus_frame_drop_ci95",
        n="perturb/n",
        measure="solve rate after the worst frame injection minus after the worst step injection, fresh noise at the "
                "sampler's level with the clean estimate kept (renoise; paired bootstrap)",
        unit="points", min_effect=0.05, figure="perturb/perturb.png",
        extras=(("clean solve rate", "perturb/clean_solve_rate", "%"),
                ("worst injection step (renoise)", "perturb/by_mode/renoise/worst_step/index", "step"),
                ("worst frame before the answer frame (renoise)", "perturb/by_mode/renoise/worst_frame_before_answer/index", "frame"),
                ("same difference with unit noise (replace, the paper's wording)", "perturb/by_mode/replace/step_minus_frame_drop",
                 "points"),
                ("worst injection step (replace)", "perturb/by_mode/replace/worst_step/index", "step")),
        note="The verdict uses the level-matched injection (renoise). Replacing the latent with unit noise, the paper's "
             "wording, costs more the later the step, because fewer steps remain to denoise it: its worst step is the last."),
    FindingSpec(
        id="information_flow", title="Information flow", stage="cka",
        claim="A perturbation at an early step propagates to the end and is never recovered; a late one changes less.",
        value="cka/cka/modes/renoise/x0_hat/first_minus_last_injection/diff",
        ci95="cka/cka/modes/renoise/x0_hat/first_minus_last_injection/ci95", n="cka/n",
        measure="1 - CKA between the clean and the perturbed run's output (x0_hat channels per token), earliest minus "
                "latest injection (fresh noise at the step's level, renoise; paired bootstrap)",
        min_effect=0.01, figure="cka/cka_flow.png",
        extras=(("fresh seed at the output (floor: unrelated runs)", "cka/cka/modes/renoise/x0_hat/fresh_seed/mean", ""),),
        note="Noise at the step's level keeps the clean estimate: replacing a late latent with unit noise leaves too few "
             "steps to recover, which would confound the comparison."),
    FindingSpec(
        id="layer_specialisation", title="Layer specialisation", stage="layers",
        claim="Layers do different jobs within a step: some blocks are indispensable to the answer.",
        value="derived/skip_drop_top/drop", ci95="derived/skip_drop_top/ci95", n="layers/n",
        measure="solve-rate drop when the most important block is skipped at every step (paired bootstrap)",
        unit="points", min_effect=0.05, figure="layers/layers_summary.png",
        extras=(("most important blocks", "layers/most_important_layers", "blocks"),)),
    FindingSpec(
        id="patching_flip", title="Activation patching flip", stage="layers",
        claim="Patching one layer's tokens from another scene flips the outcome to that scene's from a middle layer on.",
        value="derived/patch_flip_max/rate", ci95="derived/patch_flip_max/ci95", n="layers/n",
        measure="largest per-layer rate of answers that follow the donor puzzle when block L's output (resid_post, all "
                "tokens) is taken from the donor run (Wilson CI)",
        unit="%", min_effect=0.1, figure="layers/layers_summary.png",
        extras=(("layer of that rate", "derived/patch_flip_max/layer", "block"),
                ("flip layer (a kept layer before a flipping one)", "layers/patch_flip_layer", "block"),),
        note="A model whose puzzle enters only at the input carries it in the whole stream: patching any block's output "
             "then flips or breaks the answer at every depth, and no flip layer exists."),
    FindingSpec(
        id="working_memory", title="Working memory", stage="behaviour",
        claim="An object seen early (a start point, an occluded object) is kept and reused at later steps.",
        value="behaviour/memory/memory/rate", ci95="behaviour/memory/memory/ci95", n="behaviour/n",
        applicable="behaviour/memory/verdict",
        measure="objects back where they belong after being away from the view (Wilson CI)", unit="%",
        figure="behaviour/behaviour_per_step.png",
        extras=(("start and goal markers kept at every step", "behaviour/memory/markers_kept_all_steps", "%"),),
        note="The maze model sees the first frame, markers included, concatenated to every frame: keeping the markers "
             "is copying, not memory."),
    FindingSpec(
        id="self_correction", title="Self-correction", stage="behaviour",
        claim="A wrong intermediate answer is revised into the right one at later steps.",
        value="behaviour/correction/rate", ci95="behaviour/correction/ci95", n="behaviour/n",
        measure="samples that held one committed wrong answer and end right (Wilson CI); pruning of superimposed "
                "candidates is counted apart", unit="%", min_effect=0.02,
        figure="behaviour/behaviour_per_step.png",
        extras=(("pruning (candidates superimposed, one kept)", "behaviour/pruning/rate", "%"),
                ("samples that lose a right answer", "behaviour/lost_rate", "%"))),
    FindingSpec(
        id="perception_before_action", title="Perception before action", stage="behaviour",
        claim="Early steps settle what the objects are; later steps settle what they do.",
        value="behaviour/perception/action_minus_scene", ci95="behaviour/perception/action_minus_scene_ci95", n="behaviour/n",
        measure="step at which the action blocks (from the ground truth) settle minus step at which the scene blocks "
                "(from the task) settle (paired bootstrap)",
        unit="steps", min_effect=0.5, figure="behaviour/perception_vs_action.png",
        extras=(("scene settles, mean", "behaviour/perception/scene_settle_step_mean", "step"),
                ("action settles, mean", "behaviour/perception/action_settle_step_mean", "step"))),
    FindingSpec(
        id="ensemble", title="Ensemble at equal compute", stage="ensemble",
        claim="Averaging three seeds' latents over the first steps solves more puzzles than one seed at about the same compute.",
        value="ensemble/methods/ensemble/diff_vs_single/solve_rate/0", ci95="ensemble/methods/ensemble/diff_vs_single/solve_rate/1:3",
        n="ensemble/methods/ensemble/n",
        measure="solve rate of the K=3 mean_xt ensemble (steps 0-2) minus one seed, paired bootstrap",
        unit="points", min_effect=0.02, figure="ensemble/compare.png",
        extras=(("one seed solves", "ensemble/methods/single/solve_rate", "%"), ("network evaluations, ensemble", "ensemble/methods/ensemble/nfe", ""),
                ("network evaluations, one seed", "ensemble/methods/single/nfe", ""),
                ("ensemble minus cold start", "derived/ensemble_minus_cold/diff", "points"))),
    FindingSpec(
        id="cold_start", title="Cold-start control", stage="ensemble", source="steplens",
        claim="One seed started from noise scaled by 1/sqrt(K) improves on a plain seed: the part of the ensemble's gain "
              "a colder start explains.",
        value="ensemble/methods/single_cold/diff_vs_single/solve_rate/0", ci95="ensemble/methods/single_cold/diff_vs_single/solve_rate/1:3",
        n="ensemble/methods/single_cold/n",
        measure="solve rate of one cold-started seed minus one seed, same NFE, paired bootstrap",
        unit="points", min_effect=0.02, figure="ensemble/compare.png",
        extras=(("ensemble minus cold start", "derived/ensemble_minus_cold/diff", "points"),)),
    FindingSpec(
        id="early_commitment", title="Early plan", stage="cos", source="steplens",
        claim="Most samples commit to their final answer within the first quarter of the steps, so an early read-out "
              "can steer search over seeds.",
        value="derived/early_commit/rate", ci95="derived/early_commit/ci95", n="derived/early_commit/n",
        measure="samples whose decoded answer never changes after the first quarter of the steps (Wilson CI; "
                "no effect: half)",
        unit="%", null=0.5, min_effect=0.05, figure="cos/commit_hist.png",
        note="Early-plan search itself (spend compute on seeds whose early plan looks right) is not run by the demo."),
    FindingSpec(
        id="decided_at", title="When the answer is decided", stage="splice", source="steplens",
        claim="The answer is decided along the steps, not by the first ones: another seed's clean estimate spliced into a "
              "trajectory (its noise kept) takes over the outcome only from a later step on.",
        value="splice/crossing/step", ci95="splice/crossing/ci95", n="splice/n", applicable="splice/verdict",
        measure="the answer is decided at this step: where the rate of spliced runs ending at the plan donor's answer crosses "
                "50% (x_s' = (1 - sigma_s) x0_hat_B + sigma_s eps_A; bootstrap CI over instances; no effect: step 1)",
        unit="step", null=1.0, min_effect=1.0, figure="splice/splice_curve.png",
        extras=(("observational commit step, median", "splice/observational_commit_pairs/median", "step"),
                ("causal switch minus observational commit", "splice/causal_minus_observational/diff", "steps"),
                ("same crossing, reverse splice", "splice/crossing/reverse_step", "step")),
        note="Before the crossing the outcome follows the noise (the model still decides), after it the plan (committed). "
             "A crossing at step 0-1 would mean the first steps already decide."),
)
