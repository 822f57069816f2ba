"""APGD against AutoAttack's definition (Croce & Hein 2020; auto-attack's autopgd_base.attack_single_run).

`reference_run` is the reference run written out densely: every point takes every step, the loss history is an
array of `steps` rows that starts at zero (so the first checkpoint's oscillation count reads its last, still-zero
row), and "reduced at the last checkpoint" starts true. Our APGD compacts the batch, keeps its state per point and
updates with torch.where; run without early exit from the same start it must give the same points, bit for bit
(the reference uses our ε-ball projection and steepest step, so the arithmetic is the same and only the schedule and
the bookkeeping are compared; AutoAttack's own clamp formulas differ from them in the last bits).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_models import tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.attacks import dlr_loss, get_attack, project, steepest_step, targeted_dlr_loss
from edgerobust.attacks.apgd import StepSizeSchedule, checkpoint_iterations
from edgerobust.attacks.base import unit_direction

SHAPE = (1, 6, 6)


def reference_run(model, x, y, eps, norm, steps, loss_fn, x_start, rho=0.75):
    """(x_best, fooled, x_best_adv) of one dense APGD run from x_start, with AutoAttack's step-size schedule."""
    n = len(x)

    def onto_ball(p):
        return project(p, x, eps, norm)

    def loss_grad(point):
        point = point.clone().requires_grad_(True)
        logits = model(point)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), point)
        return loss.detach(), grad, logits.detach()

    x_adv = x_start.clamp(0, 1)
    x_best, x_best_adv = x_adv.clone(), x_adv.clone()
    history = torch.zeros(steps, n, dtype=x.dtype)
    loss, grad, logits = loss_grad(x_adv)
    fooled = logits.argmax(1) != y
    grad_best, loss_best = grad.clone(), loss.clone()
    step = torch.full((n, 1, 1, 1), 2 * eps, dtype=x.dtype)
    x_old = x_adv.clone()
    k, k_min, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    counter, best_at_check, reduced = 0, loss_best.clone(), torch.ones(n, dtype=torch.bool)
    for i in range(steps):
        momentum, x_old = x_adv - x_old, x_adv.clone()
        a = 0.75 if i > 0 else 1.0
        z = onto_ball(x_adv + step * steepest_step(grad, 1.0, norm))
        x_adv = onto_ball(x_adv + a * (z - x_adv) + (1 - a) * momentum)
        loss, grad, logits = loss_grad(x_adv)
        wrong = logits.argmax(1) != y
        fooled |= wrong
        x_best_adv[wrong] = x_adv[wrong]
        history[i] = loss
        better = loss > loss_best
        x_best[better], grad_best[better], loss_best[better] = x_adv[better], grad[better], loss[better]
        counter += 1
        if counter == k:
            increases = sum((history[i - j] > history[i - j - 1]).to(x.dtype) for j in range(k))  # [-1] wraps
            reduce = (increases <= k * rho) | (~reduced & (best_at_check >= loss_best))
            reduced, best_at_check = reduce, loss_best.clone()
            step[reduce] /= 2
            x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
            k, counter = max(k - decrease, k_min), 0
    return x_best, fooled, x_best_adv


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("name", "norm"), [("apgd-ce", "linf"), ("apgd-ce", "l2"), ("apgd-dlr", "linf"),
                                            ("apgd-t", "linf"), ("apgd-t", "l2")])
