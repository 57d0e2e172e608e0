"""Video/image I/O: round trips through real H.264, frame folders, GIFs, and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steplens.io import MediaError, read_png, read_video, write_png, write_video
from steplens.tasks import TaskInputError, get_task


@pytest.fixture(scope="module")
def maze():
    task = get_task("maze")
    return task, task.generate(7)


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("cell_px", [8, 7])  # 7: odd frame sizes are padded for H.264, then cropped back
def test_mp4_round_trip_scores_ground_truth(tmp_path, maze, cell_px):
    task, inst = maze
    inst = task.generate(inst.seed, cell_px=cell_px)
    video = task.render(inst)
    write_video(tmp_path / "gt.mp4", video)
    back = read_video(tmp_path / "gt.mp4")
    assert back.shape == video.shape and back.dtype == np.uint8
    # lossy, but every block's core still maps onto the same palette colour
    s = task.score(inst, back)
    assert s.success and s.score == 1.0
    assert _leftovers(tmp_path) == ["gt.mp4"]


def test_png_round_trip_is_exact(tmp_path):
    frame = np.random.default_rng(0).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    write_png(tmp_path / "f.png", frame)
    assert np.array_equal(read_png(tmp_path / "f.png"), frame)


def test_frame_folder_sorted_naturally(tmp_path):
    frames = [np.full((4, 6, 3), 10 * i, dtype=np.uint8) for i in range(12)]
    for i, f in enumerate(frames):
        write_png(tmp_path / f"frame_{i}.png", f)  # unpadded names: 10 must come after 9
    assert np.array_equal(read_video(tmp_path), np.stack(frames))


def test_gif(tmp_path):
    from PIL import Image

    frames = [np.full((6, 6, 3), c, dtype=np.uint8) for c in ((255, 0, 0), (0, 0, 255))]
    imgs = [Image.fromarray(f) for f in frames]
    imgs[0].save(tmp_path / "v.gif", save_all=True, append_images=imgs[1:])
    back = read_video(tmp_path / "v.gif")
    assert back.shape == (2, 6, 6, 3) and np.array_equal(back, np.stack(frames))


def test_truncated_mp4(tmp_path, maze):
    task, inst = maze
    write_video(tmp_path / "v.mp4", task.render(inst))
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"t\.mp4"):
        read_video(tmp_path / "t.mp4")


def test_garbage_mp4_and_corrupt_png(tmp_path):
    (tmp_path / "g.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(MediaError, match=r"g\.mp4"):
        read_video(tmp_path / "g.mp4")
    write_png(tmp_path / "ok.png", np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"bad\.png: cannot decode"):
        read_png(tmp_path / "bad.png")
    assert isinstance(MediaError("x"), TaskInputError)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no PNG frames"):
        read_video(tmp_path / "empty")


def test_frame_folder_mixed_sizes(tmp_path):
    write_png(tmp_path / "0.png", np.zeros((4, 4, 3), np.uint8))
    write_png(tmp_path / "1.png", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(MediaError, match=r"1\.png: frame size"):
        read_video(tmp_path)


def test_bad_frames_rejected_before_writing(tmp_path):
    with pytest.raises(TaskInputError):
        write_video(tmp_path / "v.mp4", np.zeros((2, 8, 8), np.float32))
    assert _leftovers(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path, maze, monkeypatch):
    task, inst = maze
    write_video(tmp_path / "v.mp4", task.render(inst))
    before = (tmp_path / "v.mp4").read_bytes()

    import av

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", boom)  # fail after the container is open
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(tmp_path / "v.mp4", task.render(inst))
    with pytest.raises(RuntimeError, match="disk full"):
        write_video(tmp_path / "new.mp4", task.render(inst))
    assert _leftovers(tmp_path) == ["v.mp4"]  # no temp files, no new file, old file intact
    assert (tmp_path / "v.mp4").read_bytes() == before
