"""Song's PCA linear decomposition (thesis, ch. 3): a fixed first layer x ↦ μ + (x − μ)·W·Wᵀ that keeps the principal
components of the training images whose variance exceeds σ²/k (k = 5 in the text, 10 in the ablation).

W has orthonormal columns, so the layer is an orthogonal projection plus a shift: non-expansive in L2, and a
certificate of radius R for the smoothed classifier behind it holds in pixel space. It exports as Flatten, Sub, MatMul,
MatMul, Add and Reshape, standard ONNX operators every runtime has.
"""
from __future__ import annotations

import torch
from torch import nn


class PCAProjection(nn.Module):
    """x (N, C, H, W) ↦ μ + (x − μ)·W·Wᵀ per flattened image; `mean` (D,), `basis` (D, k) with orthonormal columns."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor):
        super().__init__()
        if basis.ndim != 2 or mean.shape != (basis.shape[0],):
            raise ValueError(f"PCA mean {tuple(mean.shape)} and basis {tuple(basis.shape)} do not fit")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("basis", basis.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x.flatten(1) - self.mean
        return (self.mean + (centred @ self.basis) @ self.basis.T).view_as(x)

    def extra_repr(self) -> str:
        return f"dims={self.basis.shape[0]}, components={self.basis.shape[1]}"


def fit_pca(images: torch.Tensor, sigma: float, k: float = 5.0, components: int | None = None,
            dtype: torch.dtype = torch.float32) -> PCAProjection:
    """The projection onto the components of `images` (N, C, H, W) with variance above σ²/k (or the first
    `components`), fitted in float64 by SVD of the centred data and stored in `dtype`, on the images' device."""
    if not sigma > 0 or not k > 0:
        raise ValueError(f"PCA needs σ > 0 and k > 0, got σ={sigma}, k={k}")
    data = images.flatten(1).to(torch.float64)
    mean = data.mean(0)
    _, singular, vh = torch.linalg.svd((data - mean) / max(1, len(data) - 1) ** 0.5, full_matrices=False)
    keep = int((singular ** 2 > sigma ** 2 / k).sum()) if components is None else int(components)
    keep = max(1, min(keep, vh.shape[0]))
    return PCAProjection(mean.to(dtype), vh[:keep].T.contiguous().to(dtype))
