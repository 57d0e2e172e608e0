"""Procedural reasoning tasks as colour-block videos, with exact rule-based scorers."""

from __future__ import annotations

from .base import PALETTE, Score, Task, TaskInputError, blocks_to_frames, classify_blocks, frame_to_blocks
from .maze import MazeInstance, MazeTask

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


register(MazeTask())


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskInputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = [
    "PALETTE",
    "TASKS",
    "MazeInstance",
    "MazeTask",
    "Score",
    "Task",
    "TaskInputError",
    "blocks_to_frames",
    "classify_blocks",
    "frame_to_blocks",
    "get_task",
    "register",
]
