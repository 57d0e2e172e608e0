"""Self-contained HTML reports built only from saved run folders (never re-runs a model).

Run folders are read and validated by `folders.py`. A parent folder (a demo) may hold several run folders; each becomes a section, listed in a table
of contents in the order the parent's summary.json names them (then by name). The dashboard (`serve.py`) uses the same renderer;
only `src`, which turns a file into the URL an <img> loads, differs (a base64 data URI here, a /files/ URL there).
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import atomic_write_text, to_json
from .folders import VIDEO_TYPES, Figure, ReportError, Run, Sample, describe_instances, image_size, is_num, is_run, load_run, sub_runs

Src = Callable[[Path], str]  # a file of the run -> the URL that loads it

MAX_REPORT_SAMPLES = 8  # samples embedded in a self-contained report's step viewer (the dashboard shows all)


# ---------------------------------------------------------------- numbers


def _is_pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(is_num(x) for x in v)


def fmt_num(v: float | int) -> str:
    """Three significant digits; no exponent between 1e-4 and 1e6 (1234.5 -> '1230')."""
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    a = abs(v)
    if a == 0:
        return "0"
    if 999.5 <= a < 1e6:  # '.3g' would write 1.23e+03
        return f"{round(v, 2 - math.floor(math.log10(a))):.0f}"
    return f"{v:.3g}"


Row = tuple[str, Any, list[float] | None]  # (dotted key, value, 95% CI or None)


def flatten(d: dict[str, Any], prefix: str = "") -> list[Row]:
    """Nested dicts as dotted keys; `x_ci95` (or `ci95` beside `mean` / one other number) becomes x's interval."""
    ci: dict[str, list[float]] = {}  # key -> its interval
    used: set[str] = set()  # keys shown as an interval, not as rows
    for k, v in d.items():
        if k.endswith("_ci95") and _is_pair(v) and is_num(d.get(k[:-5])):
            ci[k[:-5]] = v
            used.add(k)
    if _is_pair(d.get("ci95")):
        nums = [k for k, v in d.items() if k != "ci95" and is_num(v)]
        base = "mean" if "mean" in nums else nums[0] if len(nums) == 1 else None
        if base is not None and base not in ci:
            ci[base] = d["ci95"]
            used.add("ci95")
    rows: list[Row] = []
    for k, v in d.items():
        if k in used:
            continue
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            rows += flatten(v, key)
        else:
            rows.append((key, v, ci.get(k)))
    return rows


def _sparkline(xs: list[float], w: int = 64, h: int = 18) -> str:
    finite = [x for x in xs if math.isfinite(x)]
    if len(finite) < 2:
        return ""
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    pts = " ".join(f"{2 + i * (w - 4) / (len(xs) - 1):.1f},{h - 2 - ((x - lo) / span) * (h - 4):.1f}"
                   for i, x in enumerate(xs) if math.isfinite(x))
    return (f'<svg class=spark width={w} height={h} viewBox="0 0 {w} {h}" aria-hidden=true>'
            f'<polyline points="{pts}" fill=none stroke="#0969da" stroke-width=1.5 /></svg>')


def _is_block(v: Any) -> bool:
    """Values drawn below their key, across the card: tables of records."""
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def cell(v: Any) -> str:
    """One summary value as HTML (escaped)."""
    if v is None:
        return '<span class=muted>&ndash;</span>'
    if isinstance(v, bool):
        return str(v).lower()
    if is_num(v):
        return fmt_num(v)
    if isinstance(v, str):
        return html.escape(v if len(v) <= 200 else v[:200] + "...")
    if isinstance(v, list):
        if not v:
            return "[]"
        if all(is_num(x) for x in v):
            if len(v) <= 6:
                return "[" + ", ".join(fmt_num(x) for x in v) + "]"
            full = html.escape(", ".join(fmt_num(x) for x in v[:200]))
            return (f'<span title="{full}">{_sparkline([float(x) for x in v])}<span class=list>'
                    f'[{fmt_num(v[0])}, {fmt_num(v[1])}, &hellip;, {fmt_num(v[-1])}] <span class=muted>({len(v)})</span></span></span>')
        if all(isinstance(x, list) and all(is_num(y) or y is None for y in x) for x in v):
            return f"<span class=muted>{len(v)} &times; {max(len(x) for x in v)} values</span>"
        if all(isinstance(x, dict) and all(not isinstance(y, dict | list) for y in x.values()) for x in v):
            cols = list(dict.fromkeys(k for x in v for k in x))
            head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{cell(x.get(c))}</td>" for c in cols) + "</tr>" for x in v[:30])
            more = f"<tr><td colspan={len(cols)} class=muted>&hellip; {len(v) - 30} more</td></tr>" if len(v) > 30 else ""
            return f"<table class=mini><tr>{head}</tr>{body}{more}</table>"
    text = json.dumps(v, default=str)
    return html.escape(text if len(text) <= 120 else text[:120] + "...")


