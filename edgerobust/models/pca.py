"""Song's PCA linear decomposition (thesis, ch. 3): a fixed first layer x ↦ μ + (x − μ)·W·Wᵀ that keeps the principal
components of the training images whose variance exceeds σ²/k (k = 5 in the text, 10 in the ablation).

W has orthonormal columns, so the layer is an orthogonal projection plus a shift: non-expansive in L2, and a
certificate of radius R for the smoothed classifier behind it holds in pixel space. It exports as Flatten, Sub, MatMul,
MatMul, Add and Reshape, standard ONNX operators every runtime has.

A model takes it with `[model] pca = { sigma = 0.25, k = 5 }` (or `train --pca 0.25 --pca-k 5`): `train` fits it on
the training split in [0,1] pixel space (before the normalisation, where the smoothing noise is added), the run's
manifest records `model.pca` (σ, k, components kept, the split it was fitted on), and every later command rebuilds
the layer from that record and the run's weights (its mean and basis are buffers of the state dict).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import EdgeRobustError

SETTINGS = ("sigma", "k", "components")
CHUNK = 4096  # rows per block of the covariance sum: D² float64 plus one block, never the whole split in float64


class PCAProjection(nn.Module):
    """x (N, C, H, W) ↦ μ + (x − μ)·W·Wᵀ per flattened image; `mean` (D,), `basis` (D, k) with orthonormal columns."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor):
        super().__init__()
        if basis.ndim != 2 or mean.shape != (basis.shape[0],):
            raise ValueError(f"PCA mean {tuple(mean.shape)} and basis {tuple(basis.shape)} do not fit")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("basis", basis.clone())

    @classmethod
    def empty(cls, dims: int, components: int) -> PCAProjection:
        """A layer of the recorded shape whose buffers a run's state dict fills."""
        return cls(torch.zeros(dims), torch.zeros(dims, components))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x.flatten(1) - self.mean
        return (self.mean + (centred @ self.basis) @ self.basis.T).view_as(x)

    def lipschitz_constant(self) -> float:
        """An orthogonal projection: ‖P‖₂ = 1 (models/lipschitz.py reads this)."""
        return 1.0

    def extra_repr(self) -> str:
        return f"dims={self.basis.shape[0]}, components={self.basis.shape[1]}"


def fit_pca(images: torch.Tensor, sigma: float, k: float = 5.0, components: int | None = None,
            dtype: torch.dtype = torch.float32) -> PCAProjection:
    """The projection onto the components of `images` (N, C, H, W) with variance above σ²/k (or the first
    `components`), fitted in float64 on the images' device and stored in `dtype`."""
    return _fit(images, sigma, k, components, dtype)[0]


def _fit(images: torch.Tensor, sigma: float, k: float, components: int | None,
         dtype: torch.dtype) -> tuple[PCAProjection, torch.Tensor]:
    """The layer and every component's variance (descending).

    The covariance (x − μ)ᵀ(x − μ)/(N − 1) is summed in float64 blocks of `CHUNK` rows (D² memory, not N·D: a CIFAR
    training split is 1.2 GB in float64) and `eigh` gives its orthonormal eigenvectors; the eigenvalues are the
    variances along them (what the SVD of the centred data would give squared)."""
    if not sigma > 0 or not k > 0:
        raise ValueError(f"PCA needs σ > 0 and k > 0, got σ={sigma}, k={k}")
    if len(images) < 2:
        raise ValueError(f"PCA needs at least 2 images to fit, got {len(images)}")
    data = images.flatten(1)
    mean = torch.zeros(data.shape[1], dtype=torch.float64, device=data.device)
    for first in range(0, len(data), CHUNK):
        mean += data[first:first + CHUNK].to(torch.float64).sum(0)
    mean /= len(data)
    cov = torch.zeros(data.shape[1], data.shape[1], dtype=torch.float64, device=data.device)
    for first in range(0, len(data), CHUNK):
        block = data[first:first + CHUNK].to(torch.float64) - mean
        cov += block.T @ block
    cov /= len(data) - 1
    variances, vectors = torch.linalg.eigh((cov + cov.T) / 2)  # ascending; symmetrised against rounding
    variances, vectors = variances.flip(0), vectors.flip(1)
    keep = int((variances > sigma ** 2 / k).sum()) if components is None else int(components)
    keep = max(1, min(keep, vectors.shape[1]))
    return PCAProjection(mean.to(dtype), vectors[:, :keep].contiguous().to(dtype)), variances


def pca_settings(options: Any, where: str = "[model] pca") -> dict[str, Any]:
    """`{sigma, k = 5, components}` checked: σ > 0, k > 0, components a positive integer (else chosen by σ²/k)."""
    if not isinstance(options, Mapping):
        raise EdgeRobustError(f"{where} must be a table such as {{ sigma = 0.25, k = 5 }}, got {options!r}")
    stray = sorted(set(options) - set(SETTINGS))
    if stray:
        raise EdgeRobustError(f"{where}: unknown setting {', '.join(stray)}; its settings: {', '.join(SETTINGS)}")

    def positive(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise EdgeRobustError(f"{where}: {name} must be a positive number, got {value!r}")
        return float(value)

    if "sigma" not in options:
        raise EdgeRobustError(f"{where} needs sigma, the smoothing σ the components are kept for (variance above "
                              "σ²/k), e.g. {{ sigma = 0.25, k = 5 }}")
    out = {"sigma": positive("sigma", options["sigma"]), "k": positive("k", options.get("k", 5.0))}
    if options.get("components") is not None:
        count = options["components"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise EdgeRobustError(f"{where}: components must be a positive integer, got {count!r}")
        out["components"] = count
    return out


def fit_for_run(images: torch.Tensor, options: Mapping[str, Any], split: str = "train"
                ) -> tuple[PCAProjection, dict[str, Any]]:
    """The layer fitted on a training split and the record `model.pca` keeps (what rebuilds it, and how it was
    fitted): σ, k, components, dims, the split and its size, the fraction of the variance kept."""
    settings = pca_settings(options)
    layer, variances = _fit(images, settings["sigma"], settings["k"], settings.get("components"), torch.float32)
    dims, kept = layer.basis.shape
    total = float(variances.clamp_min(0).sum())
    record = {"sigma": settings["sigma"], "k": settings["k"], "components": int(kept), "dims": int(dims),
              "rule": "components" if "components" in settings else "variance > sigma^2/k",
              "fitted_on": {"split": split, "images": len(images)},
              "variance_kept": float(variances[:kept].clamp_min(0).sum()) / total if total > 0 else 1.0}
    return layer, record


def check_pca_record(record: Any, dims: int) -> str | None:
    """What is wrong with a manifest's `model.pca` for inputs of `dims` values (None: fine)."""
    if not isinstance(record, Mapping):
        return "a table (sigma, k, components, dims)"
    count, size = record.get("components"), record.get("dims")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= dims:
        return f"a table whose components is an integer from 1 to {dims}"
    if size != dims:
        return f"a table whose dims is the input's {dims} values"
    return None
