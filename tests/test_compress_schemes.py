"""Projections onto the sparsity sets, ADMM updates and penalty, masks through optimiser steps."""
import copy
import dataclasses
import functools
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.compress import ADMMCallback, MaskCallback, build_plan
from edgerobust.compress.admm import keep_schedule
from edgerobust.compress.schemes import PruningPlan, funnel_ratios, keep_k
from edgerobust.errors import EdgeRobustError
from edgerobust.models import build_model
from edgerobust.training import TrainConfig, Trainer
from edgerobust.training.loop import Callback, LoopSetup


@functools.cache
def _tiny_plan(scheme: str) -> tuple[torch.nn.Module, PruningPlan]:
    """conv 1→3 (2×2) → ReLU → conv 3→2 (1×1) → flatten → linear 2→2 on 1×2×2 inputs: every scheme has 2-3 targets
    of at most 12 units, so every choice of kept units can be tried."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 2), torch.nn.ReLU(), torch.nn.Conv2d(3, 2, 1),
                                torch.nn.Flatten(), torch.nn.Linear(2, 2))
    return model, build_plan(model, (1, 2, 2), scheme, 0.5)


def _distance(values, projected) -> float:
    return sum(float((values[p] - z).double().pow(2).sum()) for p, z in projected.items())


@pytest.mark.parametrize("scheme", ["irregular", "filter", "column", "channel"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), ratios=st.lists(st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]), min_size=3,
                                                         max_size=3))
def test_plan_projection_is_the_nearest_point_by_brute_force(scheme, seed, ratios):
    """PruningPlan.project (ADMM's Π_S) against every choice of kept units: feasible, idempotent and nearest."""
    model, plan = _tiny_plan(scheme)
    plan = dataclasses.replace(plan, ratios=ratios[:len(plan.targets)])
    generator = torch.Generator().manual_seed(seed)
    values = {n: torch.randn(p.shape, generator=generator) for n, p in model.named_parameters()}
    z = plan.project(values)
    owned = [set(t.masks(torch.ones(t.units, dtype=torch.bool), values, True)) for t in plan.targets]
    assert set(z) == set().union(*owned) and sum(map(len, owned)) == len(set().union(*owned))  # disjoint targets
    best = 0.0
    for target, ratio in zip(plan.targets, plan.ratios, strict=True):
        k = keep_k(target.units, ratio)
        assert int((target.scores(z) > 0).sum()) == k  # feasible: k units left (normal entries are never zero)
        distances = []
        for kept in itertools.combinations(range(target.units), k):
            keep = torch.zeros(target.units, dtype=torch.bool)
            keep[list(kept)] = True
            masks = target.masks(keep, values, True)
            distances.append(_distance(values, {p: values[p] * m for p, m in masks.items()}))
        best += min(distances)  # the targets own disjoint parameters, so the squared distance is a sum over them
    total = sum(float(v.double().pow(2).sum()) for v in values.values())
    # float64 sums of the same float32 squares in another order: a few ulps of the total
    assert _distance(values, z) <= best + 8 * torch.finfo(torch.float64).eps * total
    again = plan.project({**values, **z})
    assert all(torch.equal(again[p], z[p]) for p in z)


def _digits_model(spec="scnn2:8-16", shape=(1, 8, 8)):
    torch.manual_seed(0)
    return build_model(spec, shape, 10)


@pytest.mark.parametrize("scheme", ["irregular", "filter", "column", "channel"])
def test_plan_projection_keeps_exactly_k_units_per_target(scheme):
    model = _digits_model()
    plan = build_plan(model, (1, 8, 8), scheme, 0.5)
    values = {n: p.detach() for n, p in model.named_parameters()}
    z = plan.project(values)
    for target, ratio in zip(plan.targets, plan.ratios, strict=True):
        kept = target.scores(z) > 0
        assert int(kept.sum()) == max(1, round(ratio * target.units)), target.name
    assert plan.project(z).keys() == z.keys()
    assert all(torch.equal(plan.project(z)[n], z[n]) for n in z)  # idempotent


def test_filter_groups_couple_residual_layers_and_batchnorm():
    model = _digits_model("resnet20", (3, 8, 8))
    plan = build_plan(model, (3, 8, 8), "filter", 0.5)
    stem = plan.targets[0]
    assert stem.name == "net.conv1"
    # the stem's channels flow through stage 0's identity shortcuts: its group holds every stage-0 conv2 and BN
    assert {"net.layers.0.0.conv2", "net.layers.0.2.conv2"} <= set(stem.layers)
    assert "net.bn1.weight" in stem.scored_params and "net.bn1.bias" in stem.scored_params


def test_global_keep_ranks_across_layers_and_keeps_every_layer_alive():
    model = _digits_model()
    plan = build_plan(model, (1, 8, 8), "irregular", 0.1, global_keep=True)
    values = {n: p.detach() for n, p in model.named_parameters()}
    masks = plan.masks(values)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert kept == round(0.1 * total)
    assert all(m.any() for m in masks.values())


def test_funnel_density_strictly_falls_with_depth_and_averages_keep():
    ratios = funnel_ratios(0.5, 5)
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    assert sum(ratios) / 5 == pytest.approx(0.5)
    assert all(0 < r <= 1 for r in ratios)
    plan = build_plan(_digits_model(), (1, 8, 8), "filter", 0.5, funnel=True)
    assert all(a > b for a, b in zip(plan.ratios, plan.ratios[1:], strict=False))
    with pytest.raises(EdgeRobustError, match="funnel"):
        funnel_ratios(1.0, 3)


@pytest.mark.parametrize("keep", [0, -0.5, 1.5, float("nan")])
def test_keep_ratio_outside_unit_interval_is_refused(keep):
    with pytest.raises(EdgeRobustError, match=r"outside \(0, 1\]"):
        build_plan(_digits_model(), (1, 8, 8), "filter", keep)


def test_schemes_a_layer_cannot_take_are_refused_with_the_reason():
    model = _digits_model()
    with pytest.raises(EdgeRobustError, match="output layer"):
        build_plan(model, (1, 8, 8), "filter", 0.5, layers=["net.7"])
    with pytest.raises(EdgeRobustError, match="input image"):
        build_plan(model, (1, 8, 8), "channel", 0.5, layers=["net.0"])
    with pytest.raises(EdgeRobustError, match="only Conv2d and Linear"):
        build_plan(model, (1, 8, 8), "filter", 0.5, layers=["net.1"])  # a ReLU
    with pytest.raises(EdgeRobustError, match="no prunable layers matching"):
        build_plan(model, (1, 8, 8), "filter", 0.5, layers=["decoder.*"])


def test_model_without_prunable_layers_is_refused():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    with pytest.raises(EdgeRobustError, match="no prunable layers"):
        build_plan(net, (1, 8, 8), "irregular", 0.5)
    # a single linear layer has no filters that can go: its outputs are the classes
    with pytest.raises(EdgeRobustError, match="no prunable layers for the 'filter' scheme"):
        build_plan(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), (1, 8, 8), "filter", 0.5)


