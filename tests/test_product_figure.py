"""benchmarks/product_figure.py's pieces: the stage-aware configuration's widths, the recipe the robustness step
compresses with, and the per-node profile's sums."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import product_figure as pf  # noqa: E402


def test_stage_aware_keeps_thin_fp32_stage0_and_int8_width_16_later():
    dense = pf.dense_resnet20()
    slim = pf.pruned(dense, pf.CONFIGS["stage-aware"])
    assert pf.widths(dense) == [16] * 7 + [32] * 7 + [64] * 7
    assert pf.widths(slim) == [2] * 7 + [16] * 14  # the stem and stage 0: 2 of 16; stages 1-2: the kernel's 16
    x = torch.rand(4, *pf.CIFAR)
    assert pf.pruned(dense, pf.CONFIGS["round16-0.25"])(x).shape == (4, 10)
    assert set(pf.widths(pf.pruned(dense, pf.CONFIGS["round16-0.25"]))) == {16}


def test_the_robustness_recipe_is_the_builtin_one_with_the_layer_keeps(tmp_path):
    from edgerobust.recipe import load_recipe

    path = pf.compress_recipe(pf.CONFIGS["stage-aware"], tmp_path / "r.toml")
    assert dict(load_recipe(str(path))["compress"]["layer_keep"]) == pf.CONFIGS["stage-aware"]["layer_keep"]


def test_node_profile_sums_its_nodes_by_stage(tmp_path):
    from edgerobust.bench.api import export_for_bench

    path = export_for_bench(pf.build_model("resnet20", pf.CIFAR, 10).eval(), pf.CIFAR, tmp_path / "m.onnx", 17)
    profile = pf.node_profile(Path(path), np.random.default_rng(0).random((2, *pf.CIFAR), np.float32), runs=2)
    assert profile["nodes"] and {"stage0", "stage1", "stage2"} <= set(profile["by_stage_ms"])
    stages = profile["by_stage_ms"]  # each figure rounded to 3 decimals: off by at most 5e-4
    assert sum(stages.values()) == pytest.approx(profile["sum_ms"], abs=5e-4 * (len(stages) + 1))


def test_frontier_configurations_differ_only_in_the_stage0_stream():
    dense = pf.dense_resnet20()
    assert pf.widths(pf.pruned(dense, pf.CONFIGS["stage-aware-inner"])) == [2, 1] * 3 + [2] + [16] * 14
    assert pf.widths(pf.pruned(dense, pf.CONFIGS["stage-aware-stream3"])) == [3, 1] * 3 + [3] + [16] * 14
    assert pf.FRONTIER[0] == pf.PRODUCT and set(pf.FRONTIER) <= set(pf.CONFIGS)


def test_frontier_rows_judge_each_configuration_on_its_mean_drop_and_its_artifact_speed():
    fast = {"frontier": ["a", "b"], "timing": {"1": {"factors": {"min_ms": {
        "a": {"total_measured": 8.5}, "b": {"total_measured": 7.5}}}}}}
    robust = {"a": [{"pgd_drop_points": 1.0}, {"pgd_drop_points": 4.0}],
              "b": [{"pgd_drop_points": 1.0}, {"pgd_drop_points": 2.0}]}
    rows = pf.frontier_rows(fast, robust)
    assert rows["a"]["pgd_drop_points"] == 2.5 and rows["a"]["met_speed"] and not rows["a"]["met_robustness"]
    assert rows["b"]["pgd_drop_points"] == 1.5 and rows["b"]["met_robustness"] and not rows["b"]["met_speed"]
    assert not rows["a"]["met_both"] and not rows["b"]["met_both"]
    assert pf.frontier_rows(fast, None)["a"]["met_robustness"] is None


def test_factors_cover_every_configuration_and_the_measured_artifacts_of_the_frontier():
    """The frontier's configurations have a measured artifact, only the product one with QAT's scales too."""
    kinds = {"fp32": 4.0, "int8": 3.0, "mixed": 2.0}
    stats = {"dense/fp32": 20.0, "dense/int8": 10.0, "dense/torch-fp32": 40.0}
    for name in pf.CONFIGS:
        stats |= {f"{name}/{kind}": ms for kind, ms in kinds.items()}
    stats |= {f"{name}/measured": 2.5 for name in pf.FRONTIER} | {f"{pf.PRODUCT}/measured-qat": 2.0}
    rows = pf.factors({k: {"min_ms": v} for k, v in stats.items()}, "min_ms")
    assert rows["runtime"] == 2.0 and rows["dense_int8"] == 2.0
    assert all(rows[name]["total"] == 10.0 and rows[name]["pruning"] == 5.0 for name in pf.CONFIGS)
    assert all(rows[name]["total_measured"] == 8.0 for name in pf.FRONTIER)
    assert rows[pf.PRODUCT]["total_measured_qat"] == 10.0
    assert "total_measured_qat" not in rows[pf.FRONTIER[1]] and "total_measured" not in rows["uniform-0.5"]
