"""ImportSetup: what an import reads and records beyond the model file, passed whole to `import_weights` and
`import_onnx` (as TrainSetup is to `train_model`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset


@dataclass
class ImportSetup:
    """The dataset to measure on and record, the input the model takes when there is none, and how it was asked."""
    data: str | None = None  # dataset name (None: no accuracy measured, no dataset recorded)
    data_root: str | Path | None = None  # directory (or file) holding it
    data_options: dict | None = None  # the dataset's options ([data] options)
    input_shape: Sequence[int] | None = None  # C,H,W without `data` (with it: must agree)
    num_classes: int | None = None  # without `data`; weights only (an ONNX graph says its own)
    model_options: dict[str, Any] | None = None  # factory `kwargs` (weights) and the input `mean`/`std` ([model])
    device: str | torch.device | None = None  # where the clean accuracy of imported weights is measured
    recipe: dict | None = None  # recorded in the manifest

    @property
    def mean(self) -> list[float] | None:
        return (self.model_options or {}).get("mean") or None

    @property
    def std(self) -> list[float] | None:
        return (self.model_options or {}).get("std") or None

    def load(self, split: str):
        """The dataset's `split` (the caller checks `data` is set)."""
        return load_dataset(self.data, split, self.data_root, **(self.data_options or {}))

    def dataset_record(self, test) -> dict[str, Any]:
        """The manifest's `dataset` section, as `train` writes it."""
        train = self.load("train")
        return {"train": train.describe(), "test": test.describe(), "root": str(self.data_root or ""),
                "options": dict(self.data_options or {})}
