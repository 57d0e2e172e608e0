"""Generator versions: version 1 reproduces the old generators, the default enlarges them, and seen-set replay uses
the version a model records (absent: 1, every shipped model)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from steplens.seen import load_seen
from steplens.tasks import get_task
from steplens.train import TrainConfig, batch_draw, drawn_keys, generator_versions, recorded_versions, train

pytestmark = pytest.mark.usefixtures("one_thread")

# Task.key of seeds 0..29, computed by the generators before version 2 existed (the code the shipped seen-sets replayed)
OLD_KEYS = {
    ('occlusion', 12): [5862158164753845989, 16141923128471628827, 2472597005881940705, 3402514974363355378, 3075792471817948155, 2472597005881940705, 9499509489277723857, 12776005015963513518, 6867997496706360179, 13818818204151646759, 6867997496706360179, 2273474204154655903, 16141923128471628827, 8048992925989760482, 5989438861536356217, 585561531579825889, 8944077556784399643, 12585219516960460502, 12694464875255809039, 1950614099041599852, 336176730805074143, 17768041405875134376, 5862158164753845989, 9021805074786363899, 1807323815862885806, 996335046796229613, 8048992925989760482, 5092564928410618053, 5590403007791084945, 9021805074786363899],
    ('occlusion', 16): [12873029825424350246, 17780803419933465413, 258605567268006728, 9077719361369250826, 216397244644846546, 17400715477098317285, 11643546891900207880, 1957145447224845790, 8600455726698145797, 1392573608957365936, 12252716457232314575, 11779557345924772210, 2555121053418542642, 6008558264433177313, 1404432546578617125, 10135894400447898208, 15102592765331442939, 6792350885080462686, 2555121053418542642, 12453625680798631760, 13719747369320941436, 3236075862487885206, 13646336734597193444, 4498568488683679146, 5837613904675264153, 15102592765331442939, 6792350885080462686, 17831088840538269121, 6008558264433177313, 6008558264433177313],
    ('shuttle', 9): [15088393223500296976, 9748292799615379107, 10677129450966494314, 6373305831170946076, 1166505016762100005, 2228103544993215635, 9329186197003444538, 17082316764602369942, 2157980975307128713, 10646535661418784444, 16629460948936778717, 6866089242318635758, 6657488463263594603, 9941815625889323306, 9775595871695499997, 2436216918520632696, 16152275015812991285, 17792248156547831207, 9390048817215497255, 13042145707016661196, 7610101744732819079, 7657728014529995315, 13240714289626061556, 13308919170572852368, 4524286465556259843, 4286319405990794336, 6568608717983516186, 7610101744732819079, 17278810570056916678, 1317630295563308235],
    ('shuttle', 13): [3695369635093402426, 2779796860410036030, 8779475474804960937, 7280139577598712379, 422165224719762775, 7947331531299225136, 12192009598798043513, 12629800262072382733, 14471933270840328042, 7994074277432586325, 11845139642763424863, 4679363247535260254, 10466695351253219114, 13089919278643940224, 939326044792681755, 5418460407730423220, 960507088349796992, 852277000092602545, 17744308218617015727, 11862654243414916604, 14216098374249587889, 2673429272935724759, 5084180806550193628, 1801002921792755965, 6690412459306427032, 10296376749910746045, 2172368427646720077, 12777878490366628707, 7769366862097531615, 14350360651677756610],
}


@pytest.mark.parametrize("name,size", sorted(OLD_KEYS))
def test_version_1_reproduces_the_old_generator(name, size):
    task = get_task(name)
    assert task.generator_version == 2
    assert [task.key(task.generate(s, size, version=1)) for s in range(30)] == OLD_KEYS[(name, size)]
    new = [task.key(task.generate(s, size)) for s in range(30)]
    assert new == [task.key(task.generate(s, size, version=2)) for s in range(30)]  # the default is the class's version
    assert not set(new) & set(OLD_KEYS[(name, size)])  # every version-2 scene has its static blocks


@pytest.mark.parametrize("name", ["occlusion", "shuttle"])
def test_version_out_of_range_is_refused(name):
    for bad in (0, 3, True, "2"):
        with pytest.raises(ValueError, match="generator version"):
            get_task(name).generate(0, version=bad)


def test_version_2_static_blocks_stay_put_and_off_the_answer():
    from steplens.tasks.occlusion import DISTRACTOR_COLORS, OCC_ROWS, ROW
    from steplens.tasks.shuttle import agent_track, l_path

    occ = get_task("occlusion")
    for s in range(30):
        inst = occ.generate(s)
        video = occ.blocks(inst)
        assert len(inst.distractors) == 3 and len({c for c, _ in inst.distractors}) == 3
        for (r, c), color in inst.distractors:
            assert color in DISTRACTOR_COLORS and r != ROW and not OCC_ROWS[0] <= r < OCC_ROWS[1]
            assert (video[:, r, c] == video[0, r, c]).all()  # static in every frame
    sh = get_task("shuttle")
    for s in range(30):
        inst = sh.generate(s)
        route = set(l_path(inst.start, inst.target)) | set(l_path(inst.target, inst.start)) | set(agent_track(inst))
        assert len(inst.pillars) == 3 and not set(inst.pillars) & route
        video = sh.blocks(inst)
        assert all((video[:, r, c] == 0).all() for r, c in inst.pillars)  # black in every frame


def _cfg(**kw):
    base = dict(preset="tiny", tasks=("occlusion", "shuttle"), sizes=(12,), task_sizes=((12,), (9,)), batch=4, steps=2,
                warmup=1, ckpt_every=2, seed=3, n_frames=4)
    base.update(kw)
    return TrainConfig(**base)


def _keys_at(cfg, steps, version):
    out = set()
    for step in range(steps):
        ti, size, seeds = batch_draw(cfg, step)
        task = get_task(cfg.tasks[ti])
        out.update(task.key(task.generate(s, size, version=version, n_frames=cfg.n_frames, cell_px=1)) for s in seeds)
    return out


def test_train_records_generator_versions_and_a_json_without_them_replays_version_1(tmp_path):
    c = _cfg()
    train(c, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["generator_versions"] == {"occlusion": 2, "shuttle": 2} == generator_versions(c.tasks)
    seen = set(load_seen(str(tmp_path / "run" / "model")).keys.tolist())
    assert seen == _keys_at(c, 2, 2) == set(drawn_keys(c, 2, recorded_versions(meta)).tolist())
    del meta["generator_versions"]  # a model json as shipped before versions were recorded
    assert recorded_versions(meta) == {}
    old = set(drawn_keys(c, 2, recorded_versions(meta)).tolist())
    assert old == _keys_at(c, 2, 1) and not old & seen


def test_a_checkpoint_without_versions_replays_version_1(tmp_path):
    import torch

    from steplens.train import init_keys

    c = _cfg()
    train(c, tmp_path / "run", progress=False)
    ck_path = tmp_path / "run" / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=True)
    assert ck["generator_versions"] == {"occlusion": 2, "shuttle": 2}
    assert set(init_keys(str(ck_path))[0].tolist()) == _keys_at(c, 2, 2)
    del ck["generator_versions"]
    torch.save(ck, ck_path)
    assert set(init_keys(str(ck_path))[0].tolist()) == _keys_at(c, 2, 1)
    from steplens.config import ConfigError

    with pytest.raises(ConfigError, match="generator versions"):  # resuming it with version 2 would mix the draws
        train(c, tmp_path / "run", progress=False)


def test_replaying_a_shipped_recipe_gives_keys_of_its_shipped_seen_set():
    """Stages up to multi8 drew version 1 (replay_seen says so per stage): the multi1 stage's first steps are all seen."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "replay_seen.py"
    spec = importlib.util.spec_from_file_location("replay_seen", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up
    spec.loader.exec_module(mod)
    assert mod.model_versions("maze") == {} and mod._above_1(mod.STAGES["multi"][-1].versions) == mod._above_1(mod.model_versions("multi"))
    st = mod.STAGES["multi"][0]
    assert st.versions == {} and st.reserve == 0
    cfg = mod.stage_config(st)
    shipped = load_seen("multi")
    assert "occlusion" in {cfg.tasks[batch_draw(cfg, s)[0]] for s in range(8)}  # steps 4 and 7 draw occlusion
    replayed = drawn_keys(cfg, 8, st.versions)
    assert len(replayed) > 100 and np.isin(replayed, shipped.keys).all()
    today = drawn_keys(cfg, 8)  # today's generators: the occlusion draws are new scenes, never seen
    assert not np.isin(today, shipped.keys).all()
