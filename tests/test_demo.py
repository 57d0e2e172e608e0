"""`steplens demo --quick` on the shipped reference model: every stage, the report and the headline numbers."""

import json

from typer.testing import CliRunner

from steplens.cli import app


def test_quick_demo(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "summary.json").read_text())
    for stage in ("cos", "behaviour", "perturb", "cka", "layers", "ensemble"):
        assert stage in s and (tmp_path / stage / "figures.json").exists(), stage
    assert 0.0 <= s["cos"]["solve_rate"] <= 1.0
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") > 10 and "data:image/gif;base64," in html
    assert "steplens demo" in (tmp_path / "summary.txt").read_text()
