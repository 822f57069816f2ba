"""Distillation losses against hand computations; a student identical to its teacher has zero loss."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from edgerobust.errors import EdgeRobustError
from edgerobust.training.distill_losses import build_distillation_loss, soft_targets
from edgerobust.training.losses import StepState

STATE = StepState(epoch=0, step=3, progress=0.0, epochs=1)


class Fixed(nn.Module):
    """A 'model' whose logits are a fixed linear map of the flattened input."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x.flatten(1) @ self.weight


def pair(seed=0, classes=4):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 2, 3, generator=g, dtype=torch.float64)
    teacher = Fixed(torch.randn(6, classes, generator=g, dtype=torch.float64) * 3)
    student = Fixed(torch.randn(6, classes, generator=g, dtype=torch.float64))
    y = torch.randint(0, classes, (5,), generator=g)
    return x, y, teacher, student


def softmax_row(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def kl_row(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def rows(model, x):
    with torch.no_grad():
        return model(x).tolist()


def pairs(teacher, student, x):
    return zip(rows(teacher, x), rows(student, x), strict=True)


def test_logit_matching_is_mean_squared_difference():
    x, y, teacher, student = pair()
    loss = build_distillation_loss("logit-matching", teacher)(student, x, y, STATE).loss
    zt, zs = rows(teacher, x), rows(student, x)
    hand = sum((a - b) ** 2 for rt, rs in zip(zt, zs, strict=True) for a, b in zip(rt, rs, strict=True))
    hand /= len(zt) * len(zt[0])
    assert loss.item() == pytest.approx(hand, rel=1e-12)


@pytest.mark.parametrize("t", [0.5, 1.0, 3.0])
def test_temperature_loss_is_kl_to_softened_teacher_at_student_t1(t):
    x, y, teacher, student = pair(1)
    loss = build_distillation_loss("temperature", teacher, temperature=t)(student, x, y, STATE).loss
    hand = sum(kl_row(softmax_row(a, t), softmax_row(b)) for a, b in pairs(teacher, student, x)) / 5
    assert loss.item() == pytest.approx(hand, rel=1e-12)
    # the thesis's cross-entropy differs by the targets' entropy only: the same gradient
    ce = -sum(sum(p * math.log(q) for p, q in zip(softmax_row(a, t), softmax_row(b), strict=True))
              for a, b in pairs(teacher, student, x)) / 5
    entropy = -sum(sum(p * math.log(p) for p in softmax_row(a, t)) for a in rows(teacher, x)) / 5
    assert loss.item() == pytest.approx(ce - entropy, rel=1e-10)


def test_hinton_loss_hand_computation():
    x, y, teacher, student = pair(2)
    t, alpha = 4.0, 0.7
    loss = build_distillation_loss("hinton", teacher, temperature=t, soft_weight=alpha)(student, x, y, STATE).loss
    zt, zs = rows(teacher, x), rows(student, x)
    soft = sum(kl_row(softmax_row(a, t), softmax_row(b, t)) for a, b in zip(zt, zs, strict=True)) / 5 * t * t
    ce = -sum(math.log(softmax_row(b)[int(label)]) for b, label in zip(zs, y, strict=True)) / 5
    assert loss.item() == pytest.approx(alpha * soft + (1 - alpha) * ce, rel=1e-12)


def test_rslad_reduction_is_mean_over_examples_and_classes():
    x, y, teacher, student = pair(3)
    loss = build_distillation_loss("rslad", teacher, eps=0.0)(student, x, y, STATE).loss
    kl = sum(kl_row(softmax_row(a), softmax_row(b)) for a, b in pairs(teacher, student, x)) / 5
    assert loss.item() == pytest.approx((5 / 6 + 1 / 6) * kl / 4, rel=1e-12)


def test_ard_at_zero_eps_is_temperature_kl_times_t_squared():
    x, y, teacher, student = pair(4)
    t = 2.0
    loss = build_distillation_loss("ard", teacher, temperature=t, eps=0.0)(student, x, y, STATE).loss
    kl = sum(kl_row(softmax_row(a, t), softmax_row(b, t)) for a, b in pairs(teacher, student, x)) / 5
    assert loss.item() == pytest.approx(kl * t * t, rel=1e-12)


@pytest.mark.parametrize("method,settings", [("logit-matching", {}), ("temperature", {}),
                                             ("hinton", {"soft_weight": 1.0}), ("ard", {"eps": 0.0}),
                                             ("rslad", {"eps": 0.0})])
def test_student_identical_to_teacher_has_zero_loss(method, settings):
    x, y, teacher, _ = pair(5)
    student = copy.deepcopy(teacher).requires_grad_(True)
    out = build_distillation_loss(method, teacher, **settings)(student, x, y, STATE)
    assert abs(out.loss.item()) <= 1e-12
    assert torch.equal(out.targets, teacher(x).argmax(1))


def test_robust_losses_attack_the_student_and_leave_the_teacher_untrained():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double()
    student = copy.deepcopy(teacher).requires_grad_(True)
    before = copy.deepcopy(teacher.state_dict())
    x = torch.rand(8, 1, 2, 3, dtype=torch.float64)
    y = torch.zeros(8, dtype=torch.int64)
    for method in ("ard", "rslad"):
        out = build_distillation_loss(method, teacher, eps=0.1, steps=3)(student, x, y, STATE)
        assert out.loss.item() > 0  # the identical student is wrong on its own adversarial points
        out.loss.backward()
        assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_soft_targets_extremes():
    z = torch.tensor([[1.0, 3.0, -2.0, 2.5]], dtype=torch.float64)
    assert torch.allclose(soft_targets(z, 1e-3), torch.tensor([[0.0, 1.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(soft_targets(z, 1e9), torch.full((1, 4), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_one_clear_error(t):
    _, _, teacher, _ = pair()
    with pytest.raises(EdgeRobustError, match="temperature"):
        build_distillation_loss("temperature", teacher, temperature=t)


@pytest.mark.parametrize("method,default", [("hinton", 0.9), ("ard", 1.0), ("rslad", 5 / 6)])
def test_adversarial_alpha_never_becomes_the_soft_weight(method, default):
    """[adversarial] alpha (an attack step) is offered to every loss; the soft term's weight has its own name."""
    from edgerobust.config import AdversarialConfig, TrainConfig
    from edgerobust.training.api import training_loss

    teacher = pair()[2]
    config = TrainConfig(loss=method, loss_options={"teacher": teacher})
    loss, _ = training_loss(config, AdversarialConfig(alpha=0.01))
    assert loss.soft_weight == pytest.approx(default) and loss.settings()["soft_weight"] == pytest.approx(default)
    loss, _ = training_loss(TrainConfig(loss=method, loss_options={"teacher": teacher, "soft_weight": 0.5}),
                            AdversarialConfig(alpha=0.01))
    assert loss.soft_weight == 0.5


@pytest.mark.parametrize("method", ["ard", "rslad"])
def test_loss_options_override_the_adversarial_settings_they_share(method):
    """`--adv pgd --eps 0.1 --steps 3 --loss ard --loss-options '{"eps": 0.05}'`: the loss's own option wins over the
    [adversarial] setting offered under the same name (it raised a TypeError, 'multiple values for eps')."""
    from edgerobust.config import AdversarialConfig, TrainConfig
    from edgerobust.training.api import training_loss

    teacher = pair()[2]
    adversarial = AdversarialConfig(method="pgd", eps=0.1, steps=3)
    loss, _ = training_loss(TrainConfig(loss=method, loss_options={"teacher": teacher}), adversarial)
    assert (loss.eps, loss.steps) == (0.1, 3)
    loss, _ = training_loss(TrainConfig(loss=method, loss_options={"teacher": teacher, "eps": 0.05, "steps": 2}),
                            adversarial)
    assert (loss.eps, loss.steps) == (0.05, 2)