def _key(key: str) -> str:
    """A dotted key that may wrap after '.' and '_' rather than mid-word."""
    return re.sub(r"([._])", r"\1<wbr>", html.escape(key))


def _rows_html(rows: list[Row]) -> str:
    out = []
    for key, v, ci in rows:
        if _is_block(v):
            out.append(f"<tr><td colspan=2 class=blk><div class=k>{_key(key)}</div>{cell(v)}</td></tr>")
            continue
        ci_html = f" <span class=ci>[{fmt_num(ci[0])}, {fmt_num(ci[1])}]</span>" if ci else ""
        out.append(f"<tr><th>{_key(key)}</th><td class=v>{cell(v)}{ci_html}</td></tr>")
    return "".join(out)


def numbers_html(summary: dict[str, Any], skip: tuple[str, ...] = (), show: int = 12) -> str:
    """summary.json as cards of tables: top-level numbers first, then one card per top-level object."""
    top = {k: v for k, v in summary.items() if not (isinstance(v, dict) and v) and k not in skip}
    groups = ([("summary", flatten(top))] if top else []) + [
        (k, flatten(v)) for k, v in summary.items() if isinstance(v, dict) and v and k not in skip]
    cards = []
    for name, rows in groups:
        head, rest = (rows, []) if len(rows) <= show + 2 else (rows[:show], rows[show:])
        more = (f"<details><summary>{len(rest)} more</summary><table>{_rows_html(rest)}</table></details>"
                if rest else "")
        lists = sum(isinstance(v, list) and len(v) > 6 for _, v, _ in rows)
        cls = "card span2" if lists >= 3 else "card"  # rows of sparklines need room
        cards.append(f"<div class='{cls}'><h4>{html.escape(name)}</h4><table>{_rows_html(head)}</table>{more}</div>")
    return f"<div class=nums>{''.join(cards)}</div>" if cards else ""


def config_html(config: dict[str, Any]) -> str:
    chips = "".join(f"<span><b>{html.escape(k)}</b> {cell(v)}</span>" for k, v, _ in flatten(config) if not k.startswith("instances."))
    chips += "".join(f"<span><b>instances</b> {html.escape(describe_instances(v))}</span>" for k, v in config.items() if k == "instances")
    return f"<div class=cfg>{chips}</div>" if chips else ""


# ---------------------------------------------------------------- figures and the step viewer