class _Stub:
    """The parts of a Trainer the callbacks read."""

    def __init__(self, model, optimizer=None):
        self.model, self.optimizer = model, optimizer


def test_admm_penalty_gradient_is_rho_times_theta_minus_z_plus_u():
    model = _digits_model()
    plan = build_plan(model, (1, 8, 8), "filter", 0.5)
    admm = ADMMCallback(plan, rho=0.3)
    admm.on_train_start(_Stub(model))
    for name in admm.u:
        admm.u[name] = torch.randn_like(admm.u[name])
    admm.penalty(_Stub(model)).backward()
    params = dict(model.named_parameters())
    for name in plan.scored_params():
        expected = 0.3 * (params[name].detach() - admm.z[name] + admm.u[name])
        torch.testing.assert_close(params[name].grad, expected)


@pytest.mark.parametrize("dual_rescale", [True, False])
def test_admm_update_projects_theta_plus_u_and_accumulates_the_dual(dual_rescale):
    model = _digits_model()
    plan = build_plan(model, (1, 8, 8), "irregular", 0.3)
    admm = ADMMCallback(plan, rho=1e-2, rho_growth=2.0, dual_rescale=dual_rescale)
    admm.on_train_start(_Stub(model))
    u0 = {n: torch.randn_like(u) for n, u in admm.u.items()}
    admm.u = {n: u.clone() for n, u in u0.items()}
    theta = {n: p.detach().clone() for n, p in model.named_parameters() if n in u0}
    admm.update()
    z = plan.project({n: theta[n] + u0[n] for n in theta})
    for n in theta:
        torch.testing.assert_close(admm.z[n], z[n])
        # ρ doubled: the rescaled u is halved (exact in binary), the old form keeps it
        expected = (u0[n] + (theta[n] - z[n])) * (0.5 if dual_rescale else 1.0)
        assert torch.equal(admm.u[n], expected)
    assert admm.rho == 2e-2


