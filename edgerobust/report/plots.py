"""Matplotlib figures written atomically as PNG (headless Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import atomic_path  # noqa: E402


def new_figure(width: float = 6.0, height: float = 4.0):
    return plt.subplots(figsize=(width, height), dpi=110)


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.tight_layout()
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def training_curves(history: list[dict], path: str | Path, title: str = "training") -> Path:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if history and "test_loss" in history[0]:
        ax_loss.plot(epochs, [h["test_loss"] for h in history], marker="o", label="test")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax_loss.legend()
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "test"), ("train_adv_accuracy", "train (adv)")):
        if history and key in history[0]:
            ax_acc.plot(epochs, [h[key] for h in history], marker="o", label=label)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy", ylim=(0, 1.02))
    ax_acc.legend()
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    return save_figure(fig, path)
