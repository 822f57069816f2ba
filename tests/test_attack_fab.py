"""FAB (Croce & Hein 2020): [0,1] and ε invariants, the exact boundary of linear models, the box-constrained
projection, near-minimal perturbations on the digits model, targets, determinism, the suite's FAB-T stage, CLI."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from attack_models import linear_model, tiny_cnn
from cli_helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgerobust.attacks import get_attack, hyperplane_box_step, perturbation_norm
from edgerobust.data import load_dataset
from edgerobust.errors import EdgeRobustError
from edgerobust.evaluation import robust_accuracy, standard_suite
from edgerobust.run import RunDir

SHAPE = (1, 6, 6)


def boundary_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """Exact distance to the decision region's boundary of a linear model (the box not binding)."""
    w, b = model[1].weight.detach(), model[1].bias.detach()
    logits = x.flatten(1) @ w.T + b
    gaps = logits.gather(1, y[:, None]) - logits
    w_diff = w[y][:, None, :] - w[None, :, :]
    dual = w_diff.norm(dim=2) if norm == "l2" else w_diff.abs().sum(2)
    return torch.where(gaps > 0, gaps / dual.clamp_min(1e-12), torch.full_like(gaps, float("inf"))).amin(1)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["fab", "fab-t"]), norm=st.sampled_from(["linf", "l2"]),
       eps=st.one_of(st.none(), st.floats(0.0, 0.5)), restarts=st.integers(1, 2), seed=st.integers(0, 3))
def test_fab_points_stay_in_pixel_range_and_the_budget(name, norm, eps, restarts, seed):
    model = tiny_cnn(seed)
    x = torch.rand((8, *SHAPE), generator=torch.Generator().manual_seed(seed))
    x[:2] = x[:2].round()  # pixels on the faces of the box
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(seed + 1))
    attack = get_attack(name, eps=eps, norm=norm, steps=4, restarts=restarts, seed=seed,
                        **({"n_target_classes": 3} if name == "fab-t" else {}))
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    moved = perturbation_norm(x_adv, x, norm)
    if eps is not None:
        assert (moved <= eps * (1 + 1e-6) + 1e-7).all()
    with torch.no_grad():
        assert (model(x_adv[moved > 0]).argmax(1) != y[moved > 0]).all()  # only adversarial points are reported


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_constrained_projection_is_on_the_hyperplane_in_the_box_and_minimal(norm):
    gen = torch.Generator().manual_seed(0)
    p, w = torch.rand((64, 20), generator=gen), torch.randn((64, 20), generator=gen)
    h = torch.randn(64, generator=gen) * 0.5
    delta = hyperplane_box_step(p, w, h, norm)
    reachable = torch.where(w > 0, w * (1 - p), -w * p).sum(1) >= h.abs()  # h can be met inside the box
    assert (p + delta).min() >= -1e-6 and (p + delta).max() <= 1 + 1e-6
    assert torch.allclose((w * delta).sum(1)[reachable], h[reachable], atol=1e-4)
    # unreachable: every coordinate at the face that moves ⟨w, δ⟩ towards h
    face = torch.where(w * h[:, None].sign() > 0, 1.0, 0.0)
    assert torch.allclose((p + delta)[~reachable & (w != 0).all(1)], face[~reachable & (w != 0).all(1)])
    # without the box, the minimal step is h·w/‖w‖² (L2) or h·sign(w)/‖w‖₁ (L∞); the box can only make it longer
    free = (h / w.norm(dim=1)).abs() if norm == "l2" else (h / w.abs().sum(1)).abs()
    found = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    assert (found[reachable] >= free[reachable] - 1e-6).all()
    centred = hyperplane_box_step(torch.full((64, 20), 0.5), w, h * 0.01, norm)  # far from the faces: no clipping
    expected = (0.01 * h / w.norm(dim=1) ** 2)[:, None] * w if norm == "l2" else \
        (0.01 * h / w.abs().sum(1))[:, None] * w.sign()
    assert torch.allclose(centred, expected, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 10])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("name", ["fab", "fab-t"])
def test_fab_finds_the_exact_boundary_distance_of_a_linear_model(name, norm, classes):
    model = linear_model(classes, scale=0.5)
    x = 0.45 + 0.1 * torch.rand((16, *SHAPE), generator=torch.Generator().manual_seed(classes))
    y = model(x).argmax(1)
    exact = boundary_distance(model, x, y, norm)
    x_adv = get_attack(name, norm=norm)(model, x, y)
    found = perturbation_norm(x_adv, x, norm)
    assert (model(x_adv).argmax(1) != y).all()
    assert torch.allclose(found, exact, rtol=1e-3, atol=1e-5)
    assert (found >= exact * (1 - 1e-5)).all()  # never inside the boundary: those points are adversarial