def test_apgd_is_autoattacks_run_from_the_same_start(name, norm, seed):
    torch.manual_seed(seed)
    model = tiny_cnn(seed).double()
    x = torch.rand((32, *SHAPE), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = model(x).argmax(1)
    eps, steps = (0.05, 30) if norm == "linf" else (0.5, 30)
    if name == "apgd-ce":
        loss_fn = lambda logits, labels: F.cross_entropy(logits, labels, reduction="none")  # noqa: E731
    elif name == "apgd-dlr":
        loss_fn = dlr_loss
    else:  # one target: the second most likely class (y is the top class here)
        target = model(x).argsort(dim=1, descending=True)[:, 1]
        loss_fn = lambda logits, labels: targeted_dlr_loss(logits, labels, target)  # noqa: E731
    start = project(x + eps * unit_direction(x.shape, norm, torch.Generator().manual_seed(seed)), x, eps, norm)
    x_best, fooled, x_best_adv = reference_run(model, x, y, eps, norm, steps, loss_fn, start)
    # Attack.__call__ projects what an attack returns once more (a no-op but for the last bit of an L2 norm)
    expected = project(torch.where(fooled.view(-1, 1, 1, 1), x_best_adv, x_best), x, eps, norm)
    attack = get_attack(name, eps=eps, norm=norm, steps=steps, early_exit=False, seed=seed,
                        **({"n_target_classes": 1} if name == "apgd-t" else {}))
    got = attack(model, x, y)
    assert 0 < int(fooled.sum()) < len(x)  # both kinds of point are compared
    assert torch.equal(got, expected), (got - expected).abs().max()


@pytest.mark.parametrize("seed", [0, 1])
def test_early_exit_breaks_the_same_points_as_the_dense_run(seed):
    model = tiny_cnn(seed).double()
    x = torch.rand((32, *SHAPE), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = model(x).argmax(1)
    dense = get_attack("apgd-ce", eps=0.05, steps=30, early_exit=False, seed=seed)(model, x, y)
    early = get_attack("apgd-ce", eps=0.05, steps=30, early_exit=True, seed=seed)(model, x, y)
    with torch.no_grad():
        assert torch.equal(model(dense).argmax(1) != y, model(early).argmax(1) != y)


@pytest.mark.parametrize(("steps", "expected"), [(100, [22, 41, 57, 70, 80, 87, 93, 99]),
                                                 (10, [2, 3, 4, 5, 6, 7, 8, 9, 10]), (1, [1])])
def test_checkpoints_follow_autoattacks_integer_schedule(steps, expected):
    assert checkpoint_iterations(steps) == expected


def reference_reductions(losses: torch.Tensor, rho: float = 0.75) -> list[torch.Tensor]:
    """AutoAttack's checkpoint decisions for scripted losses (row 0: the start, row i: step i), written densely."""
    steps, n = losses.shape[0] - 1, losses.shape[1]
    history = torch.zeros(steps, n, dtype=losses.dtype)
    loss_best = losses[0].clone()
    k, k_min, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    counter, best_at_check, reduced, decisions = 0, loss_best.clone(), torch.ones(n, dtype=torch.bool), []
    for i in range(steps):
        history[i] = losses[i + 1]
        loss_best = torch.maximum(loss_best, losses[i + 1])
        counter += 1
        if counter == k:
            increases = sum((history[i - j] > history[i - j - 1]).to(losses.dtype) for j in range(k))
            reduce = (increases <= k * rho) | (~reduced & (best_at_check >= loss_best))
            reduced, best_at_check = reduce, loss_best.clone()
            decisions.append(reduce)
            k, counter = max(k - decrease, k_min), 0
    return decisions


def schedule_reductions(losses: torch.Tensor, rho: float = 0.75) -> tuple[list[torch.Tensor], torch.Tensor]:
    schedule = StepSizeSchedule(losses[0], losses.shape[0] - 1, 0.1, rho)
    best, decisions = losses[0], []
    for row in losses[1:]:
        best = torch.maximum(best, row)
        reduce = schedule.observe(row, best)
        if reduce is not None:
            decisions.append(reduce)
    return decisions, schedule.step


@settings(max_examples=40, deadline=None)
@given(steps=st.integers(1, 60), seed=st.integers(0, 2**16), drift=st.floats(-0.5, 0.5), shift=st.floats(-3, 3))
def test_the_step_size_schedule_is_autoattacks_on_any_loss_sequence(steps, seed, drift, shift):
    noise = torch.randn(steps + 1, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    losses = shift + (noise + drift).cumsum(0)
    losses[0] += 2 * noise[0].abs()  # some starts above everything that follows: the "stalled" case
    ours, step = schedule_reductions(losses)
    reference = reference_reductions(losses)
    assert len(ours) == len(reference) == len(checkpoint_iterations(steps))
    assert all(torch.equal(a, b) for a, b in zip(ours, reference, strict=True))
    halvings = torch.stack(reference).sum(0) if reference else torch.zeros(16)
    assert torch.equal(step, 0.2 / 2 ** halvings.to(torch.float64))


def test_the_first_checkpoint_halves_only_oscillating_steps():
    # the start is the best point, then the loss climbs every step: stalled, but not oscillating. AutoAttack keeps
    # the step at the first checkpoint (its flag starts "reduced") and halves it at the second (no progress since)
    losses = torch.cat([torch.tensor([5.0]), torch.linspace(1.0, 2.0, 100)]).view(-1, 1).double()
    decisions, _ = schedule_reductions(losses)
    assert [bool(d) for d in decisions[:2]] == [False, True]
    assert [bool(d) for d in reference_reductions(losses)[:2]] == [False, True]
