"""Stand-in denoisers whose behaviour is known by construction, for testing what the probes measure.

- `ScriptedDenoiser`: its clean estimate x0_hat at step s is exactly `script(task, inst, s)`, a block video;
  so a test writes down the Chain-of-Steps (commit to a wrong answer then switch, superimpose candidates then
  prune, remember or copy) and checks the probe reads it back.
- `LayeredToy`: a "transformer" whose stream is the clean estimate itself: it starts at zero, block `k` writes
  the instance's solution into it (reading the conditioning, as a cross-attention would), every other block is
  the identity; the output head reads the stream. Patching block L's output from a donor flips the answer iff
  L >= k; patching what a block writes flips it iff L == k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from steplens.context import current_call
from steplens.models.dit import BlockCodec
from steplens.models.protocol import Cond, DenoiserBase, Prediction

Script = Callable[[Any, Any, int], np.ndarray]  # (task, instance, step) -> (T, Hb, Wb, 3) uint8 block video


class _Registry(DenoiserBase):
    """Instances seen by make_cond, addressed through cond.extra["row"] (so batches can be permuted)."""

    n_frames = 4
    device = torch.device("cpu")  # no parameters to ask

    def __init__(self, tasks: Sequence[str] = ("maze",)):
        self.tasks = tuple(tasks)
        self.rows: list[tuple[Any, Any]] = []

    def encode(self, blocks: np.ndarray) -> Tensor:
        return BlockCodec.encode_blocks(blocks)

    def decode(self, latents: Tensor) -> np.ndarray:
        return BlockCodec.decode(latents)

    def make_cond(self, first: Tensor, task: Any, instances: Sequence[Any]) -> Cond:
        if task.name not in self.tasks:
            raise ValueError(f"stand-in not made for task {task.name!r}")
        start = len(self.rows)
        self.rows += [(task, i) for i in instances]
        return Cond(image=first, extra={"row": torch.arange(start, start + len(instances))})

    def _videos(self, cond: Cond, fn: Callable[[Any, Any], np.ndarray]) -> Tensor:
        return self.encode(np.stack([fn(*self.rows[int(r)]) for r in cond.extra["row"]]))


class ScriptedDenoiser(_Registry):
    """x0_hat at step s is `script(task, inst, s)`: v = (x - x0) / sigma."""

    name = "scripted"

    def __init__(self, script: Script, tasks: Sequence[str] = ("maze",)):
        super().__init__(tasks)
        self.script = script

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        step = current_call().step
        x0 = self._videos(cond, lambda task, inst: self.script(task, inst, step))
        return Prediction((x - x0) / sigma.reshape(-1, 1, 1, 1, 1))


class _Write(nn.Module):
    """What a block adds to the stream: the instance's solution minus the stream (reasoning), or nothing."""

    def __init__(self, active: bool):
        super().__init__()
        self.active = active

    def forward(self, x: Tensor, answer: Tensor) -> Tensor:
        return answer - x if self.active else torch.zeros_like(x)


class _Block(nn.Module):
    def __init__(self, active: bool):
        super().__init__()
        self.attn = _Write(active)
        self.mlp = _Write(False)

    def forward(self, x: Tensor, answer: Tensor) -> Tensor:
        x = x + self.attn(x, answer)
        return x + self.mlp(x, answer)


class LayeredToy(_Registry):
    """`depth` blocks; block `k` writes the solution (see module doc). Tokens: (B, F*H*W, 3) latent pixels."""

    name = "layered-toy"
    hidden_dim = 3

    def __init__(self, depth: int = 3, k: int = 1, tasks: Sequence[str] = ("maze",)):
        super().__init__(tasks)
        self.blocks = nn.ModuleList(_Block(i == k) for i in range(depth))

    def hook_blocks(self) -> Sequence[nn.Module]:
        return list(self.blocks)

    def hook_sites(self) -> dict[str, str]:
        return {"attn_out": "attn", "mlp_out": "mlp"}

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        b, c, f, h, w = x.shape
        answer = self._videos(cond, lambda task, inst: task.blocks(inst)).permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # (B, N, C)
        tok = torch.zeros_like(answer)
        for blk in self.blocks:
            tok = blk(tok, answer)
        x0 = self.reimpose(tok.reshape(b, f, h, w, c).permute(0, 4, 1, 2, 3), cond)
        return Prediction((x - x0) / sigma.reshape(-1, 1, 1, 1, 1))
