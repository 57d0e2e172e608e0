"""The reference video DiT: a small flow-matching transformer over block-grid "latent" videos.

One readable file, top to bottom (after DiT, Peebles & Xie). Choices:
- Latent space: a task's block grid. `BlockCodec` pools each `cell_px` square block to one latent
  pixel (3 channels in [-1, 1]) and decodes by nearest upsampling: an exact autoencoder on block
  videos, standing in for the VAE of real latent video models.
- Image-to-video: both ways Wan does it. The clean first latent frame is concatenated to every
  frame's channels (each token sees the puzzle at its own position), and it is re-imposed as frame
  0 of x_t after every step (`reimpose`); training matches by keeping frame 0 clean and unweighted.
- Task conditioning: a learned task embedding added to the timestep embedding (one model, several tasks).
- Full bidirectional attention over all frames and tokens; fixed 3D sin-cos positions (frame,
  row, col), so any grid size up to `max_hw` works; adaLN-Zero time conditioning; QK-RMSNorm.
- Mix-FFN: a 3x3 depthwise convolution per frame inside each MLP (local neighbourhoods for free;
  a first run without it learned mazes far more slowly on 2 CPU cores).
- Prediction: velocity, v = eps - x0, so x0_hat = x_t - t v.
Hook points (see steplens.hooks): blocks.{i}.resid_pre / resid_post / attn_out / mlp_out.

Two forwards, equal to float tolerance (tests/test_model.py compares them): under `torch.no_grad()`
and `model.fast` (the default), the inference path runs every block's and the final layer's adaLN
linear as one matmul (weights concatenated once and cached until a weight changes), folds the Mix-FFN
residual into the depthwise kernel (z + dw(z) is dw with 1 added to its centre tap) and keeps the
convolution's channels-last layout so no copy is made; with gradients on (training) or
`model.fast = False` the written-out reference forward runs. Both call the same modules, so every
hook point fires the same way on either path; attention is SDPA on both (no hook point sits inside it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from ..precision import Precision
from ..tasks.base import PALETTE_ARRAY
from .protocol import Cond, DenoiserBase, Prediction


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 3
    dim: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    patch: tuple[int, int, int] = (1, 1, 1)  # (frames, rows, cols) per token
    max_frames: int = 16
    max_hw: int = 32
    tasks: tuple[str, ...] = ("maze",)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.dim % 8:
            raise ConfigError(f"dim must be a multiple of 8 (3D sin-cos positions), got {self.dim}")
        if self.depth < 1 or any(p < 1 for p in self.patch):
            raise ConfigError("depth and patch sizes must be >= 1")
        if not self.tasks:
            raise ConfigError("a model needs at least one task")


# size presets: a name-to-factory dict that also feeds the CLI's choices
PRESETS: dict[str, Callable[..., DiTConfig]] = {
    "tiny": lambda **kw: DiTConfig(dim=32, depth=2, heads=2, **kw),  # tests
    "small": lambda **kw: DiTConfig(dim=96, depth=4, heads=4, **kw),
    "base": lambda **kw: DiTConfig(dim=128, depth=6, heads=4, **kw),  # the shipped reference model
    "large": lambda **kw: DiTConfig(dim=192, depth=8, heads=6, **kw),
}


# -- the block "autoencoder" --------------------------------------------------------------------
class BlockCodec:
    """Exact autoencoder for block videos: mean-pool each cell_px block <-> nearest upsampling."""

    @staticmethod
    def encode(frames: np.ndarray | Tensor, cell_px: int = 1) -> Tensor:
        """(B, T, H, W, 3) uint8 -> (B, 3, T, H/cell_px, W/cell_px) float32 in [-1, 1]."""
        x = torch.as_tensor(np.asarray(frames)).float()
        b, t, h, w, c = x.shape
        if h % cell_px or w % cell_px:
            raise ValueError(f"frame {h}x{w} is not a multiple of cell_px={cell_px}")
        x = x.reshape(b, t, h // cell_px, cell_px, w // cell_px, cell_px, c).mean(dim=(3, 5))
        return (x / 127.5 - 1.0).permute(0, 4, 1, 2, 3).contiguous()

    @staticmethod
    def decode(latents: Tensor, cell_px: int = 1) -> np.ndarray:
        """(B, 3, T, H, W) latents -> (B, T, H*cell_px, W*cell_px, 3) uint8 (values clamped)."""
        x = ((latents.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        x = x.permute(0, 2, 3, 4, 1).cpu().numpy()
        if cell_px > 1:
            x = np.repeat(np.repeat(x, cell_px, axis=2), cell_px, axis=3)
        return x

    @staticmethod
    def encode_blocks(blocks: np.ndarray) -> Tensor:
        """Block videos (B, T, Hb, Wb, 3) uint8 -> latents, the fast path used in training."""
        return BlockCodec.encode(blocks, 1)


# -- layers ---------------------------------------------------------------------------------------
def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one pass over x


@lru_cache(maxsize=16)
def _freqs(half: int) -> Tensor:
    return torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)


def sincos(pos: Tensor, dim: int) -> Tensor:
    """(N,) positions -> (N, dim) float32 sin-cos features (dim even)."""
    ang = pos.float()[:, None] * _freqs(dim // 2).to(pos.device)[None]
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


def pos_embed_3d(f: int, h: int, w: int, dim: int) -> Tensor:
    """(f*h*w, dim) fixed positions, tokens in (frame, row, col) row-major order."""
    d_f = (dim // 4) // 2 * 2
    d_hw = (dim - d_f) // 2 // 2 * 2
    d_f = dim - 2 * d_hw
    ff, hh, ww = torch.meshgrid(torch.arange(f), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([sincos(ff.flatten(), d_f), sincos(hh.flatten(), d_hw), sincos(ww.flatten(), d_hw)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = sincos(t.float() * 1000.0, self.freq_dim)  # (B, freq_dim) float32; t in [0, 1] scaled like DDPM steps
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (B, D)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # written out: on CPU F.rms_norm makes float32 copies of bf16 inputs; the mean accumulates in float32 anyway
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head self-attention over all tokens, written out so every part can be hooked."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, N, d_h)
        o = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)  # (B, h, N, d_h)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class Mlp(nn.Module):
    """Mix-FFN: a 3x3 depthwise convolution over each frame's token grid between the two linears.

    Attention stays global; the convolution gives every layer a cheap local neighbourhood, which
    grid puzzles (a maze is solved by local propagation) otherwise have to learn from positions.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.fast = True  # set by VideoDiT.fast

    def forward(self, x: Tensor, grid: tuple[int, int, int]) -> Tensor:
        b, n, _ = x.shape
        f, h, w = grid
        z = self.fc1(x)  # (B, N, Dh)
        if self.fast and not torch.is_grad_enabled():  # inference: z + dw(z) as one convolution, channels-last in and out (no copies)
            k = self.dw.weight.clone()
            k[:, 0, 1, 1] += 1.0
            zz = z.reshape(b * f, h, w, -1).permute(0, 3, 1, 2)  # (B*F, Dh, H, W), a channels-last view
            z = F.conv2d(zz, k, self.dw.bias, padding=1, groups=k.shape[0]).permute(0, 2, 3, 1).reshape(b, n, -1)
            return self.fc2(F.gelu(z, approximate="tanh"))
        zz = z.reshape(b * f, h, w, -1).permute(0, 3, 1, 2)  # (B*F, Dh, H, W)
        z = z + self.dw(zz).permute(0, 2, 3, 1).reshape(b, n, -1)  # (B, N, Dh)
        return self.fc2(F.gelu(z, approximate="tanh"))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: x += gate * f(modulate(norm(x)))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        # 1. attention, 2. MLP, 3. adaLN modulation from the conditioning vector
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, grid: tuple[int, int, int], mod: Tensor | None = None) -> Tensor:
        # 3. (B, 1, D) each; `mod` is this block's self.ada(c) when the caller computed every block's at once
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.ada(c) if mod is None else mod)[:, None].chunk(6, dim=-1)
        x = torch.addcmul(x, gate1, self.attn(modulate(self.norm1(x), shift1, scale1)))  # 1. x + gate1 * attn (B, N, D)
        x = torch.addcmul(x, gate2, self.mlp(modulate(self.norm2(x), shift2, scale2), grid))  # 2. (B, N, D)
        return x


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out)

    def forward(self, x: Tensor, c: Tensor, mod: Tensor | None = None) -> Tensor:
        shift, scale = (self.ada(c) if mod is None else mod)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class VideoDiT(nn.Module):
    """Velocity-predicting DiT over (B, C, F, H, W) latents, conditioned on first frame, task and t."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        pf, ph, pw = cfg.patch
        c = cfg.in_channels
        self.patch_in = nn.Linear(2 * c * pf * ph * pw, cfg.dim)  # x_t and first-frame channels per patch
        self.t_embed = TimestepEmbedder(cfg.dim)
        self.task_embed = nn.Embedding(len(cfg.tasks), cfg.dim)
        self.blocks = nn.ModuleList(DiTBlock(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(cfg.dim, c * pf * ph * pw)
        self._pos: dict[tuple, Tensor] = {}  # (grid, dtype, device) -> positions: built once, not per call
        self._ada: tuple[tuple, Tensor, Tensor] | None = None  # (weight versions, W, b) of every adaLN linear, concatenated
        self.fast = True  # inference path (see the module docstring)
        self._init_weights()

    def _init_weights(self) -> None:
        def basic(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(basic)
        nn.init.normal_(self.task_embed.weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        # adaLN-Zero: every block starts as the identity, the output as zero
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        nn.init.zeros_(self.final.ada[-1].weight)
        nn.init.zeros_(self.final.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def token_grid(self, f: int, h: int, w: int) -> tuple[int, int, int]:
        pf, ph, pw = self.cfg.patch
        if f % pf or h % ph or w % pw:
            raise ValueError(f"latent (F={f}, H={h}, W={w}) is not divisible by patch {self.cfg.patch}")
        return f // pf, h // ph, w // pw

    def pos_embed(self, grid: tuple[int, int, int], like: Tensor) -> Tensor:
        """(N, D) fixed positions of a token grid in `like`'s dtype and device, cached (not a buffer: weights unchanged)."""
        key = (grid, like.dtype, like.device)
        if key not in self._pos:
            self._pos[key] = pos_embed_3d(*grid, self.cfg.dim).to(like)
        return self._pos[key]

    @property
    def fast(self) -> bool:
        """Whether inference (no_grad) runs the fast path; False runs the reference forward everywhere."""
        return self._fast

    @fast.setter
    def fast(self, on: bool) -> None:
        self._fast = bool(on)
        for blk in self.blocks:
            blk.mlp.fast = self._fast

    def ada_all(self, cvec: Tensor) -> list[Tensor]:
        """Every block's adaLN output and the final layer's, from one matmul: [(B, 6D)] * depth + [(B, 2D)]."""
        lins = [blk.ada[-1] for blk in self.blocks] + [self.final.ada[-1]]
        key = tuple((m.weight.data_ptr(), m.weight._version, m.bias._version, m.weight.dtype) for m in lins)
        if self._ada is None or self._ada[0] != key:  # rebuilt only when a weight changed (load, cast, training step)
            self._ada = (key, torch.cat([m.weight for m in lins]), torch.cat([m.bias for m in lins]))
        out = F.linear(F.silu(cvec), self._ada[1], self._ada[2])  # (B, (6 depth + 2) D)
        return list(out.split([m.out_features for m in lins], dim=-1))

    def forward(self, x: Tensor, t: Tensor, first: Tensor, task_id: Tensor) -> Tensor:
        """Velocity in the weights' dtype; inputs of any float dtype are cast to it."""
        b, c, f, h, w = x.shape
        pf, ph, pw = self.cfg.patch
        gf, gh, gw = self.token_grid(f, h, w)
        if gf > self.cfg.max_frames or max(gh, gw) > self.cfg.max_hw:
            raise ValueError(f"token grid {gf}x{gh}x{gw} exceeds max_frames={self.cfg.max_frames}, max_hw={self.cfg.max_hw}")
        dtype = self.patch_in.weight.dtype
        z = torch.cat([x.to(dtype), first.to(dtype)[:, :, None].expand(b, c, f, h, w)], dim=1)  # (B, 2C, F, H, W)
        z = z.reshape(b, 2 * c, gf, pf, gh, ph, gw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, gf, gh, gw, 2C, pf, ph, pw)
        tok = self.patch_in(z.reshape(b, gf * gh * gw, -1))  # (B, N, D)
        tok = tok + self.pos_embed((gf, gh, gw), tok)  # (B, N, D)
        cvec = self.t_embed(t) + self.task_embed(task_id)  # (B, D)
        mods: list[Tensor | None] = [None] * (len(self.blocks) + 1)
        if self.fast and not torch.is_grad_enabled():
            mods = self.ada_all(cvec)
        for blk, mod in zip(self.blocks, mods):
            tok = blk(tok, cvec, (gf, gh, gw), mod)  # (B, N, D)
        out = self.final(tok, cvec, mods[-1])  # (B, N, C*pf*ph*pw)
        out = out.reshape(b, gf, gh, gw, c, pf, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, gf, pf, gh, ph, gw, pw)
        return out.reshape(b, c, f, h, w)