@settings(max_examples=30, deadline=None)
@given(rho=st.floats(1e-4, 10.0), growth=st.floats(1.0, 3.0), seed=st.integers(0, 2**31 - 1))
def test_admm_dual_rescale_keeps_the_unscaled_dual_through_a_change_of_rho(rho, growth, seed):
    """Boyd et al. 2011 §3.4.1: the iterations carry y = ρ·u; the dual step is y ← y + ρ_old(θ − z), and the change
    of ρ that follows must leave y alone: ρ_new·u_new = ρ_old·(u + θ − z). Float64, so a few roundings of products."""
    model, plan = _tiny_plan("filter")
    model = copy.deepcopy(model).double()
    admm = ADMMCallback(plan, rho=rho, rho_growth=growth)
    admm.on_train_start(_Stub(model))
    generator = torch.Generator().manual_seed(seed)
    admm.u = {n: torch.randn(u.shape, generator=generator, dtype=torch.float64) for n, u in admm.u.items()}
    theta = {n: p.detach().clone() for n, p in model.named_parameters() if n in admm.u}
    z = plan.project({m: theta[m] + admm.u[m] for m in theta})
    y = {n: rho * (admm.u[n] + (theta[n] - z[n])) for n in theta}  # the update's own order of additions
    admm.update()
    for n in theta:  # ρ_new · (v · ρ_old/ρ_new) against ρ_old · v: three roundings, each ≤ eps/2 relative
        torch.testing.assert_close(admm.rho * admm.u[n], y[n], rtol=4 * torch.finfo(torch.float64).eps, atol=0)


def test_admm_pulls_weights_towards_the_sparse_set(digits_run):
    from edgerobust.data import load_dataset

    model = digits_run.load_model()
    plan = build_plan(model, digits_run.input_shape, "filter", 0.25)
    admm = ADMMCallback(plan, rho=0.5, rho_growth=1.5)
    train = load_dataset("digits", "train")
    Trainer(model, train, TrainConfig(epochs=1, augment=False, lr=0.02), LoopSetup(callbacks=[admm]),
            progress=False).fit()
    start = admm.residual()
    Trainer(model, train, TrainConfig(epochs=3, augment=False, lr=0.02), LoopSetup(callbacks=[admm]),
            progress=False).fit()
    assert admm.residual() < start


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masks_survive_optimiser_steps(optimizer, digits_run):
    from edgerobust.data import load_dataset

    model = digits_run.load_model()
    plan = build_plan(model, digits_run.input_shape, "filter", 0.5)
    masks = plan.masks({n: p.detach() for n, p in model.named_parameters()})
    callback = MaskCallback(masks)
    trainer = Trainer(model, load_dataset("digits", "train"), TrainConfig(epochs=1, optimizer=optimizer, lr=0.01,
                                                                          augment=False, weight_decay=5e-4),
                                                                          LoopSetup(callbacks=[callback]),
                                                                          progress=False)
    trainer.fit()
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        param = params[name]
        assert torch.count_nonzero(param.detach()[~mask]) == 0, name
        assert param.grad is None or torch.count_nonzero(param.grad[~mask]) == 0, name
        for key, value in trainer.optimizer.state[param].items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                assert torch.count_nonzero(value[~mask]) == 0, (name, key)
        assert torch.count_nonzero(param.detach()[mask]) > 0  # the kept weights did train
    callback.remove()


@settings(max_examples=25, deadline=None)
@given(scheme=st.sampled_from(["irregular", "filter", "column"]), keep=st.floats(0.05, 1.0),
       fractions=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=5), global_keep=st.booleans())