def data_uri(path: Path) -> str:
    """The file as a base64 data URI (self-contained reports)."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _display(size: tuple[int, int], target: int) -> tuple[int, int, bool]:
    """Display size: small pixel images are scaled up by a whole factor and drawn crisp."""
    w, h = size
    if w >= 400 or w == 0:
        return w, h, False
    k = max(1, min(8, target // w))
    return w * k, h * k, True


def figure_html(fig: Figure, src: Src) -> str:
    title = html.escape(fig.title)
    wide = False
    if fig.path.suffix.lower() in VIDEO_TYPES:
        media = f'<video src="{html.escape(src(fig.path))}" controls loop muted playsinline></video>'
    else:
        dims, cls = "", ""
        if fig.size:
            w, h, px = _display(fig.size, 560)
            dims, cls, wide = f" width={w} height={h}", " class=px" if px else "", w >= 900
        media = f'<img src="{html.escape(src(fig.path))}" alt="{title}"{dims}{cls}>'
    cmd = (f'<div class=cmd><code>{html.escape(fig.command)}</code><button class=copy type=button '
           f'title="copy the command">copy</button></div>' if fig.command else "")
    cap = f"<p class=cap>{html.escape(fig.caption)}</p>" if fig.caption else ""
    return f'<div class="card fig{" wide" if wide else ""}"><h3>{title}</h3>{media}{cap}{cmd}</div>'


def _json_script(obj: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return to_json(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def viewer_html(samples: tuple[Sample, ...] | list[Sample], src: Src, note: str = "", title: str = "Chain-of-Steps") -> str:
    """A step viewer over per-step decodes: slider, sample picker, arrow keys and j/k."""
    if not samples:
        return ""
    first = samples[0].frames[0]
    w, h, px = _display(image_size(first, first) or (0, 0), 720)
    data = [{"id": s.id, "frames": [src(f) for f in s.frames],
             "sigmas": [None if x is None else float(x) for x in s.sigmas]} for s in samples]
    if len(samples) > 1:
        opts = "".join(f"<option value={k}>{html.escape(s.id)}</option>" for k, s in enumerate(samples))
        pick = f'<select aria-label="sample">{opts}</select>'
    else:
        pick = f"<span class=muted>{html.escape(samples[0].id)}</span>"
    hint = ("<kbd>&larr;</kbd> <kbd>&rarr;</kbd> or <kbd>k</kbd> <kbd>j</kbd> move through the denoising steps; "
            "<kbd>Home</kbd> / <kbd>End</kbd> jump to the first / last. Each image is the model's clean estimate "
            "x0_hat at that step.")
    return (f'<div class="card viewer" tabindex=0 data-step=0><div class=bar><h3>{html.escape(title)}</h3>{pick}'
            f'<span class=lbl></span></div><div class=stage><img alt="decoded x0_hat" width={w} height={h}'
            f'{" class=px" if px else ""}></div><input type=range min=0 max={len(samples[0].frames) - 1} value=0 '
            f'aria-label="step"><p class=hint>{hint}{(" " + note) if note else ""}</p>'
            f'<script type="application/json" class=vdata>{_json_script(data)}</script></div>')


# ---------------------------------------------------------------- pages


def asset(name: str) -> str:
    return resources.files("steplens.report").joinpath(name).read_text(encoding="utf-8")


def page(title: str, body: str, *, wide: bool = False) -> str:
    """A complete HTML page with the inline stylesheet and script (no external resources)."""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'><link rel=icon href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{asset('report.css')}</style></head>"
            f"<body><main{' class=wide' if wide else ''}>{body}</main><script>{asset('report.js')}</script></body></html>")


def _anchor(name: str, taken: set[str]) -> str:
    base = "run-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")
    a, k = base, 2
    while a in taken:
        a, k = f"{base}-{k}", k + 1
    taken.add(a)
    return a


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


SampleLinks = Callable[[Run], str]  # extra HTML under a run's step viewer (the dashboard links each sample)


def figures_html(figures: tuple[Figure, ...], src: Src) -> str:
    """Figures in a grid; a series of per-sample figures ("Title, sample") shows its first, the rest folded away."""
    groups: dict[str, list[Figure]] = {}
    for f in figures:
        groups.setdefault(f.title.split(", ")[0], []).append(f)
    shown = [g[0] for g in groups.values()]
    rest = [f for g in groups.values() for f in g[1:]]
    more = (f"<details class=more><summary>{len(rest)} more figures ({html.escape(', '.join(k for k, g in groups.items() if len(g) > 1))})"
            f"</summary><div class=figs>{''.join(figure_html(f, src) for f in rest)}</div></details>" if rest else "")
    return f"<div class=figs>{''.join(figure_html(f, src) for f in shown)}</div>{more}"


def run_content(run: Run, src: Src, *, max_samples: int | None = MAX_REPORT_SAMPLES,
                sample_links: SampleLinks | None = None, show_config: bool = False, show_viewer: bool = True,
                command: str = "") -> str:
    """One run's numbers (under human labels where its kind has them), step viewer and figures."""
    from .story import labelled_html

    parts = []
    if command:
        parts.append(f'<div class=cmd><code>{html.escape(command)}</code><button class=copy type=button '
                     f'title="copy the command">copy</button></div>')
    labelled = labelled_html(run.kind, run.summary)
    if run.config and not show_config:
        parts.append(f"<details><summary>config</summary>{config_html(run.config)}</details>")
    skip = ("config",) if run.summary.get("config") == run.config else ()
    text = f"<pre class=txt>{html.escape(run.text.rstrip())}</pre>" if run.text.strip() else ""
    if labelled:  # raw keys and the text summary stay one click away
        parts.append(labelled)
        if text or run.summary:
            parts.append(f"<details class=raw><summary>all values (summary.json, summary.txt)</summary>{text}"
                         f"{numbers_html(run.summary, skip)}</details>")
    else:
        parts += [text, numbers_html(run.summary, skip)]
    if run.samples and show_viewer:
        shown = run.samples if max_samples is None else run.samples[:max_samples]
        note = (f"Showing {len(shown)} of {len(run.samples)} samples; <code>steplens serve</code> shows all."
                if len(shown) < len(run.samples) else "")
        parts.append(viewer_html(shown, src, note))
        if sample_links:
            parts.append(sample_links(run))
    if run.figures:
        parts.append(figures_html(run.figures, src))
    if not (run.text.strip() or run.summary or run.samples or run.figures):
        parts.append("<p class=empty>This run has no summary, figures or steps yet.</p>")
    return "".join(parts)


