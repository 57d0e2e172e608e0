"""Tic-tac-toe: X (blue) to move; draw the one correct X.

Levels (the size) name the board and its drawing: size 10 n + s is an n x n board (n in a row wins: a full row,
column or long diagonal) drawn with squares of s blocks, on (n s + n - 1) x (n s + n - 1) blocks: 42, 43 (the
default, 15 x 15 blocks) and 44 are 4x4 boards. Sizes 2..5 keep their old meaning, the 3x3 board with s-block
squares ((3s+2) x (3s+2) blocks); the 3x3 board has 5,478 legal positions in all, so those levels are memorisable
(`tasks audit --leakage`). Generator version 2 (the default) added the 4x4 levels; `generate(..., version=1)` is
the old generator (sizes 2..5 only, default 3), whose draws version 2 repeats at those sizes.

White squares, black grid lines between them. An X is a blue diagonal cross in its square, an O a red
ring. Positions come from random play with as many Xs as Os (X to move, nobody has won) and are kept
only if the correct move is unique: either X has exactly one winning square ("win"), or X cannot
win and O threatens exactly one square, which X must block ("block"). Three or five squares are
empty on the 3x3 board (2 or 3 of each piece), four to ten on the 4x4 board (3 to 6 of each), so several
placements are possible and only one is right. Frame 0 is the puzzle; later frames draw the new X block by
block; the last frame shows it complete.

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
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from .base import COLOR_INDEX, COLOR_NAMES, PALETTE_ARRAY, Score, Task, TaskInputError, classify_blocks, with_finals

BG, LINE, X, O = "white", "black", "blue", "red"
TTT_COLORS = (BG, LINE, X, O)
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))  # the 3x3 board's
KINDS = ("win", "block")
OLD_SIZES = (2, 3, 4, 5)  # generator version 1: the 3x3 board, square side s
BOARD_SIZES = (42, 43, 44)  # version 2 adds 10 n + s: the n x n board, square side s
PIECES_EACH = {3: (2, 3), 4: (3, 6)}  # board side -> (fewest, most) pieces of each player
_MAX_TRIES = 10_000
# palette index -> index into TTT_COLORS (what classify_blocks returns)
_LOCAL = np.full(len(COLOR_NAMES), -1, dtype=np.int64)
_LOCAL[[COLOR_INDEX[c] for c in TTT_COLORS]] = np.arange(len(TTT_COLORS))


@dataclass(frozen=True)
class TicTacToeInstance:
    square: int  # blocks per square side
    seed: int
    board: str  # n*n chars (9: the 3x3 board, 16: 4x4), row-major, 'X', 'O' or '.'
    move: int  # the correct square, 0..n*n-1 row-major
    kind: str  # "win" or "block"
    n_frames: int = 8
    cell_px: int = 8


def board_side(board: str) -> int:
    """The side n of an n x n board string."""
    n = int(round(len(board) ** 0.5))
    if n * n != len(board) or n < 3:
        raise ValueError(f"a tic-tac-toe board has n*n squares (n >= 3), got {len(board)}")
    return n


@lru_cache(maxsize=None)
def board_lines(n: int) -> tuple[tuple[int, ...], ...]:
    """The winning lines of the n x n board: every row, every column and the two long diagonals (n in a row)."""
    rows = [tuple(range(r * n, r * n + n)) for r in range(n)]
    cols = [tuple(range(c, n * n, n)) for c in range(n)]
    return (*rows, *cols, tuple(i * (n + 1) for i in range(n)), tuple((i + 1) * (n - 1) for i in range(n)))


def parse_size(size: int) -> tuple[int, int]:
    """A level's (board side n, square side s): 2..5 -> (3, s); 10 n + s -> (n, s)."""
    return (3, size) if size in OLD_SIZES else divmod(size, 10)


def winning_squares(board: str, player: str) -> list[int]:
    """Empty squares where `player` completes a line."""
    out = set()
    for line in board_lines(board_side(board)):
        marks = [board[i] for i in line]
        if marks.count(player) == len(line) - 1 and marks.count(".") == 1:
            out.add(line[marks.index(".")])
    return sorted(out)


def has_line(board: str, player: str) -> bool:
    return any(all(board[i] == player for i in line) for line in board_lines(board_side(board)))


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


