import pytest
import torch

from steplens.probes.cka import cka_gram, cka_matrix, linear_cka


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_space_cka_matches_the_gram_formula(debiased):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 7, generator=g)
    y = x @ torch.randn(7, 5, generator=g) + 0.5 * torch.randn(40, 5, generator=g)
    assert linear_cka(x, y, debiased=debiased) == pytest.approx(cka_gram(x, y, debiased=debiased), abs=1e-9)


def test_cka_invariances_and_extremes():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert linear_cka(x, 3.0 * x @ q + 2.0) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    noise = torch.randn(200, 16, generator=g)
    assert linear_cka(x, noise) < 0.25
    assert abs(linear_cka(x, noise, debiased=True)) < 0.05  # the debiased estimator removes the small-n bias


def test_cka_matrix_is_symmetric_with_unit_diagonal():
    g = torch.Generator().manual_seed(2)
    xs = [torch.randn(30, 4, generator=g) for _ in range(3)]
    m = cka_matrix(xs)
    assert torch.allclose(m, m.T) and torch.allclose(torch.diag(m), torch.ones(3, dtype=m.dtype))


def test_large_token_counts_stay_cheap():
    x = torch.randn(50_000, 32)
    assert linear_cka(x, x[:, :16]) > 0.3  # 50k tokens: a Gram matrix would need 20 GB


def test_row_mismatch_errors():
    with pytest.raises(ValueError):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
