# long module: one spec per card with its rule beside it; a reviewer reads every card's definition in one place
"""The paper's findings as verdicts: one spec per claim, one documented rule, pure functions over a demo summary.

A `FindingSpec` says where a claim's measurement lives in the demo's summary.json (slash paths such as
`cos/off_solution_mass_early_minus_late`; integers index lists, `a:b` slices them), which sign the paper
predicts, and the smallest effect that would matter. Pointing a card at another measurement is a
one-line change to its spec in `SPECS`.

The verdict rule is `RULE` (below), shown as is in the report; `verdict` applies it to one measurement and
`evaluate` to every card, after Holm's adjustment across the cards that bear a verdict.

A rate, or a difference of rates, whose CI has zero width (a legacy percentile bootstrap where every
sample, or every pair, agreed) is first widened to +-3/n around the value (the rule of three).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced (negligible)"
REVERSED = "reversed"
INCONCLUSIVE = "inconclusive"  # shown as "inconclusive at n=N"
NOT_MEASURABLE = "not measurable on this model"
NOT_MEASURED = "not measured in this run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, REVERSED, INCONCLUSIVE, NOT_MEASURABLE, NOT_MEASURED)

_MISSING = object()
MIN_N = 24  # below this many instances no card bears a verdict
ALPHA = 0.05  # family-wise, across the cards that bear a verdict (Holm)

RULE = (
    "Each card names its smallest effect of interest (SEI) and why. Its measurement comes with a 95% CI from an exact "
    "or small-sample method: Newcombe's paired interval for a difference of paired rates (exact McNemar test), Wilson "
    "for a rate (exact binomial test), Student t for a mean or a paired mean difference. Across the cards that bear a "
    f"verdict (measured, n >= {MIN_N}) the p-values are Holm-adjusted, and each card's CI is recomputed at its Holm "
    "step-down level, 1 - 0.05/(m - r + 1) for the r-th smallest of m p-values; the verdict uses that adjusted CI, "
    "oriented so the paper's direction is positive and taken relative to the no-effect value. In this order: "
    f"n < {MIN_N}: inconclusive at n=N; the CI inside +-SEI: not reproduced (negligible), whatever its sign; the CI "
    "above 0 and the value at least the SEI: reproduced; the CI below 0 and the value at most -SEI: reversed; "
    "otherwise inconclusive at n=N. An inconclusive card gives the n its measured spread needs (half-widths shrink as "
    "1/sqrt(n)) for a CI half-width of SEI - |value| when the value is below the SEI, else of |value|. A claim the "
    "run has no measurement for says so. The rule and every card's spec are in steplens/findings.py.")


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
    stats: str | None = None  # path to the stage's estimate record (steplens.stats): CIs at any level and a p-value
    min_effect_why: str = ""  # why that is the smallest effect that would matter
    min_effect_of: str | None = None  # a floor measured in the same run: the SEI is then min_effect x that floor
    # further paired differences the claim needs beaten too, (label, value path, ci95 path, n path): the card reads
    # reproduced only when its own comparison and each of these do (an intersection-union test: each at its own 95%)
    requires: tuple[tuple[str, str, str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"{self.id}: sign must be +1 or -1, got {self.sign}")
        if self.min_effect < 0:
            raise ValueError(f"{self.id}: min_effect must be >= 0")
        if self.value is not None and (self.ci95 is None or self.n is None):
            raise ValueError(f"{self.id}: a measured value needs its ci95 and n paths")


def verdict(value: Any, ci95: Any, n: Any, *, sign: int = 1, min_effect: float = 0.0, null: float = 0.0,
            min_n: int = MIN_N) -> str:
    """`RULE` on one measurement and the CI it is judged by (already family-adjusted); pure."""
    if not _finite(value) or not (isinstance(ci95, Sequence) and len(ci95) == 2 and all(_finite(x) for x in ci95)):
        return NOT_MEASURABLE
    if not isinstance(n, int) or n < min_n:
        return f"{INCONCLUSIVE} at n={n if isinstance(n, int) else '?'}"
    lo, hi = sorted(((ci95[0] - null) * sign, (ci95[1] - null) * sign))
    point = (value - null) * sign
    if min_effect > 0 and -min_effect <= lo and hi <= min_effect:
        return NOT_REPRODUCED  # significant or not, any effect is too small to matter
    if lo > 0 and point >= min_effect:
        return REPRODUCED
    if hi < 0 and point <= -min_effect:
        return REVERSED
    return f"{INCONCLUSIVE} at n={n}"


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
    """One record per spec: id, title, claim, value, ci95 (raw), ci_adjusted, p, p_holm, n, verdict, needed_n, figure,
    command (+ measure, unit, min_effect and why, extras, note)."""
    from .stats import holm, holm_levels, interval, p_value

    rows = []
    for s in SPECS if specs is None else specs:
        value, ci, n = (resolve(summary, p) for p in (s.value, s.ci95, s.n))
        reason = resolve(summary, s.applicable)
        rec = resolve(summary, s.stats)
        rec = rec if isinstance(rec, Mapping) and "method" in rec else None
        sei, sei_note = _min_effect(summary, s)
        if s.stage in summary and isinstance(reason, str) and reason != "measured":
            status, why = NOT_MEASURABLE, reason  # the stage ran and says why this model/task cannot show it (no value then)
        elif s.stage not in summary or s.value is None or value is _MISSING:
            status, why = NOT_MEASURED, s.note
        else:
            status, why = None, s.note
            wide = widen(value, ci, n, s.unit)
            if wide is not ci:
                why = (f"All {n} samples agreed, so the bootstrap CI has zero width; the verdict uses +-3/n (rule of three). "
                       + s.note).strip()
                ci = wide
        measured = status is None and _finite(value)
        p = p_value(rec, s.null) if measured and rec is not None else float("nan")
        rows.append((s, value, ci, n, rec, sei, sei_note, status, why, p))
    family = [i for i, r in enumerate(rows) if _finite(r[9]) and isinstance(r[3], int) and r[3] >= MIN_N]
    p_holm = dict(zip(family, holm([rows[i][9] for i in family])))
    levels = dict(zip(family, holm_levels([rows[i][9] for i in family], ALPHA)))
    out = []
    for i, (s, value, ci, n, rec, sei, sei_note, status, why, p) in enumerate(rows):
        level = levels.get(i, 0.95)
        adj = list(interval(rec, level)) if rec is not None and i in levels else ci
        need = None
        if status is None:
            v = verdict(value, adj, n, sign=s.sign, min_effect=sei, null=s.null)
            if v.startswith(INCONCLUSIVE):
                need = _needed(adj, n, (value - s.null) * s.sign, sei)
        else:
            v = status
        required = [_required(summary, s, *r) for r in s.requires]
        if v == REPRODUCED and (short := next((r for r in required if r["verdict"] != REPRODUCED), None)):
            v = short["verdict"]
            why = f"{short['label']} reads {short['verdict']}: both comparisons must read reproduced. {why}".strip()
        commands = summary.get("commands", {})
        out.append({
            "id": s.id, "title": s.title, "claim": s.claim, "source": s.source,
            "value": _num(value), "ci95": _ci_json(ci),
            "ci_adjusted": _ci_json(adj) if i in levels else None, "ci_level": level if i in levels else None,
            "p": _num(p), "p_holm": _num(p_holm.get(i)), "family_size": len(family) if i in levels else None,
            "n": n if isinstance(n, int) else None, "verdict": v, "needed_n": need,
            "figure": s.figure, "command": s.command or (commands.get(s.stage) if isinstance(commands, Mapping) else None),
            "measure": s.measure, "unit": s.unit, "null": s.null, "sign": s.sign, "min_effect": _num(sei),
            "min_effect_why": (s.min_effect_why + sei_note).strip(),
            "extras": [{"label": label, "value": _num(resolve(summary, p)), "unit": unit} for label, p, unit in s.extras
                       if resolve(summary, p) is not _MISSING],
            "requires": required,
            "note": why,
        })
    return out


def _required(summary: Mapping[str, Any], s: FindingSpec, label: str, value: str, ci95: str, n: str) -> dict[str, Any]:
    """One further comparison of a card, judged by the card's own rule, SEI and sign at its raw 95% CI."""
    v, ci, k = (resolve(summary, p) for p in (value, ci95, n))
    if v is _MISSING:
        return {"label": label, "value": None, "ci95": None, "n": None, "verdict": NOT_MEASURED}
    ci = widen(v, ci, k, s.unit)
    return {"label": label, "value": _num(v), "ci95": _ci_json(ci), "n": k if isinstance(k, int) else None,
            "verdict": verdict(v, ci, k, sign=s.sign, min_effect=_min_effect(summary, s)[0], null=s.null)}


