"""What a reader sees first: the findings panel of a demo, and each stage's numbers under human labels.

Pure rendering over what the run folders hold (summary.json's `findings`, each stage's summary); the
raw keys stay in summary.json and in a collapsed "all values" block (html.py). `LABELS` maps a run's
kind to the rows it shows by default; a path with `*` gives one row per key of that dict.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..findings import INCONCLUSIVE, NOT_REPRODUCED, RULE, format_number, format_value, resolve
from ..stats import wilson

Src = Callable[[Path], str]

STAGE_TITLES = {"cos": "Chain-of-Steps", "behaviour": "Behaviours", "perturb": "Noise at a step vs at a frame",
                "cka": "Information flow (CKA)", "layers": "Layers", "ensemble": "Ensemble at equal compute"}
KIND_TITLES = {"probe-cos": "Chain-of-Steps", "probe-behaviour": "Behaviours", "probe-perturb": "Noise injection",
               "probe-layers": "Layers", "ensemble-compare": "Ensemble vs baselines", "ensemble-sweep": "Ensemble sweep"}

@dataclass(frozen=True)
class Label:
    """One labelled row: the value at `path` (a slash path into the run's summary) and its CI."""

    text: str  # may hold '{}' for the key a '*' in the path matched
    path: str
    unit: str = ""  # as findings.format_number
    ci: str | None = None  # path to [lo, hi]
    n: str | None = None  # for a rate without `ci`: its Wilson interval from n (a proportion's CI stays in [0, 1]); '*' as in path


def _state(key: str) -> str:
    """A CKA state's key -> words."""
    m = re.fullmatch(r"blocks\.(\d+)\.resid_post", key)
    return f"block {m.group(1)} output" if m else {"x0_hat": "clean estimate x0_hat (then the output)",
                                                   "x0_hat_change": "drawn change of x0_hat (frames minus frame 0)"}.get(key, key)


def _words(key: str) -> str:
    return key.replace("_", " ")


LABELS: dict[str, tuple[Label, ...]] = {
    "probe-cos": (
        Label("samples", "n"),
        Label("solve rate", "solve_rate", "%", ci="solve_rate_ci95"),
        Label("path colour off the solution, first quarter of the steps", "off_solution_mass_early"),
        Label("path colour off the solution, last quarter of the steps", "off_solution_mass_late"),
        Label("early minus late (paired bootstrap)", "off_solution_mass_early_minus_late",
              ci="off_solution_mass_early_minus_late_ci95"),
        Label("samples lighting a dead-end branch early", "multiple_candidates_early", "%", ci="multiple_candidates_early_ci95"),
        Label("commit step, median (decoded answer final from here)", "commit_step/median", "step"),
        Label("commit step, 90th percentile", "commit_step/q90", "step"),
        Label("samples wrong at some step and right at the end", "self_correction/corrected"),
        Label("samples right at some step and wrong at the end", "self_correction/lost"),
    ),
    "probe-behaviour": (
        Label("samples", "n"),
        Label("solve rate", "final_solve_rate", "%", n="n"),
        Label("self-correct (wrong at some step, right at the end)", "corrected_rate", "%", ci="corrected_rate_ci95"),
        Label("lose a right answer", "lost_rate", "%", ci="lost_rate_ci95"),
        Label("start and goal markers kept at every step", "markers_kept_all_steps", "%", n="n"),
        Label("scene settles, mean step", "scene_settle_step_mean", "step"),
        Label("action settles, mean step", "action_settle_step_mean", "step"),
        Label("path minus scene (paired bootstrap)", "path_minus_scene_steps", "steps", ci="path_minus_scene_steps_ci95"),
        Label("samples whose scene settles first", "perception_first_fraction", "%", n="n"),
    ),
    "probe-perturb": (
        Label("samples", "n"),
        Label("noise", "modes"),
        Label("solve rate without noise", "clean_solve_rate", "%", n="n"),
        Label("{}: worst injection step (chosen on the calibration half)", "by_mode/*/selection/step", "step"),
        Label("{}: solve rate after noise at that step (held-out half)", "by_mode/*/worst_step_held_out/mean", "%",
              n="by_mode/*/worst_step_held_out/n"),
        Label("{}: worst frame before the answer frame (chosen on the calibration half)", "by_mode/*/selection/frame", "frame"),
        Label("{}: solve rate after noise on that frame (held-out half)", "by_mode/*/worst_frame_before_answer_held_out/mean", "%",
              n="by_mode/*/worst_frame_before_answer_held_out/n"),
        Label("{}: worst step minus worst frame, extra cost (held-out half, Newcombe paired CI)", "by_mode/*/step_minus_frame_drop",
              "points", ci="by_mode/*/step_minus_frame_drop_ci95"),
        Label("injection steps", "cka/injection_steps", "step"),
        *(Label(f"1 - CKA at the end after the earliest minus the latest injection, {m}, {{}}",
                f"cka/modes/{m}/*/first_minus_last_injection/diff", ci=f"cka/modes/{m}/*/first_minus_last_injection/ci95")
          for m in ("renoise", "replace", "add")),
    ),
    "probe-layers": (
        Label("samples", "n"),
        Label("blocks", "depth"),
        Label("solve rate, no intervention", "clean_solve_rate", "%", n="n"),
        Label("most important block (largest skip drop on the calibration half)", "skip_drop_held_out/layer", "block"),
        Label("solve-rate drop when it is skipped (held-out half)", "skip_drop_held_out/drop", "points", ci="skip_drop_held_out/ci95"),
        Label("solve-rate drop, block {} skipped", "skip_drop/*/drop", "points", ci="skip_drop/*/ci95"),
        Label("first block whose patch follows the donor's answer (a kept block before it)", "patch_flip_layer", "block"),
    ),
    "ensemble-compare": (
        Label("instances", "n"),
        Label("{}: solve rate", "methods/*/solve_rate", "%", ci="methods/*/solve_rate_ci95"),
        Label("{}: network evaluations per instance", "methods/*/nfe"),
        Label("{} minus one seed (Newcombe paired CI)", "methods/*/diff_vs_single/solve_rate/0", "points",
              ci="methods/*/diff_vs_single/solve_rate/1:3"),
    ),
}


# ---------------------------------------------------------------- labelled numbers


def _expand(summary: dict[str, Any], label: Label) -> list[tuple[str, Any, Any]]:
    """(text, value, ci) rows of one label; a '*' gives one row per key (absent values give no row)."""
    if "*" not in label.path:
        v = resolve(summary, label.path)
        return [] if _absent(v) else [(label.text, v, _ci(summary, v, label.ci, label.n))]
    head, _, _ = label.path.partition("/*")
    group = resolve(summary, head)
    rows = []
    for key in group if isinstance(group, dict) else []:
        v = resolve(summary, label.path.replace("*", key, 1))
        if _absent(v):
            continue
        name = _state(key) if head.startswith("cka/") else _words(key)
        sub = lambda path: path.replace("*", key, 1) if path else None  # noqa: E731
        rows.append((label.text.format(name), v, _ci(summary, v, sub(label.ci), sub(label.n))))
    return rows


def _absent(v: Any) -> bool:
    return v is None or (not isinstance(v, int | float | str | list)) or (isinstance(v, list) and not v)


def _ci(summary: dict[str, Any], value: Any, ci_path: str | None, n_path: str | None) -> list[float] | None:
    ci = resolve(summary, ci_path) if ci_path else None
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci):
        return ci
    n = resolve(summary, n_path) if n_path else None
    if isinstance(n, int) and n > 0 and isinstance(value, int | float) and 0 <= value <= 1:
        return list(wilson(round(value * n), n))
    return None


