
import pytest

from steplens.report.html import ReportError, build_report
from report_fixture import make_run


def test_report_is_self_contained_and_escaped(tmp_path):
    d = make_run(tmp_path, caption="<script>alert(1)</script>")
    html = build_report(d).read_text()
    assert html.count("data:image/png;base64,") >= 4  # the plot and three steps
    assert "data:image/gif;base64," in html
    assert "steplens probe cos --out run" in html and "0.812" in html and "[0.7, 0.9]" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "of &lt;b&gt;text&lt;/b&gt;" in html
    assert "src=\"http" not in html and "cdn" not in html.lower()  # no external resources


def test_parent_folder_gets_a_section_per_run(tmp_path):
    make_run(tmp_path, "first")
    make_run(tmp_path, "second")
    html = build_report(tmp_path, tmp_path / "r.html").read_text()
    assert 'href="#first"' in html and 'id="second"' in html


def test_bad_folders_are_named(tmp_path):
    d = make_run(tmp_path)
    (d / "plot.png").unlink()
    with pytest.raises(ReportError, match="plot.png"):
        build_report(d)
    (d / "figures.json").write_text("{oops")
    with pytest.raises(ReportError, match="figures.json"):
        build_report(d)
    with pytest.raises(ReportError, match="not a steplens run"):
        build_report(tmp_path / "run" / "steps")


def test_cli_report(tmp_path):
    from typer.testing import CliRunner

    from steplens.cli import app

    d = make_run(tmp_path)
    r = CliRunner().invoke(app, ["report", str(d)])
    assert r.exit_code == 0 and (d / "report.html").exists()
    r = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "not a folder" in r.output
