"""`steplens demo` on the shipped reference model: every stage, the findings, the report, and the sizes it runs at."""

import json

import pytest

from steplens.config import ConfigError
from steplens.demo import QUICK_BANNER, DemoConfig, derived, stage_commands
from steplens.findings import NOT_MEASURED, SPECS, VERDICTS


def test_quick_demo(quick_demo):
    out, code, output = quick_demo
    assert code == 0, output
    assert QUICK_BANNER in output and "Findings:" in output  # the CLI says what the verdicts are worth
    s = json.loads((out / "summary.json").read_text())
    for stage in ("cos", "behaviour", "perturb", "cka", "layers", "ensemble"):
        assert stage in s and (out / stage / "figures.json").exists(), stage
        assert s["commands"][stage].startswith("steplens "), stage
    assert s["banner"] == QUICK_BANNER and s["config"]["quick"] is True
    assert [f["id"] for f in s["findings"]] == [spec.id for spec in SPECS]
    for f in s["findings"]:
        assert set(f) >= {"id", "claim", "value", "ci95", "n", "verdict", "figure", "command"}, f["id"]
        assert any(f["verdict"].startswith(v) for v in VERDICTS), f
        if f["verdict"] != NOT_MEASURED:  # the splice card: no demo stage (steplens probe splice)
            assert (out / f["figure"]).is_file(), f  # every measured card's figure was drawn by its stage
        if f["value"] is not None:
            assert f["ci95"] is not None and f["n"] >= 2, f
    by = {f["id"]: f for f in s["findings"]}
    c = s["config"]
    assert by["chain_of_steps"]["n"] == s["cos"]["n"] == c["n_cos"] and by["noise_step_vs_frame"]["n"] == (c["n_perturb"] if c["n_perturb"] < 4 else c["n_perturb"] // 2)
    assert by["working_memory"]["verdict"] == "not measurable on this model"  # the behaviour stage says why (copying)
    assert 0.0 <= s["cos"]["solve_rate"] <= 1.0
    assert s["jobs"] in (1, 2) and set(s["timings_s"]) == {"sample", "cos", "behaviour", "perturb", "cka", "layers", "ensemble", "report"}
    html = (out / "report.html").read_text()
    assert "<section class=findings" in html and "data:image/gif;base64," in html
    assert "steplens demo" in (out / "summary.txt").read_text()
    # held out by content: the quick 4x4 mazes are all memorisable, so the quick demo says it used seen ones
    assert s["held_out"]["held_out"] == "content" and s["held_out"]["seen_set_sha256"]
    assert s["held_out"]["n_seen_in_training"] == max(c[k] for k in ("n_cos", "n_perturb", "n_cka", "n_layers", "n_ensemble"))


def test_default_sizes_are_where_the_model_reasons():
    c = DemoConfig.make()
    assert c.size == 6 and not c.quick  # ~80% single-seed solve rate on the shipped model (README), not 95% at 5x5
    q = DemoConfig.make(quick=True)
    assert q.quick and q.size < c.size and q.n_cos < c.n_cos
    assert DemoConfig.make(n_cos=100).n_cos == 100  # sample sizes are fields: raise them when sampling gets faster
    with pytest.raises(ConfigError, match="n >= 2"):
        DemoConfig(n_perturb=1, quick=True)
    with pytest.raises(ConfigError, match="batch of one"):
        DemoConfig(n_layers=33)
    with pytest.raises(ConfigError, match="cka_mode"):
        DemoConfig(cka_mode="scale")
    with pytest.raises(ConfigError, match="perturb_modes"):
        DemoConfig(perturb_modes="replace,scale")


def test_demo_config_rejects_verdict_bearing_n_below_24():
    from steplens.findings import MIN_N

    c = DemoConfig.make()
    assert min(c.stage_ns().values()) >= MIN_N == 24
    assert min(c.n_perturb, c.n_cka, c.n_layers, c.n_ensemble) >= 48  # noise, information flow, layers, ensemble
    for field in c.stage_ns():
        with pytest.raises(ConfigError, match=f"{field}=23: below 24 instances"):
            DemoConfig(**{field: 23})
        DemoConfig(**{field: 24})  # 24 is enough
    assert DemoConfig.make(quick=True).n_perturb < MIN_N  # the quick demo checks that stages run; its banner says so
    assert c.cka_shared and DemoConfig.make(quick=True).cka_shared and not DemoConfig(n_cka=24).cka_shared


def test_stage_commands_match_the_config():
    cmds = stage_commands(DemoConfig(n_cos=40, n_perturb=8, every=5, cka_mode="add", n_ensemble=16, quick=True))
    assert cmds["cos"] == "steplens probe cos --model maze --size 6 --n 40 --seed 40000 --steps 20 --batch 16 --views 4 --out RUN"
    assert "--n 8 " in cmds["perturb"] and "--every 5" in cmds["perturb"] and "--mode replace,renoise" in cmds["perturb"]
    assert "--mode add" in cmds["cka"]
    assert cmds["ensemble"].startswith("steplens ensemble run ") and "--n 16 " in cmds["ensemble"]


def test_derived_numbers(tmp_path):
    (tmp_path / "ensemble").mkdir()
    rows = [{"method": m, "seed": s, "success": ok} for s in range(10)
            for m, ok in (("single", s < 5), ("single_cold", s < 6), ("ensemble", s < 8))]
    (tmp_path / "ensemble" / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"cos": {"n_steps": 8, "commit_step": {"histogram": [5, 2, 1, 0, 0, 0, 0, 2]}},
               "layers": {"most_important_layers": [2, 0], "skip_drop": {"2": {"drop": 0.5, "ci95": [0.2, 0.8]}}}}
    d = derived(summary, tmp_path)
    assert d["early_commit"]["rate"] == 0.7 and d["early_commit"]["n"] == 10 and d["early_commit"]["by_step"] == 1
    lo, hi = d["early_commit"]["ci95"]
    assert 0 < lo < 0.7 < hi < 1  # Wilson: inside [0, 1]
    assert d["skip_drop_top"] == {"layer": 2, "drop": 0.5, "ci95": [0.2, 0.8], "n": None, "selection": "chosen in-sample"}
    held = {"layer": 1, "drop": 0.1, "ci95": [0.0, 0.2], "n": 12, "selection": "held-out"}
    assert derived({"layers": {**summary["layers"], "skip_drop_held_out": held}}, tmp_path)["skip_drop_top"] == held
    assert d["ensemble_minus_cold"]["stats"] == {"method": "paired_rates", "table": [6, 0, 2, 2]}  # exact McNemar on 2 vs 0
    assert d["ensemble_minus_cold"]["diff"] == pytest.approx(0.2) and d["ensemble_minus_cold"]["n"] == 10
    assert derived({}, tmp_path / "none") == {}


def test_jobs_must_be_one_or_two(tmp_path):
    from steplens.demo import run_demo

    with pytest.raises(ConfigError, match="jobs must be 1 or 2"):
        run_demo(tmp_path, DemoConfig.make(quick=True), jobs=3)


def test_demo_instances_are_held_out_by_content(monkeypatch):
    from steplens import seen
    from steplens.demo import demo_instances
    from steplens.tasks import get_task

    cfg = DemoConfig.make()
    held = demo_instances(cfg)  # the default 6x6 range from seed 40000 is unseen by the shipped model
    n = max(cfg.stage_ns().values())
    assert list(held.seeds) == list(range(cfg.seed, cfg.seed + n)) and held.to_dict()["n_seen_in_training"] == 0
    task = get_task("maze")
    from steplens.models.registry import load

    key = task.key(task.generate(cfg.seed + 3, cfg.size, n_frames=load("maze").n_frames, cell_px=1))
    monkeypatch.setattr(seen, "load_seen", lambda spec: seen.SeenSet(seen.unique_keys([key]), "x" * 64))
    walked = demo_instances(cfg)  # a seen instance in the range is skipped, and the walk takes one seed more
    assert list(walked.seeds) == [s for s in range(cfg.seed, cfg.seed + n + 1) if s != cfg.seed + 3]
    assert walked.to_dict()["n_skipped_seen"] == 1 and walked.to_dict()["seen_set_sha256"] == "x" * 64
    # every stage draws through the same walk: a stage of fewer instances gets a prefix of it
    from steplens.evaluate import evaluation_instances

    small = evaluation_instances(None, cfg.model, "maze", cfg.size, cfg.seed, 8)
    assert list(small.seeds) == list(walked.seeds[:8])


def test_shared_stages_equal_stages_computed_alone(tmp_path):
    """The trajectory bank (cos, behaviour, cards) and CKA read off perturb's runs give the records each stage computes alone."""
    from dataclasses import replace

    from steplens.config import to_json
    from steplens.demo import run_stages

    cfg = DemoConfig.make(quick=True)
    names = ("cos", "perturb", "cka")
    shared, t_shared = run_stages(cfg, str(tmp_path / "shared"), names, False, "cpu")
    alone, t_alone = run_stages(replace(cfg, share=False), str(tmp_path / "alone"), names, False, "cpu")
    assert "sample" in t_shared and "sample" not in t_alone  # the bank was traced once, and only when shared
    shared["perturb"].pop("cka")  # what perturb captured for CKA: the only record sharing adds
    for k in ("cos", "behaviour", "perturb"):
        assert json.loads(to_json(shared[k])) == json.loads(to_json(alone[k])), k
    # CKA read off perturb records what the findings read (fewer side tables than run_cka): those fields are equal
    a, b = json.loads(to_json(shared["cka"])), json.loads(to_json(alone["cka"]))
    common = (set(a) & set(b)) - {"shared_with"}
    assert {"cka", "n", "step_sigmas"} <= common and {k: a[k] for k in common} == {k: b[k] for k in common}
