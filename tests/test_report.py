"""`steplens report`: one self-contained HTML file built only from a run folder."""

import json
import re

import pytest
from typer.testing import CliRunner

from fixtures_report import COMMAND, make_demo, make_run
from steplens.cli import app
from steplens.report.html import ReportError, build_report, flatten, fmt_num


def test_report_is_self_contained_and_escaped(tmp_path):
    d = make_run(tmp_path, caption="<script>alert(1)</script>")
    out = build_report(d)
    assert out == d / "report.html"
    html = out.read_text()
    assert "data:image/png;base64," in html and "data:image/gif;base64," in html  # the plot, the GIF
    assert html.count("data:image/png;base64,") >= 1 + 2 * 3  # plus 2 samples x 3 steps in the step viewer
    assert f"<code>{COMMAND}</code>" in html and "button class=copy" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<pre class=txt>three lines\nof &lt;b&gt;text&lt;/b&gt;" in html
    assert 'class="card viewer"' in html and "probe-test" in html
    # no external resources: every src/href is a data URI or an in-page anchor
    assert re.findall(r'(?:src|href)=["\']?(?!data:|#)[^"\'\s>]+', html) == []
    assert not list(d.glob(".report.html.*"))  # written atomically: no temp file left


def test_numbers_are_flattened_and_rounded(tmp_path):
    html = build_report(make_run(tmp_path)).read_text()
    assert "0.812 <span class=ci>[0.7, 0.9]</span>" in html  # x and x_ci95 share a row
    assert "solve_rate_ci95" not in html
    assert "deeper.<wbr>b" in html and "0.123" in html and "0.123456" not in html
    assert "0.25 <span class=ci>[0.1, 0.4]</span>" in html  # {"mean", "ci95"} pairs too
    assert "1230" in html and "1.23e-05" in html
    assert "<table class=mini>" in html  # a list of records becomes a small table


def test_fmt_and_flatten():
    assert [fmt_num(x) for x in (0.8123456, 1234.5, 999.7, 1.234e-5, 0.0, 7, float("nan"), -0.5)] == \
        ["0.812", "1230", "1000", "1.23e-05", "0", "7", "nan", "-0.5"]
    rows = flatten({"a": {"b": 1.0, "b_ci95": [0.5, 1.5]}, "c_ci95": [1, 2], "d": {"mean": 2, "ci95": [1, 3], "n": 4}})
    assert rows == [("a.b", 1.0, [0.5, 1.5]), ("c_ci95", [1, 2], None), ("d.mean", 2, [1, 3]), ("d.n", 4, None)]


def test_parent_folder_gets_a_section_per_run(tmp_path):
    make_demo(tmp_path)
    html = build_report(tmp_path, tmp_path / "out" / "r.html").read_text()
    assert 'href="#run-cos"' in html and 'id="run-behaviour"' in html  # table of contents
    assert html.index('id="run-cos"') < html.index('id="run-behaviour"')  # the order the demo's summary.json names them
    assert "Headline plot" in html and "steplens demo: two stages" in html
    assert html.count('class="card viewer"') == 1  # only the cos stage has steps/