def orthogonal_three_class_model() -> nn.Module:
    """Logits (2, 1, 0) at x = 0.5: the runner-up class 1's boundary is twice as far as class 2's, and moving towards
    one boundary leaves the other logit unchanged (orthogonal, zero-sum weight patterns)."""
    u = torch.tensor([1.0, -1.0, 1.0, -1.0]).repeat(9)
    v = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat(9)
    layer = nn.Linear(36, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros(36), 0.5 * u, 4.0 * v]))
        layer.bias.copy_(torch.tensor([2.0, 1.0, 0.0]))
    return nn.Sequential(nn.Flatten(), layer).eval()


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fab_t_attacks_the_top_ranked_other_classes(norm):
    model = orthogonal_three_class_model()
    x, y = torch.full((2, *SHAPE), 0.5), torch.zeros(2, dtype=torch.long)
    dual = (lambda t: t.norm()) if norm == "l2" else (lambda t: t.abs().sum())
    to_runner_up = 1 / dual(0.5 * torch.ones(36))  # |f| / ‖∇f‖_dual, the weight patterns are ±1
    to_nearest = 2 / dual(4.0 * torch.ones(36))
    one = get_attack("fab-t", norm=norm, n_target_classes=1)
    x_one = one(model, x, y)
    assert one.describe()["n_target_classes"] == 1
    assert (model(x_one).argmax(1) == 1).all()  # only the runner-up class was tried
    assert torch.allclose(perturbation_norm(x_one, x, norm), to_runner_up.expand(2), rtol=1e-3)
    for attack in (get_attack("fab-t", norm=norm), get_attack("fab", norm=norm)):  # 9 targets capped at 2
        x_adv = attack(model, x, y)
        assert (model(x_adv).argmax(1) == 2).all()
        assert torch.allclose(perturbation_norm(x_adv, x, norm), to_nearest.expand(2), rtol=1e-3)


@pytest.fixture(scope="module")
def digits_correct(digits_run):
    model = digits_run.load_model()
    test = load_dataset("digits", "test").subset(100)
    with torch.no_grad():
        correct = model(test.images).argmax(1) == test.labels
    return model, test.images[correct], test.labels[correct]


def median_norm(model, x_adv, x, y, norm):
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    return perturbation_norm(x_adv, x, norm).masked_fill(~fooled, float("inf")).median().item(), fooled


def test_fab_flips_the_digits_model_with_near_minimal_perturbations(digits_correct):
    model, x, y = digits_correct
    fab_linf, fooled = median_norm(model, get_attack("fab", norm="linf")(model, x, y), x, y, "linf")
    assert fooled.float().mean() >= 0.9
    fgs, _ = median_norm(model, get_attack("fgs-search", tolerance=1e-3)(model, x, y), x, y, "linf")
    assert fab_linf <= 1.05 * fgs
    fab_l2, fooled = median_norm(model, get_attack("fab", norm="l2")(model, x, y), x, y, "l2")
    assert fooled.float().mean() >= 0.9
    deepfool, _ = median_norm(model, get_attack("deepfool", norm="l2")(model, x, y), x, y, "l2")
    assert fab_l2 <= 1.05 * deepfool
    # against a strong budgeted attack: at 1/1.05 of FAB's median, APGD-CE must break fewer than half of the points
    # (otherwise its own median estimate would be more than 5% below FAB's)
    for norm, median in (("linf", fab_linf), ("l2", fab_l2)):
        apgd = get_attack("apgd-ce", eps=median / 1.05, norm=norm, steps=50)
        assert robust_accuracy(model, x, y, apgd) > 0.5


def test_fab_is_deterministic_under_a_seed_and_restarts_only_help():
    model = tiny_cnn(2)
    x = torch.rand((16, *SHAPE), generator=torch.Generator().manual_seed(5))
    y = model(x).argmax(1)
    for name in ("fab", "fab-t"):
        targets = {"n_target_classes": 3} if name == "fab-t" else {}
        first = get_attack(name, eps=0.3, steps=5, restarts=3, seed=3, **targets)(model, x, y)
        assert torch.equal(first, get_attack(name, eps=0.3, steps=5, restarts=3, seed=3, **targets)(model, x, y))
        one = get_attack(name, eps=0.3, steps=5, restarts=1, seed=3, **targets)(model, x, y)
        with torch.no_grad():
            assert not ((model(one).argmax(1) != y) & (model(first).argmax(1) == y)).any()


