"""[smooth]: randomized-smoothing certification settings (Cohen et al. 2019; Song's thesis, ch. 2 and 5).

Registered as a recipe section, so `edgerobust smooth`, the pipeline's `smooth` step and a recipe's [smooth] table
read one definition; the defaults are Cohen et al.'s (n0 = 100, n = 100,000, α = 0.001).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import SECTIONS, ConfigError, register_section, setting

DEFAULT_RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]


@dataclass
class SmoothConfig:
    """[smooth]: PREDICT/CERTIFY of the Gaussian-smoothed classifier on the first points of the test split."""
    sigma: float = setting(0.25, gt=0, grid=True, help="noise standard deviation σ in [0,1] pixels (a list: several)")
    alpha: float = setting(0.001, gt=0, lt=1, help="failure probability α of each certificate")
    n0: int = setting(100, ge=1, help="selection samples per point")
    n: int = setting(100_000, ge=1, help="estimation samples per point")
    batch: int = setting(1000, ge=1, help="noisy samples per forward pass")
    seed: int = setting(0, ge=0, lt=2**63, help="noise seed (streams keyed by seed, point and phase)")
    points: int = setting(100, ge=1, help="test points to certify")
    start: int = setting(0, ge=0, help="first test point (shards: --start/--count)")
    count: int | None = setting(None, ge=1, help="points of this shard (default: to the end of --points)")
    runtime: str = setting("torch-cpu", help="torch-cpu, torch-cuda, ort-cpu, ort-cuda, ...")
    precision: str = setting("fp32", choices=("fp32", "fp16", "int8"), help="the artifact's precision")
    threads: int = setting(0, ge=0, help="CPU threads of the runtime (0 = its default)")
    radii: list[float] = setting(list(DEFAULT_RADII), help="L2 radii of the certified-accuracy table")
    predict: bool = setting(False, help="also run PREDICT (its own noise stream)")

    def check(self, label: Callable[[str], str] = "[smooth] {}".format) -> None:
        if not self.radii:
            raise ConfigError(f"{label('radii')} is empty; give at least one radius")
        for i, r in enumerate(self.radii):
            if r < 0:
                raise ConfigError(f"{label('radii')}[{i}] = {r!r} must be at least 0")
        if self.start >= self.points:
            raise ConfigError(f"{label('start')} = {self.start} must be below points = {self.points}")


if "smooth" not in SECTIONS:
    register_section("smooth", SmoothConfig)
