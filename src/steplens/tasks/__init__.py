"""Procedural reasoning tasks as colour-block videos, with exact rule-based scorers."""

from __future__ import annotations

from .base import ABSENT, COMPUTABLE, IN_CONDITIONING, PALETTE, Recall, Score, Task, TaskInputError, blocks_to_frames, classify_blocks, frame_to_blocks
from .maze import MazeBraidTask, MazeInstance, MazeTask
from .occlusion import OcclusionInstance, OcclusionTask
from .rotate import RotateInstance, RotateLargeTask, RotateTask
from .shuttle import ShuttleInstance, ShuttleTask
from .shuttle_choice import ShuttleChoiceInstance, ShuttleChoiceTask
from .shuttle_near import ShuttleNearInstance, ShuttleNearTask
from .tictactoe import TicTacToeForkTask, TicTacToeInstance, TicTacToeTask

TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


register(MazeTask())
register(MazeBraidTask())
register(TicTacToeTask())
register(TicTacToeForkTask())
register(RotateTask())
register(RotateLargeTask())
register(OcclusionTask())
register(ShuttleTask())
register(ShuttleNearTask())
register(ShuttleChoiceTask())


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskInputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = [
    "ABSENT",
    "COMPUTABLE",
    "IN_CONDITIONING",
    "PALETTE",
    "TASKS",
    "MazeBraidTask",
    "MazeInstance",
    "MazeTask",
    "OcclusionInstance",
    "OcclusionTask",
    "Recall",
    "RotateInstance",
    "RotateLargeTask",
    "RotateTask",
    "Score",
    "ShuttleInstance",
    "ShuttleChoiceInstance",
    "ShuttleChoiceTask",
    "ShuttleNearInstance",
    "ShuttleNearTask",
    "ShuttleTask",
    "Task",
    "TaskInputError",
    "TicTacToeForkTask",
    "TicTacToeInstance",
    "TicTacToeTask",
    "blocks_to_frames",
    "classify_blocks",
    "frame_to_blocks",
    "get_task",
    "register",
]