def test_fab_records_its_settings_and_rejects_bad_ones():
    described = get_attack("fab-t", eps=0.1, n_target_classes=4, seed=7).describe()
    assert {k: described[k] for k in ("attack", "eps", "norm", "steps", "restarts", "alpha_max", "eta", "beta",
                                      "seed", "n_target_classes")} == {
        "attack": "fab-t", "eps": 0.1, "norm": "linf", "steps": 10, "restarts": 1, "alpha_max": 0.1, "eta": 1.05,
        "beta": 0.9, "seed": 7, "n_target_classes": 4}
    assert get_attack("fab").describe()["eps"] is None and "n_target_classes" not in get_attack("fab").describe()
    for bad in ({"beta": 0.0}, {"eta": 0.9}, {"alpha_max": 1.5}, {"steps": 0}, {"restarts": 0}):
        with pytest.raises(EdgeRobustError, match="fab needs") as info:
            get_attack("fab", **bad)
        assert "\n" not in str(info.value)


def test_suite_with_fab_t_is_cumulative_and_never_above_the_suite_without(digits_run):
    model = digits_run.load_model()
    test = load_dataset("digits", "test").subset(120)
    common = dict(steps=10, square_queries=50, n_target_classes=2, progress=False)
    for norm, eps in (("linf", 0.08), ("l2", 0.4)):
        without = standard_suite(model, test.images, test.labels, eps, norm, **common)
        with_fab = standard_suite(model, test.images, test.labels, eps, norm, fab=True, **common)
        names = [name for name, _ in with_fab.cumulative]
        assert names == ["clean", "apgd-ce", "apgd-t", "fab-t"] + (["square"] if norm == "linf" else [])
        values = [acc for _, acc in with_fab.cumulative]
        assert all(b <= a for a, b in zip(values, values[1:], strict=False))
        assert with_fab.cumulative[:3] == without.cumulative[:3]  # the same attacks before FAB-T
        assert with_fab.robust_accuracy <= without.robust_accuracy
        record = with_fab.to_dict()["attacks"][2]
        assert record["attack"] == "fab-t" and record["n_target_classes"] == 2 and record["steps"] == 10
        assert record["attacked"] == round(values[2] * len(test))


def test_evaluate_cli_with_fab_suite_minimal_and_single_attack(digits_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(digits_run.path, path)
    code, out, err = run_cli("evaluate", path, "--fab", "--eps", "0.1", "--n", "40", "--steps", "5", "--queries",
                             "20", "--targets", "2", "--minimal", "fab", "-a", "fab", "--no-masking", "-q")
    assert code == 0, err
    assert "fab-t" in out and "minimal perturbations (fab" in out
    result = json.loads((path / "robustness.json").read_text())
    assert [name for name, _ in result["suite"]["cumulative"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert result["minimal"]["attack"]["attack"] == "fab" and result["minimal"]["success_rate"] >= 0.9
    assert result["attacks"][0]["attack"] == "fab" and result["attacks"][0]["eps"] == 0.1
    assert RunDir.open(path).manifest["robustness"]["cumulative"][3][0] == "fab-t"
    code, _, err = run_cli("report", path)
    assert code == 0, err
    assert "| clean | apgd-ce | apgd-t | fab-t | square |" in (path / "report.md").read_text()
    code, _, err = run_cli("evaluate", path, "--fab", "--suite", "none", "-q")
    assert code == 2 and "fab adds FAB-T to the standard suite" in err


@pytest.mark.parametrize(("norm", "eps"), [("linf", None), ("linf", 0.05), ("l2", None), ("l2", 0.3)])
def test_fab_t_targets_batched_give_the_points_of_one_run_per_target(norm, eps, monkeypatch):
    from edgerobust.attacks import fab

    model = tiny_cnn(1).double()
    x = torch.rand((24, *SHAPE), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(x).argmax(1)
    settings = dict(eps=eps, norm=norm, steps=6, n_target_classes=4)
    batched = get_attack("fab-t", **settings)(model, x, y)
    monkeypatch.setattr(fab, "TARGET_BATCH_ELEMENTS", 1)  # one target per batch: the run-per-target algorithm
    one_by_one = get_attack("fab-t", **settings)(model, x, y)
    assert torch.equal(batched, one_by_one)
    found = perturbation_norm(batched, x, norm) > 0
    assert found.any() and (eps is None or not found.all())  # some points found, and (given ε) some not
