"""VBVR folder format and folder scoring: layouts, broken samples, partial folders, atomic sample writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from steplens.io import read_png, read_video, write_png, write_video
from steplens.scoring import score_folder
from steplens.tasks import TaskInputError, get_task
from steplens.tasks import vbvr
from steplens.tasks.vbvr import SampleError, generate_set, iter_samples, read_sample, write_sample


@pytest.fixture(scope="module")
def gen4(tmp_path_factory) -> Path:
    """Four maze samples, written once; tests copy them before breaking anything."""
    out = tmp_path_factory.mktemp("gen") / "set"
    generate_set("maze", 4, 10, out, size=4, progress=False)
    return out


@pytest.fixture
def data(gen4, tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(gen4, d)
    return d


def test_sample_folder_contents(gen4):
    task = get_task("maze")
    names = sorted(p.name for p in gen4.iterdir())
    assert names == [f"maze_{i:05d}" for i in range(4)]
    s = gen4 / "maze_00002"
    assert sorted(p.name for p in s.iterdir()) == sorted(vbvr.SAMPLE_FILES)
    inst = task.generate(12, 4)  # sample i uses seed + i
    meta = json.loads((s / "meta.json").read_text())
    assert task.from_meta(meta) == inst
    video = task.render(inst)
    assert np.array_equal(read_png(s / "first_frame.png"), video[0])
    assert np.array_equal(read_png(s / "final_frame.png"), video[-1])
    assert read_video(s / "ground_truth.mp4").shape == video.shape
    assert (s / "prompt.txt").read_text().strip() == task.prompt(inst)


def test_ground_truth_scores_perfectly(gen4):
    summary = score_folder(gen4)
    assert (summary.n, summary.n_errors) == (4, 0)
    assert summary.overall.success == 1.0 and summary.overall.score == 1.0
    assert summary.per_task["maze"].n == 4
    json.dumps(summary.to_dict())
    json.dumps([r.to_dict() for r in summary.results])


def test_benchmark_layout(gen4, tmp_path):
    for split in ("train", "test"):
        shutil.copytree(gen4, tmp_path / split / "maze")
    refs = list(iter_samples(tmp_path))
    assert len(refs) == 8
    assert refs[0].rel == "test/maze/maze_00000" and refs[0].name == "maze_00000"
    summary = score_folder(tmp_path)
    assert summary.n == 8 and summary.n_errors == 0 and summary.overall.success == 1.0


def test_model_videos_dir(data, tmp_path):
    task = get_task("maze")
    vids = tmp_path / "vids"
    for ref in iter_samples(data):
        inst = read_sample(ref).inst
        video = task.render(inst)
        if ref.name.endswith("0"):
            video = video.copy()
            video[-1] = video[0]  # the unsolved puzzle as the final frame: fails
        if ref.name.endswith("1"):
            for t, f in enumerate(video):  # a frame folder instead of an mp4
                write_png(vids / ref.name / f"{t:03d}.png", f)
        else:
            write_video(vids / f"{ref.name}.mp4", video)
    summary = score_folder(data, vids)
    by = {r.sample: r for r in summary.results}
    assert summary.n_errors == 0
    assert not by["maze_00000"].success and by["maze_00000"].score == 0.0
    assert all(by[f"maze_0000{i}"].success for i in (1, 2, 3))
    assert summary.overall.success == 0.75


def test_missing_model_video_is_an_error(data, tmp_path):
    (tmp_path / "vids").mkdir()
    summary = score_folder(data, tmp_path / "vids")
    assert summary.n_errors == 4
    assert "no video for sample 'maze_00000'" in summary.errors[0]


def _break(d: Path, how: str) -> str:
    """Break sample maze_00001 in one way; returns a fragment the error must contain."""
    s = d / "maze_00001"
    if how == "truncated_mp4":
        data = (s / "ground_truth.mp4").read_bytes()
        (s / "ground_truth.mp4").write_bytes(data[: len(data) // 3])
        return "ground_truth.mp4"
    if how == "corrupt_png":
        (s / "first_frame.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return "first_frame.png: cannot decode"
    if how == "no_prompt":
        (s / "prompt.txt").unlink()
        return "prompt.txt: missing"
    if how == "no_meta":
        (s / "meta.json").unlink()
        return "meta.json: missing"
    if how == "bad_json":
        (s / "meta.json").write_text("{not json")
        return "meta.json: invalid JSON"
    if how == "unknown_task":
        meta = json.loads((s / "meta.json").read_text())
        (s / "meta.json").write_text(json.dumps({**meta, "task": "sudoku9"}))
        return "unknown task 'sudoku9'"
    if how == "wrong_size":
        write_png(s / "final_frame.png", np.zeros((10, 12, 3), np.uint8))
        return "final_frame.png: size 12x10"
    if how == "tiny_video":
        write_video(s / "ground_truth.mp4", np.zeros((2, 4, 4, 3), np.uint8))
        return "smaller than the"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated_mp4", "corrupt_png", "no_prompt", "no_meta", "bad_json", "unknown_task", "wrong_size", "tiny_video"])
def test_broken_sample_is_reported_and_rest_scored(data, how):
    fragment = _break(data, how)
    summary = score_folder(data)
    assert summary.n == 4 and summary.n_errors == 1
    bad = next(r for r in summary.results if r.error)
    assert bad.sample == "maze_00001" and bad.success is None
    assert fragment in bad.error and "maze_00001" in bad.error  # names the file and the problem
    assert summary.overall.success == 1.0  # the other three still scored
    assert json.dumps(bad.to_dict())


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(SampleError, match="no sample folders"):
        score_folder(tmp_path)
    with pytest.raises(SampleError, match="no such folder"):
        score_folder(tmp_path / "nope")
    assert issubclass(SampleError, TaskInputError)


def test_unknown_task_name(tmp_path):
    with pytest.raises(TaskInputError, match="unknown task 'nope'"):
        generate_set("nope", 2, 0, tmp_path, progress=False)


def test_failed_sample_write_leaves_nothing(tmp_path, monkeypatch):
    import steplens.io

    calls = {"n": 0}
    real = steplens.io.write_video

    def flaky(path, frames, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            real(path, frames, **kw)  # the file is complete on disk when the failure hits
            raise OSError("disk full")
        real(path, frames, **kw)

    monkeypatch.setattr(steplens.io, "write_video", flaky)
    with pytest.raises(OSError, match="disk full"):
        generate_set("maze", 5, 0, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maze_00000", "maze_00001"]  # no hidden temp folder either
    assert score_folder(tmp_path).n_errors == 0


def test_existing_samples_not_clobbered(gen4, tmp_path):
    out = tmp_path / "set"
    shutil.copytree(gen4, out)
    with pytest.raises(FileExistsError, match="maze_00000"):
        generate_set("maze", 2, 99, out, size=4, progress=False)
    generate_set("maze", 2, 99, out, size=4, progress=False, overwrite=True)
    assert read_sample(next(iter_samples(out))).inst.seed == 99
    assert sorted(p.name for p in out.iterdir()) == [f"maze_{i:05d}" for i in range(4)]


def test_write_sample_direct(tmp_path):
    task = get_task("maze")
    p = write_sample(tmp_path / "one", task, task.generate(1, 3))
    assert [r.rel for r in iter_samples(p)] == ["."]  # a single sample folder as the root
    assert score_folder(p).overall.success == 1.0