def render_body(root: str | Path, src: Src, *, max_samples: int | None = MAX_REPORT_SAMPLES,
         sample_links: SampleLinks | None = None) -> tuple[str, str]:
    """(title, body HTML) of a run folder or a parent folder of runs."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    subs = sub_runs(root)
    if not is_run(root) and not subs:
        raise ReportError(f"{root}: no manifest.json here or in its sub-folders: not a steplens run")
    me = load_run(root) if is_run(root) else None
    story = list(me.summary) if me else []  # a demo's summary.json lists its stages in the order they ran
    subs.sort(key=lambda p: (story.index(p.name) if p.name in story else len(story), p.name))
    runs = [load_run(s) for s in subs]
    name = root.resolve().name or str(root)
    if me and isinstance(me.summary.get("findings"), list):
        return f"steplens: {name}", demo_body(root, me, runs, src, max_samples=max_samples, sample_links=sample_links)
    kind = f"<span class=badge>{html.escape(me.kind)}</span>" if me else ""
    sub = "steplens report" + (f" &middot; {len(runs)} runs" if runs else "")
    parts = [f"<header><h1>{html.escape(name)}{kind}</h1><p class=sub>{sub}</p>"]
    if me:
        parts.append(config_html(me.config))
    parts.append("</header>")
    taken: set[str] = set()
    anchors = [_anchor(r.folder.name, taken) for r in runs]
    if runs:
        parts.append(_toc(runs, anchors))
    if me:
        parts.append(run_content(me, src, max_samples=max_samples, sample_links=sample_links, show_config=True))
    for a, r in zip(anchors, runs):
        parts.append(f'<section class=run id="{a}"><h2>{html.escape(r.folder.name)}<span class=badge>'
                     f"{html.escape(r.kind)}</span></h2>"
                     f"{run_content(r, src, max_samples=max_samples, sample_links=sample_links)}</section>")
    return f"steplens: {name}", "".join(parts)


def _toc(runs: list[Run], anchors: list[str], titles: dict[str, str] | None = None) -> str:
    items = "".join(f'<li><a href="#{a}">{html.escape((titles or {}).get(r.folder.name, r.folder.name))}</a> <span class=badge>'
                    f"{html.escape(r.kind)}</span> <span class=muted>{html.escape(_first_line(r.text)[:110])}</span></li>"
                    for a, r in zip(anchors, runs))
    return f"<nav class='card toc block'><h4>Contents</h4><ol>{items}</ol></nav>"


def demo_body(root: Path, me: Run, runs: list[Run], src: Src, *, max_samples: int | None = MAX_REPORT_SAMPLES,
              sample_links: SampleLinks | None = None) -> str:
    """A demo's page: the findings panel first, then the Chain-of-Steps viewer, then one section per stage."""
    from .story import STAGE_TITLES, demo_subtitle, findings_html

    name = root.resolve().name or str(root)
    parts = [f"<header><h1>steplens: what the paper found, on this model<span class=badge>{html.escape(me.kind)}</span></h1>"
             f"<p class=sub>{demo_subtitle(me.summary)} &middot; folder {html.escape(name)}</p></header>",
             findings_html(me.summary, root, src)]
    viewed = next((r for r in runs if r.samples), None)
    if viewed is not None:
        shown = viewed.samples if max_samples is None else viewed.samples[:max_samples]
        parts.append(viewer_html(shown, src, "Pick a sample in the list above.",
                                 title="Chain-of-Steps viewer"))
        if sample_links:
            parts.append(sample_links(viewed))
    taken: set[str] = set()
    anchors = [_anchor(r.folder.name, taken) for r in runs]
    titles = {r.folder.name: STAGE_TITLES.get(r.folder.name, r.folder.name) for r in runs}
    if runs:
        parts.append(_toc(runs, anchors, titles))
    commands = me.summary.get("commands") if isinstance(me.summary.get("commands"), dict) else {}
    for a, r in zip(anchors, runs):
        parts.append(f'<section class=run id="{a}"><h2>{html.escape(titles[r.folder.name])}<span class=badge>'
                     f"{html.escape(r.folder.name)}</span></h2>"
                     + run_content(r, src, max_samples=max_samples, sample_links=sample_links, show_viewer=r is not viewed,
                                   command=str(commands.get(r.folder.name, ""))) + "</section>")
    raw = {k: v for k, v in me.summary.items() if k not in ("findings",)}
    parts.append(f"<section class=run id=all-values><h2>All values</h2><details class=raw><summary>the demo's summary.json and "
                 f"summary.txt</summary>{'<pre class=txt>' + html.escape(me.text.rstrip()) + '</pre>' if me.text.strip() else ''}"
                 f"{numbers_html(raw)}</details></section>")
    return "".join(parts)


def render(root: str | Path, src: Src = data_uri, max_samples: int | None = MAX_REPORT_SAMPLES) -> str:
    """The report page of a run folder (or a parent of runs); by default every file is inlined."""
    title, content = render_body(root, src, max_samples=max_samples)
    return page(title, content)


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write one self-contained report.html (images inlined, no external resources); returns its path."""
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / "report.html"
    text = render(run_dir)
    try:
        atomic_write_text(target, text)
    except OSError as e:
        raise ReportError(f"{target}: cannot write the report ({e.strerror or e})") from None
    return target
