"""Self-contained HTML reports built only from saved run folders (never re-runs a model).

A run folder holds manifest.json (kind, config), summary.json, optional summary.txt, figures.json
([{path, title, caption, command}]) and optional steps/<sample>/step_NNN.png (per-step decodes).
A parent folder (a demo) may hold several run folders; each becomes a section.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import atomic_write_text


class ReportError(RuntimeError):
    """A run folder that cannot be rendered: missing or invalid files (named in the message)."""


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f7f7f8;color:#1d1d1f}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.7rem;margin:.2em 0}h2{border-bottom:2px solid #e3e3e8;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}nav{background:#fff;border:1px solid #e3e3e8;border-radius:8px;padding:8px 16px}
nav a{margin-right:14px}a{color:#2f5fb3}
.fig{background:#fff;border:1px solid #e3e3e8;border-radius:8px;padding:12px 16px;margin:14px 0}
.fig img,.fig video{max-width:100%;height:auto;image-rendering:pixelated;display:block;margin:8px 0}
.cap{color:#444;font-size:.93rem}
pre,code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
.cmd{display:flex;gap:8px;align-items:center;background:#f0f0f3;border-radius:6px;padding:6px 8px;margin-top:6px}
.cmd code{flex:1;overflow-x:auto;white-space:nowrap}
button{border:1px solid #ccd;background:#fff;border-radius:5px;padding:3px 9px;cursor:pointer}
table{border-collapse:collapse;background:#fff;font-size:.88rem;margin:8px 0}
td,th{border:1px solid #e3e3e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f3}.num{text-align:right;font-variant-numeric:tabular-nums}
pre.txt{background:#fff;border:1px solid #e3e3e8;border-radius:8px;padding:10px;white-space:pre-wrap}
.viewer{background:#fff;border:1px solid #e3e3e8;border-radius:8px;padding:12px}
.viewer img{image-rendering:pixelated;max-width:100%}
details summary{cursor:pointer;color:#555}
"""

JS = """
document.querySelectorAll('button.copy').forEach(b=>b.addEventListener('click',()=>{
  const t=b.parentElement.querySelector('code').textContent;
  if(navigator.clipboard){navigator.clipboard.writeText(t).catch(()=>{});}
  b.textContent='copied';setTimeout(()=>b.textContent='copy',1200);}));
document.querySelectorAll('.viewer').forEach(v=>{
  const frames=JSON.parse(v.dataset.frames), img=v.querySelector('img'), r=v.querySelector('input'), l=v.querySelector('.lbl');
  const sig=JSON.parse(v.dataset.sigmas||'[]');
  function show(i){i=Math.max(0,Math.min(frames.length-1,i));r.value=i;img.src=frames[i];
    l.textContent='step '+i+' / '+(frames.length-1)+(sig.length>i?'  (sigma '+sig[i]+')':'');v.dataset.step=i;}
  r.addEventListener('input',()=>show(+r.value));
  v.tabIndex=0; v.addEventListener('keydown',e=>{const i=+r.value;
    if(e.key==='ArrowRight'||e.key==='k'){show(i+1);e.preventDefault();}
    if(e.key==='ArrowLeft'||e.key==='j'){show(i-1);e.preventDefault();}});
  show(0);});
document.addEventListener('keydown',e=>{if(e.target===document.body){const v=document.querySelector('.viewer');
  if(v&&['ArrowRight','ArrowLeft','j','k'].includes(e.key)){v.focus();v.dispatchEvent(new KeyboardEvent('keydown',{key:e.key}));}}});
"""


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        if default is not None:
            return default
        raise ReportError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: invalid JSON ({e})") from None


def data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def is_run(folder: Path) -> bool:
    return (folder / "manifest.json").is_file()


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list) and len(v) <= 12 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return html.escape(json.dumps(v)[:300])


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                rows += _flatten(v, key)
            elif isinstance(v, list) and v and isinstance(v[0], dict | list) and len(v) > 12:
                rows.append((key, f"({len(v)} entries, see summary.json)"))
            else:
                rows.append((key, v))
    return rows


def summary_table(summary: dict[str, Any], limit: int = 80) -> str:
    rows = _flatten(summary)
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{v if isinstance(v, str) and v.startswith('(') else _fmt(v)}</td></tr>"
                   for k, v in rows[:limit])
    more = f"<tr><td colspan=2>... {len(rows) - limit} more in summary.json</td></tr>" if len(rows) > limit else ""
    return f"<table>{body}{more}</table>"


