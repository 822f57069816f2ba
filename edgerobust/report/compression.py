"""The report's compression section: per-layer density / params / FLOPs / bytes, weight histograms, curves and the
trade-off table (keep ratio × clean, PGD, standard suite; Marshall Table 4.2's shape)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import is_adversarial
from ..io import load_torch
from ..run import RunDir
from .plots import new_figure, plt, save_figure
from .sections import md_table, register_section
from .tradeoff import tradeoff_columns, tradeoff_table_rows


def _weights(path: Path) -> torch.Tensor:
    state = load_torch(path)
    # Conv / Linear weights only: BN scales and biases would blur the picture of what pruning removed
    return torch.cat([v.flatten().abs() for k, v in state.items() if k.endswith(".weight") and v.ndim in (2, 4)])


def weight_histograms(dense: torch.Tensor, pruned: torch.Tensor, path: Path, zeros: int) -> Path:
    fig, ax = new_figure(6.5, 3.8)
    floor = 1e-6
    low = max(float(dense[dense > 0].min()) if (dense > 0).any() else floor, floor)
    high = max(float(dense.max()), float(pruned.max())) * 1.01 + 1e-12
    bins = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), 60).numpy()
    ax.hist(dense.clamp_min(low).numpy(), bins=bins, alpha=0.55, label=f"dense ({len(dense):,} weights)")
    kept = pruned[pruned > 0]
    ax.hist(kept.clamp_min(low).numpy(), bins=bins, alpha=0.55,
            label=f"pruned ({len(kept):,} kept, {zeros:,} removed or zero)")
    ax.set(xscale="log", yscale="log", xlabel="|weight| (Conv2d / Linear)", ylabel="count",
           title="weight magnitudes, dense vs pruned")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def stage_curves(history: list[dict], path: Path) -> Path:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    x = list(range(1, len(history) + 1))
    ax_loss.plot(x, [h["train_loss"] for h in history], marker="o", label="train loss")
    if history and "test_loss" in history[0]:
        ax_loss.plot(x, [h.get("test_loss") for h in history], marker="o", label="test loss")
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "test")):
        ax_acc.plot(x, [h.get(key) for h in history], marker="o", label=label)
    residual = [h.get("admm_residual") for h in history]
    if any(r is not None for r in residual):
        ax_res = ax_loss.twinx()
        ax_res.plot(x, [r if r is not None else float("nan") for r in residual], "k--", marker=".",
                    label="ADMM ‖θ−z‖/‖θ‖")
        ax_res.set_ylabel("ADMM residual")
        ax_res.legend(loc="upper center", fontsize=8)
    for i in range(1, len(history)):
        if history[i].get("stage") != history[i - 1].get("stage"):
            for ax in (ax_loss, ax_acc):
                ax.axvline(i + 0.5, color="grey", linestyle=":")
    ax_loss.set(xlabel="epoch (ADMM, then masked retraining)", ylabel="loss", title="compression: loss")
    ax_acc.set(xlabel="epoch (ADMM, then masked retraining)", ylabel="accuracy", ylim=(0, 1.02),
               title="compression: accuracy")
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_acc.legend(fontsize=8)
    return save_figure(fig, path)


@register_section("compression", "per-layer density, params, FLOPs and bytes; weight histograms; trade-off table")
def compression_section(run: RunDir, figures: Path) -> str | None:
    comp = run.manifest.get("compression")
    if not comp:
        return None
    cfg, stats = comp["config"], comp["stats"]
    t = stats["totals"]
    lines = ["## Compression", "",
             f"Method **{cfg['method']}**, scheme **{cfg['scheme']}**, keep {cfg['keep']:g}"
             + (" (global ranking)" if cfg.get("global_keep") else "") + (", funnel" if cfg.get("funnel") else "")
             + (f"; ADMM ρ={cfg['rho']:g} ×{cfg['rho_growth']:g} every {cfg['admm_interval']} epoch(s)"
                + (" (scaled dual not rescaled)" if cfg.get("dual_rescale") is False else "") + ", "
                f"{cfg['admm_epochs']} epochs"
                + (f", keep ratio falling ({cfg['keep_schedule']})" if cfg.get("keep_schedule", "constant")
                   != "constant" else "") if cfg["method"] == "admm" else "")
             + f"; {cfg['retrain_epochs']} masked retraining epochs."
             + " " + _training_loss(comp.get("adversarial")), ""]
    removed = comp.get("removed_channels") or {}
    if removed:
        lines += [f"Physically removed {sum(removed.values()):,} channels (dependency-aware, torch-pruning); the slim "
                  f"network's logits differ from the masked network's by at most {comp['max_output_difference']:.2g}.",
                  ""]
    elif not comp.get("structured"):
        lines += ["Irregular / column sparsity keeps every layer's shape: the zeros save compute only on sparse "
                  "kernels (see *effective FLOPs*).", ""]
    rows = [(r["layer"], "x".join(map(str, r["shape_before"])), "x".join(map(str, r["shape_after"])), r["density"],
             r["params_before"], r["params_after"], r["flops_before"], r["flops_after"], r["effective_flops_after"],
             r["bytes_before"], r["bytes_after"]) for r in stats["layers"]]
    rows.append(("**total**", "", "", t["density"], t["params_before"], t["params_after"], t["flops_before"],
                 t["flops_after"], t["effective_flops_after"], t["bytes_before"], t["bytes_after"]))
    lines += [md_table(("layer", "shape before", "shape after", "density", "params before", "params after",
                        "FLOPs before", "FLOPs after", "effective FLOPs", "bytes before", "bytes after"), rows), "",
              f"FLOP reduction {t['flop_reduction']:.2f}×; all parameters {t['params_before']:,} → "
              f"{t['params_after']:,}; state dict {t['bytes_before']:,} → {t['bytes_after']:,} bytes.", ""]
    source = next((p for p in run.manifest.get("parents", []) if p.get("role") == "compressed from"), None)
    if source and (Path(source["path"]) / "model.pt").is_file():
        dense = _weights(Path(source["path"]) / "model.pt")
        pruned = _weights(run.weights_path)
        plot = weight_histograms(dense, pruned, figures / "weight_histograms.png", len(dense) - int((pruned > 0).sum()))
        lines += [f"![weight histograms]({plot.relative_to(run.path)})", ""]
    history = run.manifest.get("training", {}).get("history") or []
    if history:
        plot = stage_curves(history, figures / "compression_curves.png")
        lines += [f"![compression curves]({plot.relative_to(run.path)})", ""]
    evaluation = comp.get("evaluation")
    if evaluation:
        rows = evaluation["rows"]
        s = evaluation["settings"]
        lines += ["### Trade-off", "",
                  f"Accuracy in % at ε = {s.get('eps'):.4g} (L∞): clean on the whole test split, PGD and the suite "
                  f"on a fixed subset of {rows[0].get('n_attacked')} points. Robust accuracy is an upper bound; the "
                  "suite's columns are cumulative and never increase left to right.", "",
                  md_table(tradeoff_columns(rows), tradeoff_table_rows(rows)), ""]
    return "\n".join(lines)


def _training_loss(adv: dict | None) -> str:
    if not is_adversarial(adv):
        return "Natural training loss."
    return "Adversarial training loss: " + ", ".join(f"{k}={v}" for k, v in adv.items()) + "."