def _min_effect(summary: Mapping[str, Any], s: FindingSpec) -> tuple[float, str]:
    """The card's smallest effect of interest: its constant, or its share of a floor measured in the same run."""
    if s.min_effect_of is None:
        return s.min_effect, ""
    floor = resolve(summary, s.min_effect_of)
    if not _finite(floor):
        return 0.0, " (the floor was not measured in this run: no effect counts as negligible)"
    return s.min_effect * abs(floor), f" ({s.min_effect:g} x {abs(floor):.3g} measured in this run)"


def _needed(ci: Any, n: Any, effect: float, sei: float) -> int | None:
    """Instances for a decisive CI at this spread: a half-width of SEI - |effect| (negligible) when the effect is below
    the SEI, else of |effect| (excludes 0); half-widths shrink as 1/sqrt(n). None when no n would decide it."""
    from .stats import needed_n

    if not (isinstance(n, int) and isinstance(ci, Sequence) and len(ci) == 2 and all(_finite(x) for x in ci)):
        return None
    target = sei - abs(effect) if abs(effect) < sei else abs(effect)
    need = needed_n(n, abs(ci[1] - ci[0]) / 2, target, floor=MIN_N)
    return need if need is not None and need <= 10**6 else None


def _ci_json(ci: Any) -> list[Any] | None:
    return [_num(x) for x in ci] if isinstance(ci, list | tuple) and len(ci) == 2 else None


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
        value="cos/cards/complete_alternatives/diff", ci95="cos/cards/complete_alternatives/ci95", n="cos/cards/n",
        measure="samples whose x0_hat, in the first quarter of the steps, lights >= 2 complete candidate routes (start to "
                "goal, or start to a dead end >= 2 blocks off the true route), model minus null (null:shrink on the same "
                "instances; Newcombe paired CI, exact McNemar)",
        unit="points", min_effect=0.06, figure="cos/cos_curves.png", stats="cos/cards/complete_alternatives/stats",
        min_effect_why="6 points over the null: fewer than one maze in sixteen holding a second complete route early "
                       "would not be a way of reasoning but an accident",
        extras=(("model: >= 2 complete candidates early", "cos/cards/model/complete_alternatives/rate", "%"),
                ("null (null:shrink): >= 2 complete candidates early", "cos/cards/null/complete_alternatives/rate", "%"),
                ("off-path colour, early minus late (converges on any denoiser: not the verdict)",
                 "cos/off_solution_mass_early_minus_late", ""),
                ("median commit step", "cos/commit_step/median", "step"), ("solve rate", "cos/solve_rate", "%")),
        note="A candidate is a complete lit route, not any off-path blob (steplens.probes.candidates). The null converges "
             "from a blank frame to the answer and never holds a candidate; control:candidates holds two by construction."),
    FindingSpec(
        id="noise_step_vs_frame", title="Noise at a step vs at a frame", stage="perturb",
        claim="Fresh noise at one denoising step costs far more than noise on one frame at every step.",
        value="perturb/by_mode/renoise/step_minus_frame_drop", ci95="perturb/by_mode/renoise/step_minus_frame_drop_ci95",
        n="perturb/by_mode/renoise/step_minus_frame_drop_n",
        measure="solve rate after the worst frame injection minus after the worst step injection, fresh noise at the "
                "sampler's level with the clean estimate kept (renoise; the worst step and frame chosen on a calibration "
                "half, the difference on the held-out half; Newcombe paired CI, exact McNemar)",
        unit="points", min_effect=0.05, figure="perturb/perturb.png", stats="perturb/by_mode/renoise/step_minus_frame_drop_stats",
        min_effect_why="5 points of solve rate: a smaller gap would not change where a perturbation (or a guidance "
                       "signal) should be aimed",
        extras=(("clean solve rate", "perturb/clean_solve_rate", "%"),
                ("worst injection step (renoise; chosen on the calibration half)", "perturb/by_mode/renoise/selection/step", "step"),
                ("worst frame before the answer frame (renoise; chosen on the calibration half)",
                 "perturb/by_mode/renoise/selection/frame", "frame"),
                ("same difference with unit noise (replace, the paper's wording)", "perturb/by_mode/replace/step_minus_frame_drop",
                 "points"),
                ("worst injection step (replace; chosen on the calibration half)", "perturb/by_mode/replace/selection/step", "step"),
                ("null (null:shrink): the same difference (renoise)", "perturb/null/by_mode/renoise/step_minus_frame_drop", "points"),
                ("same difference, SNR-matched damage (destroy: damaged frames (1 - s)((1 - d) x0_hat + d eps_new) + s eps)",
                 "perturb/by_mode/destroy/step_minus_frame_drop", "points"),
                ("same difference (destroy), scored over every frame (process score)",
                 "perturb/by_mode/destroy/process/step_minus_frame_drop", "points"),
                ("same difference (renoise), scored over every frame (process score)",
                 "perturb/by_mode/renoise/process/step_minus_frame_drop", "points"),
                ("clean process score (every frame a legal successor)", "perturb/by_mode/renoise/process/clean_rate", "%")),
        note="The verdict uses the level-matched injection (renoise). SNR-matched damage (destroy, d the fraction of signal "
             "destroyed: each damaged frame leaves at SNR (1 - s)^2 (1 - d)^2 / (s^2 + (1 - s)^2 d^2), at a step on all frames "
             "once, at a frame on one frame every step) and the process score (steplens.tasks.process: the final-frame "
             "scorer cannot see damage to the other frames) are shown beside it. Replacing the latent with unit noise, the paper's "
             "wording, costs more the later the step, because fewer steps remain to denoise it: its worst step is the last."),
    FindingSpec(
        id="information_flow", title="Information flow", stage="cka",
        claim="A perturbation at an early step propagates to the end and is never recovered; a late one changes less.",
        value="cka/cka/modes/renoise/x0_hat/first_minus_last_injection/diff",
        ci95="cka/cka/modes/renoise/x0_hat/first_minus_last_injection/ci95", n="cka/n",
        measure="1 - CKA between the clean and the perturbed run's output (x0_hat channels per token), earliest minus "
                "latest injection (fresh noise at the step's level, renoise; paired t)",
        min_effect=0.5, min_effect_of="cka/cka/modes/renoise/x0_hat/fresh_seed/mean", figure="cka/cka_flow.png",
        stats="cka/cka/modes/renoise/x0_hat/first_minus_last_injection/stats",
        min_effect_why="half the 1 - CKA between two unrelated seeds' outputs in the same run: a lasting change smaller "
                       "than half of what a fresh seed changes is within the spread between runs",
        extras=(("fresh seed at the output (floor: unrelated runs)", "cka/cka/modes/renoise/x0_hat/fresh_seed/mean", ""),),
        note="Noise at the step's level keeps the clean estimate: replacing a late latent with unit noise leaves too few "
             "steps to recover, which would confound the comparison."),
    FindingSpec(
        id="layer_specialisation", title="Layer specialisation", stage="layers",
        claim="Early layers encode dense perceptual structure, middle layers execute reasoning, late layers consolidate.",
        value="layers/thirds/middle_minus_late/diff", ci95="layers/thirds/middle_minus_late/ci95", n="layers/thirds/n",
        applicable="layers/thirds/applicable",
        measure="solve-rate drop when the middle third of the blocks is skipped at every step minus when the late third "
                "is (Newcombe paired CI, exact McNemar); each third's drop and the scene it keeps beside it (steplens.probes.depth)",
        unit="points", min_effect=0.05, figure="layers/layers_summary.png", stats="layers/thirds/middle_minus_late/stats",
        min_effect_why="5 points of solve rate: a third whose removal costs that little more than another's does no job of its own",
        extras=(("early third: answer drop", "layers/thirds/by_third/early/answer_drop", "points"),
                ("early third: answer drop 95% CI", "layers/thirds/by_third/early/answer_drop_ci95", "points"),
                ("early third skipped: scene kept", "layers/thirds/by_third/early/scene_kept", "%"),
                ("middle third: answer drop", "layers/thirds/by_third/middle/answer_drop", "points"),
                ("middle third: answer drop 95% CI", "layers/thirds/by_third/middle/answer_drop_ci95", "points"),
                ("middle third skipped: scene kept", "layers/thirds/by_third/middle/scene_kept", "%"),
                ("late third: answer drop", "layers/thirds/by_third/late/answer_drop", "points"),
                ("late third: answer drop 95% CI", "layers/thirds/by_third/late/answer_drop_ci95", "points"),
                ("late third skipped: scene kept", "layers/thirds/by_third/late/scene_kept", "%"),
                ("one block skipped: the largest drop (true of any network: not the verdict)", "derived/skip_drop_top/drop", "points"),
                ("the block of that drop (chosen on the calibration half)", "derived/skip_drop_top/layer", "block")),
        note="A division of labour by depth, not 'some block matters': skipping a network's input block breaks any answer."),
    FindingSpec(
        id="patching_flip", title="Activation patching flip", stage="layers",
        claim="Patching one layer's tokens from another scene flips the outcome to that scene's from a middle layer on.",
        value="derived/patch_flip_max/rate", ci95="derived/patch_flip_max/ci95", n="derived/patch_flip_max/n",
        measure="largest per-layer rate of answers that follow the donor puzzle when block L's output (resid_post, all "
                "tokens) is taken from the donor run, the layer chosen on a calibration half and its rate measured on the "
                "held-out half (Wilson CI)",
        unit="%", min_effect=0.1, figure="layers/layers_summary.png", stats="derived/patch_flip_max/stats",
        min_effect_why="one answer in ten following the donor: rarer flips do not make a layer where the answer is decided",
        extras=(("layer of that rate", "derived/patch_flip_max/layer", "block"),
                ("flip layer (a kept layer before a flipping one)", "layers/patch_flip_layer", "block"),),
        note="A model whose puzzle enters only at the input carries it in the whole stream: patching any block's output "
             "then flips or breaks the answer at every depth, and no flip layer exists."),
    FindingSpec(
        id="working_memory", title="Working memory", stage="behaviour",
        claim="An object seen early (a start point, an occluded object) is kept and reused at later steps.",
        value="behaviour/memory/over_chance/diff", ci95="behaviour/memory/over_chance/ci95", n="behaviour/memory/over_chance/n",
        applicable="behaviour/memory/verdict",
        measure="objects back where they belong after being away from the view, on instances whose needed content is "
                "absent from every conditioning frame and not computable from it (Task.recall's source), minus the rate "
                "of a video that forgets it but does the rest right (Recall.chance: 1/K for one of K equal choices), "
                "per sample (Student t); null: null:forget, positive control: null:shrink on shuttle_choice",
        unit="points", min_effect=0.1, stats="behaviour/memory/over_chance/stats",
        min_effect_why="ten points over chance: rarer returns are what a model that forgets redraws by luck",
        figure="behaviour/behaviour_per_step.png",
        extras=(("memory rate", "behaviour/memory/memory/rate", "%"), ("chance (forgets, does the rest right)", "behaviour/memory/over_chance/chance", "%"),
                ("restored, read from the conditioning (not memory)", "behaviour/memory/restored_from_conditioning/restored/rate", "%"),
                ("start and goal markers kept at every step (copying)", "behaviour/memory/markers_kept_all_steps", "%")),
        note="Content the model is given (frame 0, concatenated to every frame) or can compute from it needs no memory: "
             "each task's Recall declares which, and the card reads \"not measurable on this task\" with that reason."),
    FindingSpec(
        id="self_correction", title="Self-correction", stage="cos",
        claim="A wrong intermediate answer is revised into the right one at later steps.",
        value="cos/cards/corrected/diff", ci95="cos/cards/corrected/ci95", n="cos/cards/n",
        measure="samples whose x0_hat, in the first quarter of the steps, is a complete but different answer (the scorer "
                "fails it; a whole route to another block) and whose final answer is right, model minus null "
                "(null:shrink; Newcombe paired CI, exact McNemar)", unit="points", min_effect=0.06,
        stats="cos/cards/corrected/stats",
        min_effect_why="6 points over the null: rarer revisions would not move the solve rate",
        figure="cos/cos_curves.png",
        extras=(("model: corrected from a complete wrong answer", "cos/cards/model/corrected/rate", "%"),
                ("null (null:shrink)", "cos/cards/null/corrected/rate", "%"),
                ("any early wrong then right (convergence does it too: not the verdict)", "behaviour/correction/rate", "%"),
                ("samples that lose a right answer", "behaviour/lost_rate", "%"))),
    FindingSpec(
        id="pruning", title="Pruning", stage="cos",
        claim="Candidates drawn together early are pruned to one answer at later steps.",
        value="cos/cards/pruned/diff", ci95="cos/cards/pruned/ci95", n="cos/cards/n",
        measure="samples whose x0_hat holds >= 2 complete candidate routes in the first quarter of the steps and exactly "
                "one at the end, model minus null (null:shrink; Newcombe paired CI, exact McNemar)", unit="points",
        min_effect=0.06, figure="cos/cos_curves.png", stats="cos/cards/pruned/stats",
        min_effect_why="6 points over the null: as for Chain-of-Steps, a rarer pruning is an accident, not the process",
        extras=(("model: pruned", "cos/cards/model/pruned/rate", "%"), ("null (null:shrink)", "cos/cards/null/pruned/rate", "%"),
                ("pruning as the behaviour probe counts it", "behaviour/pruning/rate", "%"))),
    FindingSpec(
        id="perception_before_action", title="Perception before action", stage="behaviour",
        claim="Early steps settle what the objects are; later steps settle what they do.",
        value="behaviour/perception/action_minus_scene", ci95="behaviour/perception/action_minus_scene_ci95", n="behaviour/n",
        applicable="cos/cards/perception/applicable",
        measure="step at which the action blocks (from the ground truth) settle minus step at which the scene blocks "
                "(from the task) settle (paired t)",
        unit="steps", min_effect=0.5, figure="behaviour/perception_vs_action.png",
        stats="behaviour/perception/action_minus_scene_stats",
        min_effect_why="half a denoising step: settle steps are whole steps, a smaller mean gap is below the resolution",
        extras=(("scene settles, mean", "behaviour/perception/scene_settle_step_mean", "step"),
                ("action settles, mean", "behaviour/perception/action_settle_step_mean", "step"))),
    FindingSpec(
        id="ensemble", title="Ensemble at equal compute", stage="ensemble",
        claim="Averaging three seeds' latents over the first steps solves more puzzles than one seed at about the same compute.",
        value="ensemble/methods/ensemble/diff_vs_single/solve_rate/0", ci95="ensemble/methods/ensemble/diff_vs_single/solve_rate/1:3",
        n="ensemble/methods/ensemble/n",
        measure="solve rate of the K=3 mean_xt ensemble (steps 0-2) minus one seed, Newcombe paired CI, exact McNemar; "
                "the verdict also needs the ensemble minus the cold-start control (one seed from noise / sqrt(K), the same "
                "compute restarted) to read reproduced",
        unit="points", min_effect=0.02, figure="ensemble/compare.png", stats="ensemble/methods/ensemble/diff_vs_single/solve_rate_stats",
        min_effect_why="2 points of solve rate at about the same compute: less would not pay for running K seeds in step",
        extras=(("one seed solves", "ensemble/methods/single/solve_rate", "%"), ("network evaluations, ensemble", "ensemble/methods/ensemble/nfe", ""),
                ("network evaluations, one seed", "ensemble/methods/single/nfe", ""),
                ("ensemble minus cold start", "derived/ensemble_minus_cold/diff", "points"),
                ("null (null:shrink): ensemble minus one seed", "ensemble/null/diff_vs_single/0", "points")),
        requires=(("ensemble minus cold start", "derived/ensemble_minus_cold/diff", "derived/ensemble_minus_cold/ci95",
                   "derived/ensemble_minus_cold/n"),)),
    FindingSpec(
        id="cold_start", title="Cold-start control", stage="ensemble", source="steplens",
        claim="One seed started from noise scaled by 1/sqrt(K) improves on a plain seed: the part of the ensemble's gain "
              "a colder start explains.",
        value="ensemble/methods/single_cold/diff_vs_single/solve_rate/0", ci95="ensemble/methods/single_cold/diff_vs_single/solve_rate/1:3",
        n="ensemble/methods/single_cold/n",
        measure="solve rate of one cold-started seed minus one seed, same NFE, Newcombe paired CI, exact McNemar",
        unit="points", min_effect=0.02, figure="ensemble/compare.png",
        stats="ensemble/methods/single_cold/diff_vs_single/solve_rate_stats",
        min_effect_why="the ensemble's 2 points: a colder start explains the ensemble's gain only if it reaches that gain's scale",
        extras=(("ensemble minus cold start", "derived/ensemble_minus_cold/diff", "points"),)),
    FindingSpec(
        id="early_commitment", title="Early plan", stage="cos", source="steplens",
        claim="Most samples commit to their final answer within the first quarter of the steps, so an early read-out "
              "can steer search over seeds.",
        value="cos/cards/early_plan/diff", ci95="cos/cards/early_plan/ci95", n="cos/cards/n",
        measure="samples whose decoded answer is the same from the end of the first quarter of the steps on and is a "
                "complete answer (right, or complete but different), model minus null (null:shrink on the same "
                "instances; Newcombe paired CI, exact McNemar)",
        unit="points", min_effect=0.05, figure="cos/commit_hist.png", stats="cos/cards/early_plan/stats",
        min_effect_why="5 points over the null: an early read-out that holds on fewer than one sample in twenty more "
                       "than a converging denoiser's cannot steer a search",
        extras=(("model: early plan", "cos/cards/model/early_plan/rate", "%"),
                ("null (null:shrink): early plan", "cos/cards/null/early_plan/rate", "%"),
                ("decoded answer unchanged after the first quarter (any answer, drawn or not)", "derived/early_commit/rate", "%")),
        note="An answer that never changes because nothing is drawn (null:noise) is no plan: the committed answer must be "
             "complete. Early-plan search itself (spend compute on seeds whose early plan looks right) is not run by the demo."),
    FindingSpec(
        id="decided_at", title="When the answer is decided", stage="splice", source="steplens",
        claim="The answer is decided along the steps, not by the first ones: another seed's clean estimate spliced into a "
              "trajectory (its noise kept) takes over the outcome only from a later step on.",
        value="splice/crossing/step", ci95="splice/crossing/ci95", n="splice/n", applicable="splice/verdict",
        measure="the answer is decided at this step: where the rate of spliced runs ending at the plan donor's answer crosses "
                "50% (x_s' = (1 - sigma_s) x0_hat_B + sigma_s eps_A; bootstrap CI over instances; no effect: step 1)",
        unit="step", null=1.0, min_effect=1.0, figure="splice/splice_curve.png",
        min_effect_why="one denoising step past step 1: the splice grid's resolution, and the paper's claim is that the "
                       "first steps do not already decide",
        extras=(("observational commit step, median", "splice/observational_commit_pairs/median", "step"),
                ("causal switch minus observational commit", "splice/causal_minus_observational/diff", "steps"),
                ("same crossing, reverse splice", "splice/crossing/reverse_step", "step")),
        note="Before the crossing the outcome follows the noise (the model still decides), after it the plan (committed). "
             "A crossing at step 0-1 would mean the first steps already decide. Null: null:shrink (every seed ends at the "
             "answer: not measurable, the seeds agree); control:candidates (its noise decides at every step: never follows "
             "the plan). Positive control: control:commit, which commits at step 10 of 20 (its crossing's CI contains 10)."),
)