def test_video_figures_are_embedded(tmp_path):
    d = make_run(tmp_path)
    (d / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")  # the report only embeds the bytes
    figs = json.loads((d / "figures.json").read_text()) + [{"path": "clip.mp4", "title": "clip", "caption": "", "command": ""}]
    (d / "figures.json").write_text(json.dumps(figs))
    assert '<video src="data:video/mp4;base64,' in build_report(d).read_text()


def test_bad_folders_are_named(tmp_path):
    d = make_run(tmp_path)
    (d / "plot.png").unlink()
    with pytest.raises(ReportError, match=r"figures.json: figure file 'plot.png' is missing"):
        build_report(d)
    (d / "figures.json").write_text("{oops")
    with pytest.raises(ReportError, match="figures.json: invalid JSON"):
        build_report(d)
    (d / "figures.json").write_text(json.dumps([{"path": "../../etc/passwd"}]))
    with pytest.raises(ReportError, match="must be relative and inside"):
        build_report(d)
    (d / "figures.json").write_text("[]")
    (d / "summary.json").write_text("[1, 2")
    with pytest.raises(ReportError, match="summary.json: invalid JSON"):
        build_report(d)
    (d / "summary.json").write_text("{}")
    (d / "steps" / "s0" / "meta.json").write_text("nope")
    with pytest.raises(ReportError, match="meta.json"):
        build_report(d)
    with pytest.raises(ReportError, match="not a steplens run"):
        build_report(d / "steps")
    with pytest.raises(ReportError, match="not a folder"):
        build_report(tmp_path / "missing")


def test_sample_names_and_titles_are_escaped(tmp_path):
    d = make_run(tmp_path, samples=('a"b<c>',))
    figs = json.loads((d / "figures.json").read_text())
    figs[0]["title"] = "</h3><img src=x onerror=alert(1)>"
    (d / "figures.json").write_text(json.dumps(figs))
    html = build_report(d).read_text()
    assert "<img src=x" not in html and 'a"b<c>' not in html
    assert "a&quot;b&lt;c&gt;" in html and "a\\\"b\\u003cc\\u003e" in html  # the picker and the viewer's JSON


def test_cli_report(tmp_path):
    d = make_run(tmp_path)
    r = CliRunner().invoke(app, ["report", str(d), "--out", str(tmp_path / "x.html")])
    assert r.exit_code == 0 and r.output.strip() == str(tmp_path / "x.html") and (tmp_path / "x.html").exists()
    r = CliRunner().invoke(app, ["report", str(d)])
    assert r.exit_code == 0 and (d / "report.html").exists()
    html = (d / "report.html").read_text()  # the run's figures inlined, with their titles and its summary text
    assert html.count("data:image/png;base64,") >= 1 and "A plot" in html and "An animation" in html and "three lines" in html
    r = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "not a folder" in r.output and "Traceback" not in r.output
    (d / "figures.json").write_text("{oops")
    r = CliRunner().invoke(app, ["report", str(d)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "figures.json" in r.output


def test_cli_serve_errors(tmp_path):
    r = CliRunner().invoke(app, ["serve", str(tmp_path / "missing"), "--port", "0"])
    assert r.exit_code == 2 and "not a folder" in r.output
    import socket

    with socket.socket() as s:  # a port that is taken
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", str(s.getsockname()[1])])
    assert r.exit_code == 2 and "cannot listen" in r.output


def _default_view(page: str) -> str:
    """The page without what is folded away (details) and without the embedded data."""
    while True:  # innermost first: details nest
        folded = re.sub(r"<details[^>]*>(?:(?!<details).)*?</details>", "", page, flags=re.S)
        if folded == page:
            break
        page = folded
    page = re.sub(r"<script.*?</script>", "", page, flags=re.S)
    return re.sub(r"data:[^\"']+", "", page)


def test_demo_report_opens_with_the_findings(tmp_path):
    from fixtures_report import make_findings_demo

    page = build_report(make_findings_demo(tmp_path / "demo")).read_text()
    main = page[page.index("<main"):]
    assert main.index("<header>") < main.index("<section class=findings") < main.index('class="card viewer"') \
        < main.index("<nav class='card toc") < main.index('id="run-cos"')
    cards = re.findall(r'<article class="fcard (v-[a-z-]+)" data-verdict="([^"]+)" id="finding-([a-z_]+)"', page)
    got = {i: v for _, v, i in cards}
    assert got == {"chain_of_steps": "reproduced", "noise_step_vs_frame": "reproduced", "information_flow": "inconclusive at n=8",
                   "layer_specialisation": "not measurable on this model", "patching_flip": "not measured in this run",
                   "working_memory": "not measurable on this model", "self_correction": "reproduced", "pruning": "not reproduced (negligible)",
                   "perception_before_action": "not measurable on this model", "ensemble": "inconclusive at n=16",
                   "cold_start": "not measured in this run", "early_commitment": "not measured in this run",
                   "decided_at": "reproduced"}
    assert page.count("<img class=thumb src=\"data:image/png;base64,") == len(cards)  # every card draws its figure
    # a probe that ran but cannot show the effect on this task says why, rather than "not measured"
    assert "copying: the markers are in the conditioning" in page
    assert "the scene is given" in page and "fewer than one per third" in page  # perception before action: the scene is in the conditioning frame
    assert "+30.0 points [15.0, 45.0], n=40" in page  # Chain-of-Steps: model minus its null, in points
    assert "+91.7 points [75.0, 100.0], n=24" in page  # a difference of rates, in points
    assert page.count('class="card viewer"') == 1  # the cos stage's viewer moved to the top, not repeated
    assert "How a verdict is decided" in page and "steplens probe perturb --n 4 --out RUN" in page


def test_demo_report_shows_labels_not_keys(tmp_path):
    from fixtures_report import make_findings_demo

    page = build_report(make_findings_demo(tmp_path / "demo")).read_text()
    shown = _default_view(page)
    for key in ("off_solution_mass_early_minus_late", "first_minus_last_injection", "blocks.3.resid_post", "step_minus_frame_drop",
                "diff_vs_single", "worst_frame_before_answer"):
        assert key not in shown, key
        assert key in page.replace("<wbr>", ""), key  # ... but one click away, in "all values"
    assert "1 - CKA at the end after the earliest minus the latest injection, renoise, block 3 output" in shown
    assert "solve-rate drop, block 1 skipped" in shown and "ensemble minus one seed (Newcombe paired CI)" in shown
    # a held-out rate with no CI is shown with the Wilson interval of its own n (12, not the run's 24), inside [0, 100]%
    row = re.search(r"renoise: solve rate after noise on that frame \(held-out half\)</th><td class=v>([^<]+)<", shown).group(1)
    lo, hi = (float(x) for x in re.search(r"\[([\d.]+), ([\d.]+)\]", row).groups())
    assert row.startswith("91.7%") and 0 <= lo < 91.7 < hi <= 100 and [round(lo / 100, 3), round(hi / 100, 3)] == [0.646, 0.985]
    assert "renoise: worst injection step (chosen on the calibration half)" in shown
    assert "most important block (largest skip drop on the calibration half)" in shown
    assert "solve-rate drop when it is skipped (held-out half)" in shown
    # per-sample figure series: the first is shown, the others folded away
    assert shown.count("<h3>Chain-of-Steps strip, s0</h3>") == 1 and "Chain-of-Steps strip, s1" not in shown
    assert "2 more figures (Chain-of-Steps strip)" in page


def test_quick_banner_is_shown(tmp_path):
    from fixtures_report import make_findings_demo

    page = build_report(make_findings_demo(tmp_path / "demo", banner="verdicts are not meaningful at this size")).read_text()
    assert page.index("<p class=banner>verdicts are not meaningful at this size") < page.index("<div class=fcards>")


def test_labelled_rows_expand_and_skip():
    from steplens.report.story import labelled_rows

    rows = dict(labelled_rows("probe-layers", {"n": 4, "skip_drop": {"0": {"drop": 0.5, "ci95": [0.25, 0.75]}, "1": {"drop": None}},
                                               "patch_flip_layer": None}))
    assert rows == {"samples": "4", "solve-rate drop, block 0 skipped": "50.0 points [25.0, 75.0]"}
    assert labelled_rows("probe-unknown", {"n": 4}) == []