def _figure(fig: dict[str, Any], src: Callable[[Path], str], root: Path) -> str:
    try:
        rel = str(fig["path"])
    except (KeyError, TypeError):
        raise ReportError(f"{root / 'figures.json'}: every figure needs a 'path'") from None
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise ReportError(f"{root / 'figures.json'}: figure file {rel!r} is missing")
    media = (f'<video src="{src(path)}" controls loop muted></video>' if path.suffix == ".mp4"
             else f'<img src="{src(path)}" alt="{html.escape(fig.get("title", rel))}">')
    cmd = fig.get("command") or ""
    cmd_html = f'<div class=cmd><code>{html.escape(cmd)}</code><button class=copy type=button>copy</button></div>' if cmd else ""
    return (f'<div class=fig><h3>{html.escape(fig.get("title", rel))}</h3>{media}'
            f'<div class=cap>{html.escape(fig.get("caption", ""))}</div>{cmd_html}</div>')


def step_viewer(folder: Path, src: Callable[[Path], str], limit: int = 2) -> str:
    """A slider + keyboard viewer over steps/<sample>/step_NNN.png."""
    out = []
    for sample in sorted(p for p in (folder / "steps").glob("*") if p.is_dir())[:limit]:
        frames = sorted(sample.glob("step_*.png"))
        if not frames:
            continue
        meta = _read_json(sample / "meta.json", {})
        sig = [round(float(s), 3) for s in meta.get("sigmas", [])]
        out.append(f'<div class=viewer data-frames=\'{html.escape(json.dumps([src(f) for f in frames]))}\' '
                   f'data-sigmas=\'{json.dumps(sig)}\'><h3>Step viewer: {html.escape(sample.name)}</h3>'
                   f'<img alt="decoded x0_hat"><div><input type=range min=0 max={len(frames) - 1} value=0 style="width:60%"> '
                   f'<span class=lbl></span></div><div class=cap>Drag, or use the arrow keys (or j/k), to move through denoising steps.</div></div>')
    return "".join(out)


def run_section(folder: Path, src: Callable[[Path], str], anchor: str = "") -> str:
    manifest = _read_json(folder / "manifest.json")
    summary = _read_json(folder / "summary.json", {})
    figs = _read_json(folder / "figures.json", [])
    if not isinstance(figs, list):
        raise ReportError(f"{folder / 'figures.json'}: expected a list of figures")
    text = (folder / "summary.txt").read_text() if (folder / "summary.txt").exists() else ""
    parts = [f'<h2 id="{html.escape(anchor)}">{html.escape(folder.name)} <small>({html.escape(str(manifest.get("kind", "run")))})</small></h2>']
    if text:
        parts.append(f"<pre class=txt>{html.escape(text)}</pre>")
    parts.append(step_viewer(folder, src))
    parts += [_figure(f, src, folder) for f in figs]
    if summary:
        parts.append(f"<details><summary>All numbers (summary.json)</summary>{summary_table(summary)}</details>")
    parts.append(f"<details><summary>Config</summary><pre>{html.escape(json.dumps(manifest.get('config', {}), indent=1, default=str))}</pre></details>")
    return "".join(parts)


def render(root: str | Path, src: Callable[[Path], str] = data_uri, title: str | None = None) -> str:
    """The report page of a run folder, or of a parent folder of runs."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder")
    subs = sorted(p for p in root.iterdir() if p.is_dir() and is_run(p))
    if not is_run(root) and not subs:
        raise ReportError(f"{root}: no manifest.json here or in its sub-folders: not a steplens run")
    sections, nav = [], []
    if is_run(root):
        sections.append(run_section(root, src, "top"))
    for s in subs:
        nav.append(f'<a href="#{html.escape(s.name)}">{html.escape(s.name)}</a>')
        sections.append(run_section(s, src, s.name))
    head = f"<h1>{html.escape(title or 'steplens report: ' + root.resolve().name)}</h1>"
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{html.escape(title or root.name)}</title><style>{CSS}</style></head><body><main>{head}"
            f"{'<nav>' + ''.join(nav) + '</nav>' if nav else ''}{''.join(sections)}</main><script>{JS}</script></body></html>")


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write one self-contained report.html (images inlined) for a run folder; returns its path."""
    run_dir = Path(run_dir)
    target = Path(out) if out else run_dir / "report.html"
    atomic_write_text(target, render(run_dir))
    return target
