"""Song's PCA linear decomposition layer: orthonormal, non-expansive, complete, and the same under onnxruntime."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.models.pca import fit_pca

U64 = 2.0 ** -53  # float64 unit roundoff
D = 48  # 3×4×4 images


def images(seed: int, n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.01, 0.5, D, dtype=torch.float64)  # a spread of variances to threshold
    return (0.5 + torch.randn(n, D, generator=g, dtype=torch.float64) * scales).view(n, 3, 4, 4)


def test_basis_is_orthonormal_and_thresholded_by_variance():
    data = images(0)
    pca = fit_pca(data, sigma=0.25, k=5, dtype=torch.float64)
    w = pca.basis
    # SVD is backward stable: ‖VᵀV − I‖ is a small multiple of D·u (LAPACK's bound); 100·D·u is generous
    assert torch.max(torch.abs(w.T @ w - torch.eye(w.shape[1], dtype=torch.float64))).item() <= 100 * D * U64
    variance = ((data.flatten(1) - pca.mean) @ w).var(0)
    assert (variance > 0.25 ** 2 / 5).all() and 0 < w.shape[1] < D
    assert fit_pca(data, sigma=0.25, k=10, dtype=torch.float64).basis.shape[1] >= w.shape[1]  # k=10 keeps more


@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=25, deadline=None)
def test_projection_is_non_expansive(seed):
    pca = fit_pca(images(1), sigma=0.25, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 1, 3, 4, 4, generator=g, dtype=torch.float64)
    before = torch.linalg.norm(a - b).item()
    after = torch.linalg.norm(pca(a) - pca(b)).item()
    assert after <= before * (1 + 4 * D * U64) + 4 * D * U64  # an orthogonal projection, up to float64 rounding


def test_all_components_reconstruct_the_input():
    data = images(2)
    pca = fit_pca(data, sigma=0.25, components=D, dtype=torch.float64)
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64)
    # x − μ, two products of length D and the shift: each entry within a few D·u of the input's scale
    assert torch.max(torch.abs(pca(x) - x)).item() <= 8 * D * U64 * 2


def test_exports_to_standard_onnx_with_onnxruntime_parity(tmp_path):
    import onnx
    import onnxruntime as ort

    from edgerobust.bench.api import export_for_bench  # the export's own settings: checked and simplified

    pca = fit_pca(images(3).float(), sigma=0.25).eval()
    path = export_for_bench(pca, (3, 4, 4), tmp_path / "pca.onnx", 13)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops <= {"Flatten", "Reshape", "Sub", "MatMul", "Add", "Transpose", "Shape", "Constant", "Gather",
                   "Unsqueeze", "Concat"}, ops
    x = np.random.default_rng(0).random((7, 3, 4, 4), dtype=np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    # exact reference in float64 from the float32 parameters; fp32 error bound γ_n·(|μ| + |x−μ|·|W|·|Wᵀ|), n = 2D+2
    mean, w = pca.mean.double().numpy(), pca.basis.double().numpy()
    flat = x.reshape(7, -1).astype(np.float64)
    exact = mean + (flat - mean) @ w @ w.T
    u, n = 2.0 ** -24, 2 * D + 2
    bound = n * u / (1 - n * u) * (np.abs(mean) + np.abs(flat - mean) @ np.abs(w) @ np.abs(w.T) + np.abs(flat))
    assert np.all(np.abs(got.reshape(7, -1) - exact) <= bound)
