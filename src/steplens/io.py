"""Video and image I/O: mp4 (H.264 via PyAV), PNG frames, frame folders and GIFs, as (T, H, W, 3) uint8.

Every write is atomic (a temporary name in the same folder, then `os.replace`), so a crash never
leaves half a file under the final name. Every read failure raises `MediaError` naming the file.

Odd frame sizes: H.264 in yuv420p needs even width and height. `write_video` pads odd frames with
black at the bottom/right and records the true size in the mp4's `comment` tag; `read_video` crops
the padding off again, so the pixel-to-block mapping of a written video is unchanged.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .tasks.base import TaskInputError, check_frames

IMAGE_SUFFIXES = (".png",)
_SIZE_TAG = re.compile(r"steplens-size=(\d+)x(\d+)")


class MediaError(TaskInputError):
    """A video or image that cannot be read or written; the message names the file and the problem."""


# -- images -------------------------------------------------------------------------------------
def write_png(path: str | Path, frame: np.ndarray) -> None:
    """Atomically write one (H, W, 3) uint8 frame as a PNG."""
    from PIL import Image

    frame = check_frames(frame)
    if frame.shape[0] != 1:
        raise TaskInputError(f"write_png takes one (H, W, 3) frame, got {frame.shape[0]} frames")
    with _atomic_path(path) as tmp:
        Image.fromarray(frame[0]).save(tmp, format="PNG")


def read_png(path: str | Path) -> np.ndarray:
    """One image as (H, W, 3) uint8 RGB (grey, palette and alpha images are converted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode image ({e})") from e


# -- videos -------------------------------------------------------------------------------------
def write_video(path: str | Path, frames: np.ndarray, *, fps: int = 8, crf: int = 17) -> None:
    """Atomically write (T, H, W, 3) uint8 frames as an H.264 yuv420p mp4 (odd sizes padded, see module doc)."""
    import av

    frames = check_frames(frames)
    t, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        padded = np.zeros((t, ph, pw, 3), dtype=np.uint8)
        padded[:, :h, :w] = frames
        frames = padded
    with _atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            container.metadata["comment"] = f"steplens-size={h}x{w}"
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            stream.options = {"crf": str(crf)}
            for i, f in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(f, format="rgb24")
                vf.pts = i  # explicit timestamps (the muxer would otherwise guess them)
                for packet in stream.encode(vf):
                    container.mux(packet)
            for packet in stream.encode():  # flush the encoder's buffered frames
                container.mux(packet)


def read_video(path: str | Path) -> np.ndarray:
    """(T, H, W, 3) uint8 from an mp4 (or any video PyAV reads), a GIF, or a folder of PNG frames."""
    path = Path(path)
    if path.is_dir():
        return _read_frame_folder(path)
    if not path.is_file():
        raise MediaError(f"{path}: video not found")
    if path.suffix.lower() == ".gif":
        return _read_gif(path)
    return _read_av(path)


def _read_av(path: Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            size = _SIZE_TAG.fullmatch(container.metadata.get("comment", ""))
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        raise MediaError(f"{path}: video has no decodable frames (truncated?)")
    video = np.stack(frames)
    if size:  # crop the padding write_video added to reach even sizes
        h, w = int(size[1]), int(size[2])
        video = video[:, :h, :w]
    return np.ascontiguousarray(video)


def _read_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            frames = [np.asarray(f.convert("RGB"), dtype=np.uint8) for f in ImageSequence.Iterator(im)]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"{path}: cannot decode GIF ({e})") from e
    return np.stack(frames)


def _natural_key(p: Path) -> list[int | str]:
    """frame_2 before frame_10 even without zero padding."""
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def _read_frame_folder(path: Path) -> np.ndarray:
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise MediaError(f"{path}: frame folder holds no PNG frames")
    frames = [read_png(p) for p in files]
    shape = frames[0].shape
    for p, f in zip(files, frames, strict=True):
        if f.shape != shape:
            raise MediaError(f"{p}: frame size {f.shape[1]}x{f.shape[0]} differs from {files[0].name}'s {shape[1]}x{shape[0]}")
    return np.stack(frames)


# -- atomic writes ------------------------------------------------------------------------------
def temp_sibling(path: Path, *, folder: bool = False) -> Path:
    """Create a hidden, uniquely named file (or folder) beside `path`, with umask-respecting permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: cannot find a free temporary name for {path.name}")


@contextmanager
def _atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it is renamed onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = temp_sibling(path)  # not mkstemp: its 0600 mode would make shared datasets unreadable to others
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful replace