def labelled_rows(kind: str, summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, formatted value) rows of a run of `kind`; [] when no labels are known for it."""
    out = []
    for label in LABELS.get(kind, ()):
        for text, v, ci in _expand(summary, label):
            val = format_number(v, label.unit) + {"%": "%", "points": " points", "steps": " steps"}.get(label.unit, "")
            if ci:
                val += f" [{format_number(ci[0], label.unit)}, {format_number(ci[1], label.unit)}]"
            out.append((text, val))
    return out


def labelled_html(kind: str, summary: dict[str, Any]) -> str:
    rows = labelled_rows(kind, summary)
    if not rows:
        return ""
    body = "".join(f"<tr><th>{html.escape(t)}</th><td class=v>{html.escape(v)}</td></tr>" for t, v in rows)
    return f"<div class='card labelled'><table>{body}</table><p class=note>95% CIs in brackets.</p></div>"


# ---------------------------------------------------------------- the findings panel


def verdict_class(v: str) -> str:
    if v.startswith(INCONCLUSIVE):
        return "v-inconclusive"
    return "v-not-reproduced" if v == NOT_REPRODUCED else "v-" + re.sub(r"[^a-z]+", "-", v.lower()).strip("-")


def _card(f: dict[str, Any], root: Path, src: Src) -> str:
    v = str(f.get("verdict", ""))
    cls = verdict_class(v)
    fig = root / f["figure"] if f.get("figure") else None
    if fig is not None and fig.is_file():
        thumb = f'<img class=thumb src="{html.escape(src(fig))}" alt="{html.escape(f["title"])}: {html.escape(f["figure"])}">'
    else:
        thumb = f"<p class='thumb none'>{html.escape('figure not in this run: ' + str(f.get('figure')))}</p>"
    if f.get("value") is not None:
        meas = (f"<p class=meas><b>{html.escape(format_value(f))}</b><br><span class=muted>{html.escape(f.get('measure', ''))}"
                "</span></p>")
    else:
        meas = f"<p class=meas><span class=muted>{html.escape(f.get('measure', ''))}</span></p>"
    meas += "".join(f"<p class=meas><b>{html.escape(r['label'])}: {html.escape(format_value({**r, 'unit': f.get('unit', '')}))}</b> "
                    f"({html.escape(r['verdict'])})</p>" for r in f.get("requires", []) if r.get("value") is not None)
    extras = "".join(f"<li>{html.escape(e['label'])}: <b>{html.escape(format_number(e['value'], e.get('unit', '')))}"
                     f"{'%' if e.get('unit') == '%' else ''}</b></li>" for e in f.get("extras", []) if e.get("value") is not None)
    note = f"<p class=fnote>{html.escape(f['note'])}</p>" if f.get("note") else ""
    rule = f"<p class=fnote>{html.escape(rule_line(f))}</p>" if rule_line(f) else ""
    tag = "<span class=adds>steplens adds</span>" if f.get("source") == "steplens" else ""
    cmd = (f'<div class=cmd><code>{html.escape(f["command"])}</code><button class=copy type=button title="copy the command">copy'
           "</button></div>" if f.get("command") else "")
    return (f'<article class="fcard {cls}" data-verdict="{html.escape(v)}" id="finding-{html.escape(f["id"])}">'
            f'<div class=ftop><h3>{html.escape(f["title"])}</h3>{tag}<span class="verdict {cls}">{html.escape(v)}</span></div>'
            f'<p class=claim>{html.escape(f["claim"])}</p>{thumb}{meas}'
            f'{f"<ul class=extras>{extras}</ul>" if extras else ""}{rule}{note}{cmd}</article>')


def rule_line(f: dict[str, Any]) -> str:
    """How the rule read this card: smallest effect of interest and why, the family-adjusted CI, p, and the n it needs."""
    unit = f.get("unit", "")
    parts = []
    if f.get("min_effect") is not None:
        why = f.get("min_effect_why")
        parts.append(f"Smallest effect of interest {format_number(f['min_effect'], unit)}{' points' if unit == 'points' else ''}"
                     + (f": {why}." if why else "."))
    adj = f.get("ci_adjusted")
    if adj and f.get("ci_level") is not None:
        parts.append(f"Family-adjusted CI (Holm, {f['family_size']} cards, level {100 * f['ci_level']:.2f}%): "
                     f"[{format_number(adj[0], unit)}, {format_number(adj[1], unit)}], the one the verdict uses; "
                     f"p {_p(f.get('p'))}, Holm-adjusted p {_p(f.get('p_holm'))}.")
    if f.get("needed_n"):
        parts.append(f"At the measured spread a decisive CI needs n >= {f['needed_n']}.")
    return " ".join(parts)


def _p(p: Any) -> str:
    return "none" if not isinstance(p, int | float) else (f"{p:.2g}" if p >= 1e-4 else "< 0.0001")


def findings_html(summary: dict[str, Any], root: Path, src: Src) -> str:
    """The panel a demo report opens with: one card per finding, verdict first."""
    findings = summary.get("findings")
    if not isinstance(findings, list) or not findings:
        return ""
    counts: dict[str, int] = {}
    for f in findings:
        key = "inconclusive" if str(f.get("verdict", "")).startswith(INCONCLUSIVE) else str(f.get("verdict"))
        counts[key] = counts.get(key, 0) + 1
    tally = " &middot; ".join(f"<span class='{verdict_class(k)}'>{n} {html.escape(k)}</span>" for k, n in counts.items())
    banner = f"<p class=banner>{html.escape(summary['banner'])}</p>" if summary.get("banner") else ""
    cards = "".join(_card(f, root, src) for f in findings if isinstance(f, dict) and {"id", "title", "claim"} <= set(f))
    return (f"<section class=findings id=findings><div class=fhead><h2>Findings</h2><p class=tally>{tally}</p></div>{banner}"
            f"<div class=fcards>{cards}</div><details class=rule><summary>How a verdict is decided</summary><p>{html.escape(RULE)}"
            "</p></details></section>")


def demo_subtitle(summary: dict[str, Any]) -> str:
    c = summary.get("config", {})
    parts = []
    if c.get("model"):
        parts.append(f"model {c['model']}")
    if c.get("size"):
        parts.append(f"held-out {c['size']}x{c['size']} mazes")
    if c.get("steps"):
        parts.append(f"{c['steps']} Euler steps")
    if isinstance(summary.get("total_s"), int | float):
        parts.append(f"{summary['total_s']:.0f} s")
    return " &middot; ".join(html.escape(p) for p in parts)
