"""KAF: gradcheck in float64, the loop equals the textbook formula, fixed dictionary, C·D parameters, ridge init,
Lipschitz constants."""
from __future__ import annotations

import math

import pytest
import torch

from edgerobust.errors import EdgeRobustError
from edgerobust.models.kaf import KAF, KAFFunction, kaf_naive


def test_gradcheck_float64():
    kaf = KAF(3, size=6, bound=2.0, init="random", seed=1).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    alpha = kaf.alpha.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: KAFFunction.apply(a, b, kaf.dictionary.double(), kaf.gamma),
                                    (x, alpha))


def test_matches_a_naive_loop_and_the_textbook_formula():
    kaf = KAF(2, size=5, bound=1.5, init="random", seed=2).double()
    x = torch.randn(3, 2, 2, 3, dtype=torch.float64)
    y = kaf(x.clone().requires_grad_(True))
    by_hand = torch.empty_like(x)
    for idx in torch.cartesian_prod(*[torch.arange(n) for n in x.shape]).tolist():
        c = idx[1]
        by_hand[tuple(idx)] = sum(float(kaf.alpha.detach()[c, i]) * math.exp(-kaf.gamma * (float(x[tuple(idx)]) -
                                                                                 float(kaf.dictionary[i])) ** 2)
                                  for i in range(5))
    assert torch.allclose(y, by_hand, rtol=1e-12, atol=1e-12)
    assert torch.allclose(kaf_naive(x, kaf.alpha.double(), kaf.dictionary.double(), kaf.gamma), by_hand,
                          rtol=1e-12, atol=1e-12)
    x2 = torch.randn(4, 2, dtype=torch.float64)  # a linear layer's (N, C) input
    assert torch.allclose(kaf(x2), kaf_naive(x2, kaf.alpha.double(), kaf.dictionary.double(), kaf.gamma))


def test_dictionary_is_not_trained_and_parameters_are_c_times_d():
    kaf = KAF(7, size=20)
    assert [name for name, _ in kaf.named_parameters()] == ["alpha"]
    assert sum(p.numel() for p in kaf.parameters()) == 7 * 20
    assert "dictionary" in dict(kaf.named_buffers())
    x = torch.randn(2, 7, 3, 3)
    kaf(x).sum().backward()
    assert kaf.dictionary.grad is None and kaf.alpha.grad is not None


def test_default_bandwidth_is_the_reference_rule():
    assert KAF(1).gamma == pytest.approx(1 / (8 * (6 / 19) ** 2))
    assert KAF(1, gamma="paper").gamma == pytest.approx(1 / (6 * (6 / 19) ** 2))


def test_ridge_init_fits_elu_with_bounded_coefficients():
    kaf = KAF(1, ridge=1e-4).double()
    alpha = kaf.alpha.detach()
    assert float(alpha.abs().max()) < 100  # the reference's scalar-on-every-entry gives ~3000
    s = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64).view(-1, 1)
    with torch.no_grad():
        assert float((kaf(s) - torch.nn.functional.elu(s)).abs().max()) < 0.05
    # the scalar-on-every-entry form the reference code uses (K + λ·11ᵀ) is what makes α explode
    d = kaf.dictionary.double()
    kernel = torch.exp(-kaf.gamma * (d[:, None] - d[None, :]) ** 2)
    reference = torch.linalg.solve(kernel + 1e-4, torch.nn.functional.elu(d))
    assert float(reference.abs().max()) > 10 * float(alpha.abs().max())


def test_lipschitz_tight_below_analytic_and_above_every_slope():
    kaf = KAF(4, init="random", seed=3).double()
    tight, analytic = kaf.lipschitz_constant(), kaf.analytic_lipschitz()
    assert tight <= analytic
    s = torch.linspace(-12, 12, 48001, dtype=torch.float64).view(-1, 1).expand(-1, 4).clone().requires_grad_(True)
    slopes = torch.autograd.grad(kaf(s).sum(), s)[0]
    assert float(slopes.abs().max()) <= tight <= float(slopes.abs().max()) * 1.01


def test_bad_settings_are_clear_errors():
    for kwargs in ({"gamma": "bogus"}, {"init": "bogus"}, {"target": "bogus"}, {"ridge": 0.0}, {"size": 1}):
        with pytest.raises(EdgeRobustError, match="KAF"):
            KAF(2, **kwargs)


def test_training_keeps_at_most_twice_the_relu_networks_saved_tensors():
    from benchmarks.kaf_memory import naive_copy, saved_bytes
    from edgerobust.models import build_model

    x = torch.rand(16, 1, 8, 8)
    relu = saved_bytes(build_model("scnn2:8-16", (1, 8, 8), 10), x)
    kaf = saved_bytes(build_model("scnn2:8-16", (1, 8, 8), 10, activation="kaf"), x)
    naive = saved_bytes(naive_copy(build_model("scnn2:8-16", (1, 8, 8), 10, activation="kaf")), x)
    assert kaf <= 2 * relu < naive  # the textbook form keeps the D-times intermediate
