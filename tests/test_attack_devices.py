"""Every tensor an attack creates lives on the device of its input (issue 8 §2), checked without a GPU.

The inputs and the model are placed on a device simulated on the CPU (tests/device_tracking.py): a tensor created
without `device=x.device`, or a seeded CPU draw never moved to x's device, meets the input in some call and is
recorded there, as CUDA would refuse it. Random draws come from the attack's seeded CPU generator and are then moved,
so a CUDA run draws the numbers of the CPU run with the same seed.
"""
from __future__ import annotations

import pytest
import torch
from attack_models import cheap_attack, settings_of, tiny_cnn
from device_tracking import SimulatedDevice

from edgerobust.attacks import ATTACKS
from edgerobust.attacks.base import random_start, unit_direction

SHAPE = (1, 6, 6)
RESTARTS = {name for name in ATTACKS if "restarts" in settings_of(name)}


def cases():
    for name in ATTACKS.names():
        for norm in ATTACKS.get(name).norms:
            yield pytest.param(name, norm, id=f"{name}-{norm}")


def inputs(n: int = 12):
    generator = torch.Generator().manual_seed(0)
    return torch.rand((n, *SHAPE), generator=generator), torch.randint(0, 10, (n,), generator=generator)


def run_on_device(attack, model, x, y):
    device = SimulatedDevice()
    device.place(model, x, y)
    with device:
        x_adv = attack(model, x, y)
    return device, x_adv


@pytest.mark.parametrize(("name", "norm"), list(cases()))
def test_every_tensor_an_attack_creates_lives_on_its_inputs_device(name, norm):
    model, (x, y) = tiny_cnn(1), inputs()
    eps = (0.3 if norm == "linf" else 1.5) if name not in ("cw", "deepfool", "fgs-search") else None
    extra = {"restarts": 2} if name in RESTARTS else {}
    attack = cheap_attack(name, eps, norm, **extra)
    device, x_adv = run_on_device(attack, model, x, y)
    assert device.violations == []
    assert device.on_device(x_adv)
    # the same attack off the simulated device gives the same points: the placement changes no number
    assert torch.equal(x_adv, cheap_attack(name, eps, norm, **extra)(model, x, y))


@pytest.mark.parametrize("early_exit", [True, False])
@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "apgd-t", "mim"])
def test_early_exit_and_restart_bookkeeping_stay_on_the_device(name, early_exit):
    model, (x, y) = tiny_cnn(2), inputs(16)
    attack = cheap_attack(name, 0.2, "linf", restarts=3, early_exit=early_exit)
    device, x_adv = run_on_device(attack, model, x, y)
    assert device.violations == [] and device.on_device(x_adv)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("rows", [None, (2, 10)])
def test_random_starts_and_directions_are_drawn_on_the_cpu_and_moved(norm, rows):
    x = inputs(4)[0]
    device = SimulatedDevice()
    device.place(x)
    with device:
        start = random_start(x, 0.1, norm, torch.Generator().manual_seed(3), rows)
        direction = unit_direction(x.shape, norm, torch.Generator().manual_seed(3), device=x.device)
    assert device.violations == [] and device.on_device(start) and device.on_device(direction)
    assert torch.equal(start, random_start(x, 0.1, norm, torch.Generator().manual_seed(3), rows))


def test_the_simulated_device_catches_a_tensor_left_on_the_cpu():
    x = inputs(4)[0]
    device = SimulatedDevice()
    device.place(x)
    with device:
        fine = torch.zeros(len(x), device=x.device) + x.sum(dim=(1, 2, 3))
        moved = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)).to(x.device) + x
    assert device.violations == [] and device.on_device(fine) and device.on_device(moved)
    with device:
        torch.zeros(len(x)) + x.sum(dim=(1, 2, 3))  # the factory forgot the device
        x[torch.ones(len(x), dtype=torch.bool).to(x.device)] * torch.rand(x.shape, generator=None)
        torch.rand(x.shape, device=x.device)  # drawn on the device, without the seed
    unseeded = "without the attack's generator"
    kinds = ["mixes", unseeded, "mixes", "draws on the device", unseeded]
    assert len(device.violations) == len(kinds), device.violations
    assert all(kind in violation for kind, violation in zip(kinds, device.violations, strict=True))
