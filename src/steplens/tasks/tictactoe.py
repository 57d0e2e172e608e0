"""Tic-tac-toe: X (blue) to move; draw the one correct X.

The 3x3 board is drawn on (3s+2) x (3s+2) blocks for a square side of `s` blocks (the size, 2 to 5): white
squares, black grid lines between them. An X is a blue diagonal cross in its square, an O a red
ring. Positions come from random play with as many Xs as Os (X to move, nobody has won) and are kept
only if the correct move is unique: either X has exactly one winning square ("win"), or X cannot
win and O threatens exactly one square, which X must block ("block"). Two to five squares are
empty, so several placements are possible and only one is right. Frame 0 is the puzzle; later
frames draw the new X block by block; the last frame shows it complete.

Scoring (final frame only): success iff every block's nearest colour equals the expected final
board: exactly one new X, on the correct square, drawn as the X pattern, and no other change (no
extra piece, no piece removed or recoloured, no grid line broken, no off-palette block). Failure
examples: an X on another empty square, two new Xs, an O on the correct square, the unchanged
board. Partial score: IoU of the blocks that changed from frame 0 with the blocks that should.

`tictactoe_fork` is the harder variant, one rule deeper: a third of its positions have neither a win
for X nor a threat from O, and exactly one square where an X makes a fork (two different winning
squares next turn); the rest are "win" and "block" positions as above. Same drawing and scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import COLOR_INDEX, COLOR_NAMES, PALETTE_ARRAY, Score, Task, TaskInputError, classify_blocks, with_finals

BG, LINE, X, O = "white", "black", "blue", "red"
TTT_COLORS = (BG, LINE, X, O)
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
KINDS = ("win", "block")
_MAX_TRIES = 10_000
# palette index -> index into TTT_COLORS (what classify_blocks returns)
_LOCAL = np.full(len(COLOR_NAMES), -1, dtype=np.int64)
_LOCAL[[COLOR_INDEX[c] for c in TTT_COLORS]] = np.arange(len(TTT_COLORS))


@dataclass(frozen=True)
class TicTacToeInstance:
    square: int  # blocks per square side
    seed: int
    board: str  # 9 chars, row-major, 'X', 'O' or '.'
    move: int  # the correct square, 0..8 row-major
    kind: str  # "win" or "block"
    n_frames: int = 8
    cell_px: int = 8


def winning_squares(board: str, player: str) -> list[int]:
    """Empty squares where `player` completes a line."""
    out = set()
    for line in LINES:
        marks = [board[i] for i in line]
        if marks.count(player) == 2 and marks.count(".") == 1:
            out.add(line[marks.index(".")])
    return sorted(out)


def has_line(board: str, player: str) -> bool:
    return any(all(board[i] == player for i in line) for line in LINES)


def correct_move(board: str, *, forks: bool = False) -> tuple[int, str] | None:
    """The unique correct move for X and its kind, or None if there is no unique one.

    Win, else block; with `forks`, one rule deeper (tictactoe_fork): else the square that makes a fork.
    """
    wins = winning_squares(board, "X")
    if wins:
        return (wins[0], "win") if len(wins) == 1 else None
    threats = winning_squares(board, "O")
    if threats or not forks:
        return (threats[0], "block") if len(threats) == 1 else None
    made = fork_squares(board)
    return (made[0], "fork") if len(made) == 1 else None


def fork_squares(board: str) -> list[int]:
    """Empty squares where an X would leave X two (or more) different winning squares."""
    return [k for k, m in enumerate(board) if m == "." and len(winning_squares(place(board, k, "X"), "X")) >= 2]


def piece_masks(s: int) -> dict[str, np.ndarray]:
    """(s, s) bool patterns of an X (both diagonals) and an O (the ring)."""
    eye = np.eye(s, dtype=bool)
    ring = np.ones((s, s), dtype=bool)
    ring[1:-1, 1:-1] = False
    return {"X": eye | eye[:, ::-1], "O": ring}


def square_origin(k: int, s: int) -> tuple[int, int]:
    """Top-left block of square k."""
    return (k // 3) * (s + 1), (k % 3) * (s + 1)


def board_indices(board: str, s: int) -> np.ndarray:
    """(3s+2, 3s+2) palette indices of a board."""
    n = 3 * s + 2
    idx = np.full((n, n), COLOR_INDEX[BG], dtype=np.int64)
    idx[[s, 2 * s + 1], :] = COLOR_INDEX[LINE]
    idx[:, [s, 2 * s + 1]] = COLOR_INDEX[LINE]
    masks = piece_masks(s)
    for k, mark in enumerate(board):
        if mark in masks:
            r, c = square_origin(k, s)
            cell = idx[r : r + s, c : c + s]
            cell[masks[mark]] = COLOR_INDEX[X if mark == "X" else O]
    return idx


def place(board: str, k: int, mark: str) -> str:
    return board[:k] + mark + board[k + 1 :]


class TicTacToeTask(Task[TicTacToeInstance]):
    name = "tictactoe"
    instance_type = TicTacToeInstance
    default_size = 3
    sizes = (2, 3, 4, 5)
    description = "X to move: place the one X that wins, or else the one that blocks O."
    colors = TTT_COLORS
    scene_colors = (LINE, X, O)
    kinds: tuple[str, ...] = KINDS  # with "fork": the fork rule applies (correct_move's `forks`)

    def generate(self, seed: int, size: int | None = None, *, n_frames: int = 8, cell_px: int = 8, **kw: Any) -> TicTacToeInstance:
        s = self.check_generate_args(size, n_frames, kw, size_what="blocks per square")
        rng = np.random.default_rng([seed, s])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        for _ in range(_MAX_TRIES):
            n_each = int(rng.integers(2, 4))  # 2 or 3 of each: 3..5 empty squares to choose from
            order = rng.permutation(9)
            marks = ["."] * 9
            for i in order[:n_each]:
                marks[i] = "X"
            for i in order[n_each : 2 * n_each]:
                marks[i] = "O"
            board = "".join(marks)
            if has_line(board, "X") or has_line(board, "O"):
                continue
            found = correct_move(board, forks="fork" in self.kinds)
            if found is not None and found[1] == kind:
                return TicTacToeInstance(s, int(seed), board, found[0], kind, n_frames, cell_px)
        raise RuntimeError(f"{self.name}: no {kind!r} position found for seed {seed}")  # pragma: no cover

    def final_board(self, inst: TicTacToeInstance) -> str:
        return place(inst.board, inst.move, "X")

    def blocks(self, inst: TicTacToeInstance) -> np.ndarray:
        s = inst.square
        start = board_indices(inst.board, s)
        r0, c0 = square_origin(inst.move, s)
        new = [(r0 + r, c0 + c) for r, c in np.argwhere(piece_masks(s)["X"])]  # drawn in reading order
        video = np.empty((inst.n_frames, *start.shape), dtype=np.int64)
        for t in range(inst.n_frames):
            frame = start.copy()
            for p in new[: int(np.ceil(len(new) * t / (inst.n_frames - 1)))]:
                frame[p] = COLOR_INDEX[X]
            video[t] = frame
        return PALETTE_ARRAY[video]

    def prompt(self, inst: TicTacToeInstance) -> str:
        return (
            "A tic-tac-toe board: blue crosses are X, red rings are O, and it is X's turn. "
            "Draw one blue X on the empty square that wins the game for X, or, if X cannot win, the square that stops O from winning. Change nothing else."
        )

    def violations(self, inst: TicTacToeInstance) -> dict[str, np.ndarray]:
        """Named block videos whose final frame breaks the rule in one specific way (all must fail)."""
        s = inst.square
        good = self.final_board(inst)
        other = next(k for k, m in enumerate(inst.board) if m == "." and k != inst.move)
        occupied = next(k for k, m in enumerate(inst.board) if m != ".")
        finals = {
            "wrong_square": board_indices(place(inst.board, other, "X"), s),
            "extra_x": board_indices(place(good, other, "X"), s),
            "o_on_move": board_indices(place(inst.board, inst.move, "O"), s),
            "piece_removed": board_indices(place(good, occupied, "."), s),
        }
        broken = board_indices(good, s)
        broken[s, 0] = COLOR_INDEX[BG]  # a gap in the first grid line
        finals["line_broken"] = broken
        return with_finals(self.blocks(inst), finals)

    def score_blocks(self, inst: TicTacToeInstance, final: np.ndarray, video: np.ndarray) -> Score:
        n = 3 * inst.square + 2
        if final.shape[:2] != (n, n):
            raise TaskInputError(f"tictactoe square {inst.square} needs a {n}x{n} block grid, got {final.shape[:2]}")
        cls = classify_blocks(final, TTT_COLORS)
        start = _LOCAL[board_indices(inst.board, inst.square)]
        want = _LOCAL[board_indices(self.final_board(inst), inst.square)]
        changed, should = cls != start, want != start
        union = int((changed | should).sum())
        iou = float((changed & should).sum() / union) if union else 1.0
        masks = piece_masks(inst.square)
        new_x = []
        for k in range(9):
            r, c = square_origin(k, inst.square)
            cell = cls[r : r + inst.square, c : c + inst.square]
            if inst.board[k] == "." and np.array_equal(cell == TTT_COLORS.index(X), masks["X"]) and np.all(cell[~masks["X"]] == TTT_COLORS.index(BG)):
                new_x.append(k)
        details = {
            "new_x_squares": new_x,
            "correct_square": inst.move,
            "wrong_blocks": int((cls != want).sum()),
            "unclassified": int((cls < 0).sum()),
        }
        return Score(bool(np.array_equal(cls, want)), iou, details)


class TicTacToeForkTask(TicTacToeTask):
    """Tic-tac-toe one rule deeper: win, else block, else the one X that makes a fork.

    A third of the positions have no win for X and no threat from O, and exactly one empty square
    where an X leaves X two different winning squares (a fork, which O cannot block both of); the
    rest are the base task's "win" and "block" positions, so the whole priority order has to be
    applied. Same board, drawing and scorer as `tictactoe`.
    """

    name = "tictactoe_fork"
    kinds = ("win", "block", "fork")
    description = "X to move: the winning X, else the blocking X, else the one X that makes two winning threats (a fork)."

    def prompt(self, inst: TicTacToeInstance) -> str:
        return (
            "A tic-tac-toe board: blue crosses are X, red rings are O, and it is X's turn. "
            "Draw one blue X on the empty square that wins the game for X; if X cannot win, on the square that stops O from winning; "
            "if there is neither, on the square that gives X two ways to win at once. Change nothing else."
        )
