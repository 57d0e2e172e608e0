"""Linear CKA, plain and debiased, in feature space: O(n d) memory, never an n x n Gram matrix.

For representations X (n, d1) and Y (n, d2) of the same n tokens (or samples):
    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  K = X X^T, L = Y Y^T.
With centred features the biased HSIC is ||Y^T X||_F^2 (Kornblith et al. 2019). The debiased
estimator uses the unbiased HSIC of Song et al. (2012), rewritten with row norms and column sums:
    tr(K~ L~)     = ||X^T Y||_F^2 - sum_i |x_i|^2 |y_i|^2
    1^T K~ 1      = |sum_i x_i|^2 - sum_i |x_i|^2
    1^T K~ L~ 1   = sum_j (x_j . s_x - |x_j|^2) (y_j . s_y - |y_j|^2)
where K~ is K with a zeroed diagonal and s_x = sum_i x_i.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 1:
        x = x[:, None]
    return x.reshape(x.shape[0], -1).double()


def _hsic_biased(x: Tensor, y: Tensor) -> Tensor:
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    return (y.T @ x).pow(2).sum()


def _hsic_unbiased(x: Tensor, y: Tensor) -> Tensor:
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 rows, got {n}")
    nx, ny = x.pow(2).sum(1), y.pow(2).sum(1)  # (n,) row norms = Gram diagonals
    sx, sy = x.sum(0), y.sum(0)
    tr = (x.T @ y).pow(2).sum() - (nx * ny).sum()
    kx1 = x @ sx - nx  # K~ 1
    ly1 = y @ sy - ny  # L~ 1
    one_k_one, one_l_one = kx1.sum(), ly1.sum()
    return (tr + one_k_one * one_l_one / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (kx1 * ly1).sum()) / (n * (n - 3))


def linear_cka(x: Tensor, y: Tensor, *, debiased: bool = False) -> float:
    """Linear CKA between two representations of the same rows (n, ...) -> scalar in [0, 1] (debiased: can dip below 0)."""
    x, y = _flat(x), _flat(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    h = _hsic_unbiased if debiased else _hsic_biased
    xy, xx, yy = h(x, y), h(x, x), h(y, y)
    den = torch.sqrt(xx.clamp_min(0) * yy.clamp_min(0))
    if den <= 0:
        return float("nan")
    return float(xy / den)


def cka_gram(x: Tensor, y: Tensor, *, debiased: bool = False) -> float:
    """Reference implementation through n x n Gram matrices (for tests on small n only)."""
    x, y = _flat(x), _flat(y)
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    if not debiased:
        h = torch.eye(n, dtype=x.dtype) - 1.0 / n
        kc, lc = h @ k @ h, h @ l @ h
        return float((kc * lc).sum() / torch.sqrt((kc * kc).sum() * (lc * lc).sum()))

    def hsic_u(a: Tensor, b: Tensor) -> Tensor:
        a = a - torch.diag(torch.diag(a))
        b = b - torch.diag(torch.diag(b))
        one = torch.ones(n, dtype=a.dtype)
        return (torch.trace(a @ b) + (one @ a @ one) * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (one @ a @ b @ one)) / (n * (n - 3))

    return float(hsic_u(k, l) / torch.sqrt(hsic_u(k, k) * hsic_u(l, l)))


def cka_matrix(xs: list[Tensor], ys: list[Tensor] | None = None, *, debiased: bool = False) -> Tensor:
    """Pairwise CKA between two lists of representations (e.g. layer x layer)."""
    ys = xs if ys is None else ys
    return torch.tensor([[linear_cka(a, b, debiased=debiased) for b in ys] for a in xs])
