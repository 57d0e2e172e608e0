"""Layer specialisation by depth thirds: the split, the pure analysis, and a run on a small random model."""

from __future__ import annotations

from steplens.models.dit import ReferenceDenoiser, random_tiny
from steplens.models.registry import load
from steplens.probes.common import ProbeConfig
from steplens.probes.depth import analyse, run_thirds, thirds
from steplens.runner import SamplingConfig


def test_thirds_split_the_depth():
    assert thirds(2) is None
    assert thirds(3) == {"early": [0], "middle": [1], "late": [2]}
    assert thirds(6) == {"early": [0, 1], "middle": [2, 3], "late": [4, 5]}
    assert thirds(8) == {"early": [0, 1], "middle": [2, 3, 4, 5], "late": [6, 7]}


def test_analyse_reads_a_middle_that_carries_the_answer():
    # base solved; skipping the middle breaks the answer but keeps the scene; early breaks both; late changes nothing
    recs = [{"base": (1.0, 1.0), "early": (0.0, 0.0), "middle": (0.0, 1.0), "late": (1.0, 1.0)} for _ in range(10)]
    a = analyse(recs, thirds(6), (0, 20))
    assert a["middle_minus_late"]["diff"] == 1.0
    assert a["by_third"]["early"]["scene_kept"] == 0.0 and a["by_third"]["middle"]["scene_kept"] == 1.0
    lo, hi = a["by_third"]["middle"]["answer_drop_ci95"]  # Newcombe's paired interval: not the bootstrap's zero width
    assert a["by_third"]["late"]["answer_drop"] == 0.0 and 0.5 < lo < 1.0 and hi == 1.0
    assert a["middle_minus_late"]["stats"] == {"method": "paired_rates", "table": [0, 0, 10, 0]}


def test_run_thirds_on_a_small_model_and_not_on_a_control():
    cfg = ProbeConfig(model="small", size=3, n=2, seed=40_000, sampling=SamplingConfig(steps=4), batch=2)
    a = run_thirds(ReferenceDenoiser(random_tiny(preset="small")), cfg, progress=False)
    assert a["n"] == 2 and a["thirds"] == {"early": [0], "middle": [1, 2], "late": [3]} and set(a["by_third"]) == {"early", "middle", "late"}
    assert -1.0 <= a["middle_minus_late"]["diff"] <= 1.0
    control = run_thirds(load("null:shrink"), cfg, progress=False)
    assert control["n"] == 0 and control["applicable"].startswith("not measurable on this model")