class ReferenceDenoiser(DenoiserBase):
    """The reference DiT adapted to the denoiser contract (velocity prediction, I2V, no CFG)."""

    def __init__(self, model: VideoDiT, name: str = "reference"):
        self.model = model
        self.name = name
        self.latent_channels = model.cfg.in_channels
        self.hidden_dim = model.cfg.dim

    def to_precision(self, precision: Precision | str) -> ReferenceDenoiser:
        """Cast the weights once; the network then runs in that dtype, the sampler stays float32."""
        p = Precision.of(precision)
        self.model.to(p.dtype)
        self.precision = p
        return self

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond) -> Prediction:
        if cond.image is None or cond.task_id is None:
            raise ValueError("the reference model needs cond.image (first latent frame) and cond.task_id")
        v = self.model(x, sigma, cond.image, cond.task_id)  # in the weights' dtype
        return Prediction(v.to(x.dtype))  # the sampler's dtype (float32)

    def hook_blocks(self) -> Sequence[nn.Module]:
        return list(self.model.blocks)

    def hook_sites(self) -> dict[str, str]:
        return {"attn_out": "attn", "mlp_out": "mlp"}

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        _, _, f, h, w = latent_shape
        return self.model.token_grid(f, h, w)

    def encode(self, blocks: np.ndarray) -> Tensor:
        """Block videos (B, T, Hb, Wb, 3) uint8 -> latents (B, 3, T, Hb, Wb) on the model's device."""
        return BlockCodec.encode_blocks(blocks).to(self.device)

    def decode(self, latents: Tensor) -> np.ndarray:
        """Latents -> block frames (B, T, Hb, Wb, 3) uint8 (task scorers map blocks directly)."""
        return BlockCodec.decode(latents)

    def make_cond(self, first: Tensor, task, instances) -> Cond:
        tid = torch.full((first.shape[0],), self.task_index(task.conditions_as or task.name), dtype=torch.long, device=first.device)
        return Cond(image=first, task_id=tid)

    def task_index(self, task: str) -> int:
        try:
            return self.model.cfg.tasks.index(task)
        except ValueError:
            raise ValueError(f"model {self.name!r} was not trained on task {task!r}; it knows {list(self.model.cfg.tasks)}") from None


def random_tiny(*, scale: float = 0.3, seed: int = 0, preset: str = "tiny") -> VideoDiT:
    """An untrained model whose adaLN-Zero (all-zero) weights are filled with noise, so it does real work.

    For tests and benchmarks: a freshly initialised DiT predicts exactly zero velocity.
    """
    torch.manual_seed(seed)
    model = VideoDiT(PRESETS[preset]())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def snap_to_palette(latents: Tensor) -> Tensor:
    """Latents rounded to the nearest palette colour per latent pixel (for clean viewing)."""
    pal = torch.as_tensor(PALETTE_ARRAY, dtype=torch.float32) / 127.5 - 1.0  # (P, 3)
    x = latents.movedim(1, -1)  # (..., 3)
    idx = torch.cdist(x.reshape(-1, 3).float(), pal).argmin(-1)
    return pal[idx].reshape(x.shape).movedim(-1, 1).to(latents)
