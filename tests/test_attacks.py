"""Attacks: ε-ball and [0,1] invariants, exact special cases on linear models, strength and determinism."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from attack_models import cheap_attack, default_norm, linear_model, tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.attacks import ATTACKS, get_attack, perturbation_norm
from edgerobust.errors import EdgeRobustError
from edgerobust.evaluation import robust_accuracy

BUDGETED = [name for name in ATTACKS if not ATTACKS.get(name).minimal]  # every registered attack, none by hand
MINIMAL = [name for name in ATTACKS if ATTACKS.get(name).minimal]
SHAPE = (1, 6, 6)


def build(name: str, eps: float, norm: str):
    return cheap_attack(name, eps, norm)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(BUDGETED), eps=st.floats(0.0, 0.5), norm=st.sampled_from(["linf", "l2"]),
       seed=st.integers(0, 3))
def test_adversarial_points_stay_in_the_ball_and_in_pixel_range(name, eps, norm, seed):
    if norm not in ATTACKS.get(name).norms:
        return
    model = tiny_cnn(seed)
    x = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(seed + 1))
    x_adv = build(name, eps, norm)(model, x, y)
    assert x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (perturbation_norm(x_adv, x, norm) <= eps + 1e-5).all()


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(MINIMAL), eps=st.floats(0.0, 0.5), seed=st.integers(0, 3))
def test_minimal_attacks_keep_only_examples_within_the_budget(name, eps, seed):
    norm = default_norm(name)
    model = tiny_cnn(seed)
    x = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(seed))
    y = model(x).argmax(1)
    x_adv = build(name, eps, norm)(model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (perturbation_norm(x_adv, x, norm) <= eps * (1 + 1e-6) + 1e-7).all()


@pytest.mark.parametrize("name", BUDGETED + MINIMAL)
def test_zero_eps_returns_the_input(name):
    norm = default_norm(name)
    x = torch.rand((4, *SHAPE))
    y = torch.arange(4)
    assert torch.equal(build(name, 0.0, norm)(tiny_cnn(), x, y), x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_one_step_pgd_without_random_start_is_fgsm(norm):
    model = tiny_cnn(1)
    x, y = torch.rand((16, *SHAPE)), torch.randint(0, 10, (16,))
    pgd = get_attack("pgd", eps=0.1, norm=norm, steps=1, alpha=0.1, random_init=False, early_exit=False)
    assert torch.equal(pgd(model, x, y), get_attack("fgsm", eps=0.1, norm=norm)(model, x, y))


@pytest.mark.parametrize(("name", "norm"), [("pgd", "linf"), ("pgd", "l2"), ("apgd-ce", "linf"), ("apgd-ce", "l2"),
                                            ("bim", "linf"), ("mim", "linf")])
def test_pgd_reaches_the_analytic_worst_case_on_a_linear_binary_model(name, norm):
    torch.manual_seed(0)
    model = linear_model(classes=2, scale=0.2)
    w = model[1].weight.detach()
    x = 0.3 + 0.4 * torch.rand((8, *SHAPE))  # far enough from 0 and 1 that clipping never binds
    y = torch.randint(0, 2, (8,))
    eps = 0.1 if norm == "linf" else 0.4
    # CE grows with the other class's margin, which is linear: the worst case moves along ±(w_other − w_y)
    direction = (w[1 - y] - w[y]).view(-1, *SHAPE)
    step = direction.sign() if norm == "linf" else direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    worst = x + eps * step
    attack = get_attack(name, eps=eps, norm=norm, steps=50, early_exit=False,
                        **({"random_init": False} if name in ("pgd", "apgd-ce") and norm == "l2" else {}))
    x_adv = attack(model, x, y)
    assert torch.allclose(x_adv, worst, atol=1e-4)
    worst_loss = F.cross_entropy(model(worst), y, reduction="none")
    assert torch.allclose(F.cross_entropy(model(x_adv), y, reduction="none"), worst_loss, atol=1e-5)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_finds_the_exact_boundary_distance_of_a_linear_model(norm):
    model = linear_model(classes=10, scale=0.5)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    x = 0.45 + 0.1 * torch.rand((16, *SHAPE))
    y = model(x).argmax(1)
    logits = x.flatten(1) @ w.T + b
    gaps = (logits.gather(1, y[:, None]) - logits)  # ≥ 0, zero at y
    w_diff = w[y][:, None, :] - w[None, :, :]  # (n, classes, d)
    dual = w_diff.norm(dim=2) if norm == "l2" else w_diff.abs().sum(2)
    exact = torch.where(gaps > 0, gaps / dual.clamp_min(1e-12), torch.full_like(gaps, float("inf"))).amin(1)
    x_adv = get_attack("deepfool", norm=norm, overshoot=0.0)(model, x, y)
    found = perturbation_norm(x_adv, x, norm)
    assert (model(x_adv).argmax(1) != y).all()
    # DeepFool overshoots the linearised distance by 1e-4 in logit units (so the label flips)
    assert torch.allclose(found, exact, rtol=1e-3, atol=1e-3)
    assert (found >= exact - 1e-5).all()


def test_fgs_search_returns_the_adversarial_end_within_tolerance(digits_run):
    from edgerobust.data import load_dataset

    model = digits_run.load_model()
    test = load_dataset("digits", "test").subset(100)
    y = model(test.images).argmax(1)
    attack = get_attack("fgs-search", tolerance=1e-3)
    x_adv = attack(model, test.images, y)
    found = perturbation_norm(x_adv, test.images, "linf") > 0
    assert found.float().mean() > 0.9
    assert (model(x_adv[found]).argmax(1) != y[found]).all()  # every reported point is adversarial
    assert attack.describe()["iterations"] == 9


def test_cw_flips_nearly_every_prediction_and_reports_only_adversarial_points(digits_run):
    from edgerobust.data import load_dataset

    model = digits_run.load_model()
    test = load_dataset("digits", "test").subset(12)
    y = model(test.images).argmax(1)
    x_cw = get_attack("cw")(model, test.images, y)
    moved = perturbation_norm(x_cw, test.images, "l2") > 0
    assert moved.float().mean() >= 0.8
    assert (model(x_cw[moved]).argmax(1) != y[moved]).all()  # the smallest *successful* point, or the input


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(digits_run, eps):
    from edgerobust.data import load_dataset

    model = digits_run.load_model()
    test = load_dataset("digits", "test")
    apgd = robust_accuracy(model, test.images, test.labels, get_attack("apgd-ce", eps=eps, steps=20))
    pgd = robust_accuracy(model, test.images, test.labels, get_attack("pgd", eps=eps, steps=20))
    assert apgd <= pgd


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "apgd-t", "square", "mim", "fgsm-rs"])
def test_attacks_are_deterministic_under_a_seed(name):
    model = tiny_cnn(2)
    x, y = torch.rand((16, *SHAPE)), torch.randint(0, 10, (16,))
    first = build(name, 0.2, "linf")(model, x, y)
    assert torch.equal(first, build(name, 0.2, "linf")(model, x, y))


class CountingModel(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body, self.forwards = body, 0

    def forward(self, x):
        self.forwards += 1
        return self.body(x)


@pytest.mark.parametrize(("name", "settings", "passes"), [
    ("pgd", {"steps": 7, "early_exit": False}, 7), ("fgsm-rs", {}, 1), ("fgsm", {}, 1)])
def test_a_single_restart_attack_spends_only_its_gradient_passes(name, settings, passes):
    model = CountingModel(tiny_cnn(1))
    x, y = torch.rand((8, *SHAPE)), torch.randint(0, 10, (8,))
    get_attack(name, eps=0.1, **settings)(model, x, y)
    assert model.forwards == passes


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 200), early_exit=st.booleans())
def test_restarts_keep_each_examples_worst_point(seed, early_exit):
    model = tiny_cnn(seed % 4)
    x = torch.rand((32, *SHAPE), generator=torch.Generator().manual_seed(seed))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(seed + 1))
    # the same seed makes the many-restart attack's first restart the single-restart attack
    one = get_attack("pgd", eps=0.15, steps=3, restarts=1, early_exit=early_exit, seed=seed)(model, x, y)
    many = get_attack("pgd", eps=0.15, steps=3, restarts=4, early_exit=early_exit, seed=seed)(model, x, y)
    with torch.no_grad():
        logits_one, logits_many = model(one), model(many)
    fooled_one, fooled_many = logits_one.argmax(1) != y, logits_many.argmax(1) != y
    assert not (fooled_one & ~fooled_many).any()
    loss_one = F.cross_entropy(logits_one, y, reduction="none")
    loss_many = F.cross_entropy(logits_many, y, reduction="none")
    assert (loss_many[~fooled_many] >= loss_one[~fooled_many] - 1e-5).all()


def test_the_attack_lists_of_these_tests_are_the_registry():
    assert sorted(BUDGETED + MINIMAL) == ATTACKS.names() and len(ATTACKS) >= 14


@pytest.mark.parametrize("name", ATTACKS.names())
def test_an_attack_takes_the_norms_it_declares_and_refuses_the_others(name):
    attack = ATTACKS.get(name)
    for norm in ("linf", "l2"):
        if norm in attack.norms:
            assert get_attack(name, eps=0.1, norm=norm).norm == norm
        else:
            with pytest.raises(EdgeRobustError, match="norm"):
                get_attack(name, eps=0.1, norm=norm)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_an_attack_is_built_under_its_registry_name_and_never_renamed(name):
    attack = get_attack(name, eps=0.1, norm=default_norm(name))
    assert type(attack).name == attack.name == name and "name" not in vars(attack)


def test_every_attack_records_its_settings():
    for name in ATTACKS.names():
        norm = default_norm(name)
        described = get_attack(name, eps=0.1, norm=norm).describe()
        assert described["attack"] == name and described["eps"] == 0.1 and described["norm"] == norm
        assert len(described) > 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "pgd", "eps": 1.5}, "outside [0, 1]"),
    ({"name": "pgd", "eps": -0.1}, "outside [0, 1]"),
    ({"name": "pgd", "eps": 0.1, "norm": "l3"}, "unknown norm 'l3'"),
    ({"name": "nope", "eps": 0.1}, "unknown attack 'nope'"),
    ({"name": "square", "eps": 0.1, "norm": "l2"}, "linf norm only"),
    ({"name": "cw", "norm": "linf"}, "use --norm l2"),
    ({"name": "apgd-ce", "eps": 0.1, "alpha": 0.01}, "own step size"),
])
def test_bad_settings_fail_with_one_clear_line(kwargs, message):
    name = kwargs.pop("name")
    with pytest.raises(EdgeRobustError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        get_attack(name, **kwargs)
    assert "\n" not in str(info.value)


class NotLogits(nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3))


@pytest.mark.parametrize("name", BUDGETED + MINIMAL)
def test_a_model_without_batch_logits_or_labels_out_of_range_fail_clearly(name):
    norm = default_norm(name)
    x = torch.rand((4, *SHAPE))
    with pytest.raises(EdgeRobustError, match="batch of logits"):
        build(name, 0.1, norm)(NotLogits(), x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(EdgeRobustError, match=r"labels must be in \[0, 9\]"):
        build(name, 0.1, norm)(tiny_cnn(), x, torch.tensor([0, 1, 2, 12]))
    with pytest.raises(EdgeRobustError, match="labels must have shape"):
        build(name, 0.1, norm)(tiny_cnn(), x, torch.zeros(3, dtype=torch.long))
