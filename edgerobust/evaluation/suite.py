"""The standard suite: an AutoAttack-style ensemble reported cumulatively (Marshall Table 4.2).

APGD-CE, then targeted APGD-DLR, then Square; only points still classified correctly go on to the next
attack, so each column counts the points no attack so far has broken and can never exceed the one before it.
`fab=True` adds targeted FAB before Square (AutoAttack's standard order: APGD-CE → APGD-T → FAB-T → Square).
The final number is an upper bound on the true robust accuracy: it holds only against the attacks run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import Attack, get_attack
from ..models.mode import eval_mode
from ..progress import progress_bar
from .core import attack_points, check_inputs, predict_labels

UPPER_BOUND_NOTE = ("robust accuracy is an upper bound: it counts the points that none of the attacks run could "
                    "break; a stronger attack can only lower it")


@dataclass
class SuiteResult:
    eps: float
    norm: str
    n: int
    clean_accuracy: float
    cumulative: list[tuple[str, float]]  # [("clean", a0), (attack, a1), ...], non-increasing
    attacks: list[dict[str, Any]] = field(default_factory=list)  # settings, points attacked / broken, seconds
    skipped: list[str] = field(default_factory=list)
    robust_mask: torch.Tensor | None = None  # per point: correct and unbroken by every attack
    adversarial: torch.Tensor | None = None  # per point: the example that broke it, else the last attack's try

    @property
    def robust_accuracy(self) -> float:
        return self.cumulative[-1][1]

    def to_dict(self) -> dict[str, Any]:
        return {"suite": "standard", "eps": self.eps, "norm": self.norm, "n": self.n,
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "bound": "upper", "note": UPPER_BOUND_NOTE,
                "cumulative": [[name, acc] for name, acc in self.cumulative], "attacks": self.attacks,
                "skipped": self.skipped}


def standard_attacks(eps: float, norm: str = "linf", num_classes: int = 10, seed: int = 0, n_restarts: int = 1,
                     steps: int = 100, square_queries: int = 1000, n_target_classes: int = 9, fab: bool = False
                     ) -> tuple[list[Attack], list[str]]:
    """The suite's attacks in order, and a line for each one that cannot run on this model or norm."""
    attacks: list[Attack] = [get_attack("apgd-ce", eps=eps, norm=norm, steps=steps, restarts=n_restarts, seed=seed)]
    skipped = []
    if num_classes >= 4:
        attacks.append(get_attack("apgd-t", eps=eps, norm=norm, steps=steps, restarts=n_restarts, seed=seed,
                                  n_target_classes=min(n_target_classes, num_classes - 1)))
    elif num_classes == 3:
        attacks.append(get_attack("apgd-dlr", eps=eps, norm=norm, steps=steps, restarts=n_restarts, seed=seed))
        skipped.append("apgd-t: needs at least 4 classes; ran apgd-dlr instead")
    else:
        skipped.append("apgd-t: needs at least 4 classes")
    if fab:
        attacks.append(get_attack("fab-t", eps=eps, norm=norm, steps=steps, restarts=n_restarts, seed=seed,
                                  n_target_classes=min(n_target_classes, num_classes - 1)))
    if norm == "linf":
        attacks.append(get_attack("square", eps=eps, norm=norm, queries=square_queries, seed=seed))
    else:
        skipped.append("square: implemented for linf only")
    return attacks, skipped


def run_cumulative(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attacks: list[Attack],
                   batch_size: int = 256, progress: bool | None = None, adversarial: torch.Tensor | None = None
                   ) -> tuple[list[tuple[str, float]], list[dict[str, Any]], torch.Tensor]:
    """Attack in order, each on the points every earlier attack failed on; cumulative accuracy after each.

    `adversarial` (a copy of `images`), if given, receives each attacked point's example, so it ends holding the
    example that broke each broken point and the last attack's try at every robust one."""
    check_inputs(images, labels)
    robust = predict_labels(model, images, labels, batch_size) == labels.cpu()  # per point, on the CPU
    cumulative = [("clean", robust.float().mean().item())]
    records = []
    with progress_bar(progress) as bar:
        for attack in attacks:
            indices = robust.nonzero().squeeze(1)
            task = bar.add_task(attack.name, total=max(len(indices), 1), status=f"ε={attack.eps:.4g}")
            result = attack_points(model, images, labels, attack, indices, batch_size,
                                   on_batch=lambda k, task=task: bar.advance(task, k))
            if adversarial is not None and len(indices):
                adversarial[indices] = result.adversarial.to(adversarial.dtype)
            robust[indices[result.broken]] = False
            cumulative.append((attack.name, robust.float().mean().item()))
            records.append({**attack.describe(), "attacked": len(indices), "broken": int(result.broken.sum()),
                            "seconds": round(result.seconds, 3)})
            bar.update(task, completed=max(len(indices), 1), status=f"acc {cumulative[-1][1]:.3f}")
    return cumulative, records, robust


def standard_suite(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, norm: str = "linf",
                   seed: int = 0, batch_size: int = 256, progress: bool | None = None, n_restarts: int = 1,
                   steps: int = 100, square_queries: int = 1000, n_target_classes: int = 9,
                   fab: bool = False) -> SuiteResult:
    """AutoAttack-style ensemble (APGD-CE → APGD-T (DLR) → [FAB-T] → Square), reported cumulatively."""
    check_inputs(images, labels)
    num_classes = _num_classes(model, images, labels)
    attacks, skipped = standard_attacks(eps, norm, num_classes, seed, n_restarts, steps, square_queries,
                                        n_target_classes, fab)
    adversarial = images.detach().clone()
    cumulative, records, robust = run_cumulative(model, images, labels, attacks, batch_size, progress, adversarial)
    return SuiteResult(float(eps), norm, len(images), cumulative[0][1], cumulative, records, skipped, robust,
                       adversarial)


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack: Attack,
                    batch_size: int = 256, progress: bool | None = None) -> float:
    """Fraction of points classified correctly and still correct after `attack` (an upper bound)."""
    cumulative, _, _ = run_cumulative(model, images, labels, [attack], batch_size, progress)
    return cumulative[-1][1]


@torch.no_grad()
def _num_classes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    from ..attacks import checked_logits
    from ..compute_device import to_model

    with eval_mode(model):
        return checked_logits(model, *to_model(model, images[:1], labels[:1])).shape[1]
