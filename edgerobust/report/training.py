"""The report's model and training section."""
from __future__ import annotations

from pathlib import Path

from ..run import RunDir
from .plots import training_curves
from .sections import md_table, register_section


@register_section("training", "model, data, training settings and curves")
def training_section(run: RunDir, figures: Path) -> str | None:
    m = run.manifest
    model, metrics = m["model"], m.get("metrics", {})
    data = m.get("dataset", {})
    lines = ["## Model and training", ""]
    rows = [("model", model["spec"]), ("input shape", "x".join(map(str, model["input_shape"]))),
            ("classes", model["num_classes"]), ("parameters", metrics.get("parameters")),
            ("FLOPs / image", metrics.get("flops")),
            ("dataset", f"{run.dataset_name or '?'} ({data.get('train', {}).get('size', '?')} train / "
                        f"{data.get('test', {}).get('size', '?')} test)"),
            ("seed", m.get("seed")), ("clean test accuracy", metrics.get("test_accuracy"))]
    lines += [md_table(("", "value"), rows), ""]
    pca = model.get("pca")
    if pca:
        lines += [f"PCA first layer (Song's linear decomposition): x ↦ μ + (x − μ)WWᵀ in pixel space, "
                  f"{pca['components']} of {pca['dims']} components ({pca.get('rule', '')}, σ={pca.get('sigma')}, "
                  f"k={pca.get('k')}), {pca.get('variance_kept', 0):.1%} of the variance of the "
                  f"{pca.get('fitted_on', {}).get('split', 'training')} split; non-expansive, so a smoothing "
                  "certificate holds in pixel space.", ""]
    training = m.get("training")
    if training:
        cfg = training.get("config", {})
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in cfg.items()) + ".", ""]
        loss = training.get("loss")
        if loss:
            lines += ["Loss: " + ", ".join(f"{k}={v}" for k, v in loss.items()) + ".", ""]
        qat = training.get("qat")
        if qat:
            lines += [f"Quantization-aware training: weights {qat['weights']}, activations {qat['activations']}, "
                      f"rounding {qat['rounding']}; observers frozen at step {qat['freeze_step']}; "
                      f"{len(qat.get('points', {}))} conv/linear layers carry the scales the int8 export uses.", ""]
        if training.get("stopped_early"):
            lines += [f"**Stopped early:** {training['stopped_early']}", ""]
        history = training.get("history") or []
        if history:
            plot = training_curves(history, figures / "training_curves.png", m["model"]["spec"])
            lines += [f"![training curves]({plot.relative_to(run.path)})", ""]
    return "\n".join(lines)