def test_a_relaxed_plan_keeps_more_the_less_far_it_is_and_is_the_plan_at_one(scheme, keep, fractions, global_keep):
    model = _digits_model()
    plan = build_plan(model, (1, 8, 8), scheme, keep, global_keep=global_keep)
    values = {n: p.detach() for n, p in model.named_parameters()}
    kept = [sum(int(m.sum()) for m in plan.relaxed(f).masks(values, scored_only=True).values())
            for f in sorted(fractions)]
    assert kept == sorted(kept, reverse=True)
    assert plan.relaxed(1.0).masks(values).keys() == plan.masks(values).keys()
    assert all(torch.equal(a, b) for a, b in zip(plan.relaxed(1.0).masks(values).values(),
                                                  plan.masks(values).values(), strict=True))
    assert all(bool(m.all()) for m in plan.relaxed(0.0).masks(values, scored_only=True).values())


@pytest.mark.parametrize("kind", ["linear", "staged"])
def test_admm_keep_schedule_tightens_the_constraint_to_the_target(kind, digits_run):
    from edgerobust.data import load_dataset

    model = digits_run.load_model()
    plan = build_plan(model, digits_run.input_shape, "irregular", 0.2)
    admm = ADMMCallback(plan, rho=0.1, keep_schedule=keep_schedule(kind, 4, stages=2))
    train = load_dataset("digits", "train").subset(256)
    densities = []

    class Watch(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            z = admm.z
            densities.append(sum(int(v.ne(0).sum()) for v in z.values()) / sum(v.numel() for v in z.values()))

    history = Trainer(model, train, TrainConfig(epochs=4, augment=False, lr=0.02), LoopSetup(callbacks=[admm,
                                                                                                        Watch()]),
                                                                                                        progress=False).fit().history
    keeps = [h["admm_keep"] for h in history]
    assert keeps == sorted(keeps, reverse=True) and keeps[0] > 0.2 and keeps[-1] == pytest.approx(0.2)
    assert densities == sorted(densities, reverse=True) and densities[-1] == pytest.approx(0.2, abs=0.01)
    assert admm.describe()["keep_schedule"]["kind"] == kind


def test_constant_keep_schedule_is_the_plain_plan():
    assert keep_schedule("constant", 5) is None
    with pytest.raises(EdgeRobustError, match="unknown keep schedule 'cubic'"):
        keep_schedule("cubic", 5)


@settings(max_examples=200, deadline=None)
@given(units=st.integers(1, 512), keep=st.floats(0.01, 1.0), round_to=st.sampled_from([1, 4, 8, 16, 32]))
def test_round_to_keeps_a_multiple_of_it_at_least_it_and_at_most_the_layer(units, keep, round_to):
    k = keep_k(units, keep, round_to)
    assert 1 <= k <= units
    assert k == units or k % round_to == 0
    assert k >= min(units, round_to)
    assert abs(k - keep_k(units, keep)) <= round_to / 2 or k == min(units, round_to)  # the nearest multiple


def test_round_to_reaches_the_plan_and_l1_pruning_and_is_refused_where_it_cannot_apply():
    from edgerobust.compress.l1_filter import l1_filter_masks

    model = build_model("resnet20", (3, 32, 32), 10)
    for plan in (build_plan(model, (3, 32, 32), "filter", 0.25, round_to=16),
                 l1_filter_masks(model, (3, 32, 32), keep=0.25, round_to=16)[0]):
        kept = plan.kept_units({n: p.detach() for n, p in model.named_parameters()})
        assert [int(k.sum()) for k in kept] == [min(t.units, 16) for t in plan.targets]  # 16/32/64 -> 16 each
    plan, _ = l1_filter_masks(model, (3, 32, 32), keep=0.25,
                              layer_keep={"net.conv1": 0.125, "net.layers.0.*": 0.125})  # stage 0: 2 of 16
    kept = sorted(int(k.sum()) for k in plan.kept_units({n: p.detach() for n, p in model.named_parameters()}))
    assert kept[:4] == [2, 2, 2, 2] and kept[-1] == 16  # stage 2: a quarter of 64
    with pytest.raises(EdgeRobustError, match="removes no channels"):
        build_plan(model, (3, 32, 32), "irregular", 0.5, round_to=16)
    with pytest.raises(EdgeRobustError, match="per-layer"):
        build_plan(model, (3, 32, 32), "filter", 0.5, global_keep=True, round_to=16)
    with pytest.raises(EdgeRobustError, match="threshold"):
        l1_filter_masks(model, (3, 32, 32), threshold=0.1, round_to=16)