def square_origin(k: int, s: int, n: int = 3) -> tuple[int, int]:
    """Top-left block of square k of the n x n board."""
    return (k // n) * (s + 1), (k % n) * (s + 1)


def grid_side(n: int, s: int) -> int:
    """Blocks per side of the n x n board with s-block squares."""
    return n * s + n - 1


def board_indices(board: str, s: int) -> np.ndarray:
    """(n s + n - 1)-square palette indices of an n x n board (3x3: 3s+2)."""
    n = board_side(board)
    idx = np.full((grid_side(n, s),) * 2, COLOR_INDEX[BG], dtype=np.int64)
    gaps = [i * (s + 1) - 1 for i in range(1, n)]
    idx[gaps, :] = COLOR_INDEX[LINE]
    idx[:, gaps] = COLOR_INDEX[LINE]
    masks = piece_masks(s)
    for k, mark in enumerate(board):
        if mark in masks:
            r, c = square_origin(k, s, n)
            cell = idx[r : r + s, c : c + s]
            cell[masks[mark]] = COLOR_INDEX[X if mark == "X" else O]
    return idx


def _board_words(inst: TicTacToeInstance) -> str:
    """'' for the 3x3 board (its prompt as before), else ' (4x4, four in a row wins: a full row, column or diagonal)'."""
    n = board_side(inst.board)
    return "" if n == 3 else f" ({n}x{n}, {n} in a row wins: a full row, column or diagonal)"


def place(board: str, k: int, mark: str) -> str:
    return board[:k] + mark + board[k + 1 :]


class TicTacToeTask(Task[TicTacToeInstance]):
    name = "tictactoe"
    instance_type = TicTacToeInstance
    default_size = 43
    sizes = (*OLD_SIZES, *BOARD_SIZES)
    generator_version: ClassVar[int] = 2
    description = ("X to move: place the one X that wins, or else the one that blocks O. "
                   "Size 10n+s: n x n board, s-block squares (42-44: 4x4); 2..5: the 3x3 board's s (memorisable).")
    colors = TTT_COLORS
    scene_colors = (LINE, X, O)
    background = BG
    kinds: tuple[str, ...] = KINDS  # with "fork": the fork rule applies (correct_move's `forks`)

    def generate(self, seed: int, size: int | None = None, *, version: int | None = None, n_frames: int = 8, cell_px: int = 8,
                 **kw: Any) -> TicTacToeInstance:
        """`version` 1: the old generator (3x3 boards only, sizes 2..5, default 3); 2 (default): also the 4x4 boards."""
        version = self.check_version(version)
        if version == 1:
            if size is None:
                size = 3
            elif size not in OLD_SIZES:
                raise ValueError(f"{self.name} generator version 1 has sizes 2..5 (the 3x3 board), got {size!r}")
        level = self.check_generate_args(size, n_frames, kw, size_what="10 x board side + blocks per square, or 2..5: 3x3")
        n, s = parse_size(level)
        lo, hi = PIECES_EACH[n]
        rng = np.random.default_rng([seed, level])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        for _ in range(_MAX_TRIES):
            n_each = int(rng.integers(lo, hi + 1))  # 3x3: 2 or 3 of each, 3..5 empty squares to choose from; 4x4: 3..6, 4..10 empty
            order = rng.permutation(n * n)
            marks = ["."] * (n * n)
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
        r0, c0 = square_origin(inst.move, s, board_side(inst.board))
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
            f"A tic-tac-toe board{_board_words(inst)}: blue crosses are X, red rings are O, and it is X's turn. "
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
        side = board_side(inst.board)
        n = grid_side(side, inst.square)
        if final.shape[:2] != (n, n):
            raise TaskInputError(f"tictactoe {side}x{side} board, square {inst.square} needs a {n}x{n} block grid, got {final.shape[:2]}")
        cls = classify_blocks(final, TTT_COLORS)
        start = _LOCAL[board_indices(inst.board, inst.square)]
        want = _LOCAL[board_indices(self.final_board(inst), inst.square)]
        changed, should = cls != start, want != start
        union = int((changed | should).sum())
        iou = float((changed & should).sum() / union) if union else 1.0
        masks = piece_masks(inst.square)
        new_x = []
        for k in range(side * side):
            r, c = square_origin(k, inst.square, side)
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
    applied, on every level (the 3x3 and the 4x4 boards). Same boards, sizes, drawing and scorer as `tictactoe`.
    """

    name = "tictactoe_fork"
    kinds = ("win", "block", "fork")
    description = ("X to move: the winning X, else the blocking X, else the one X that makes two winning threats (a fork). "
                   "Sizes as tictactoe's (43: 4x4 board).")

    def prompt(self, inst: TicTacToeInstance) -> str:
        return (
            f"A tic-tac-toe board{_board_words(inst)}: blue crosses are X, red rings are O, and it is X's turn. "
            "Draw one blue X on the empty square that wins the game for X; if X cannot win, on the square that stops O from winning; "
            "if there is neither, on the square that gives X two ways to win at once. Change nothing else."
        )
