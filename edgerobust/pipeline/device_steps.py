"""The pipeline's device step: the whole on-device flow (copy, verify, bench, replay) through `--host local`, the
runner in a subprocess, so the main job shows it with no SSH server. Results land in RUN/device/<name>/."""
from __future__ import annotations

import sys

from ..recipe import section
from ..remote.api import device_bench, device_replay
from ..remote.options import RemoteOptions
from .context import PIPELINE_STEPS, PipelineContext

DEVICE_KEYS = {"host", "python", "target", "batches", "repeats", "warmup", "name", "max_cv", "remeasure"}


@PIPELINE_STEPS.register("device", "bench and replay the exported bundle through the device runner (--host local)")
def device_step(ctx: PipelineContext) -> None:
    settings = section(ctx.recipe, "device", DEVICE_KEYS)
    target = settings.get("target") or section(ctx.recipe, "export").get("target", "x86-cpu")
    host = settings.get("host", "local")
    python = settings.get("python") or (sys.executable if host == "local" else None)
    session = RemoteOptions(host, python=python, root=str((ctx.out / "device-work").resolve())).session()
    name = settings.get("name", "local")
    bench = device_bench(ctx.run, target, session, batches=settings.get("batches", [1]),
                         repeats=settings.get("repeats", 30), warmup=settings.get("warmup", 5), name=name,
                         stability={"max_cv": settings.get("max_cv"), "remeasure": settings.get("remeasure", 1)},
                         progress=ctx.progress)
    for row in bench["rows"]:
        rec = row["record"]
        ctx.add("device", f"{name} {rec['precision']} batch {rec['batch']} p50 ms", round(row["compute"]["p50_ms"], 4))
    replay = device_replay(ctx.run, target, session, name=name, progress=ctx.progress)
    for row in replay["rows"]:
        for key, figures in row["sets"].items():
            ctx.add("device", f"{name} {row['precision']} {key} accuracy (gap to host)",
                    f"{figures['accuracy']:.3f} ({figures['gap']:+.3f})" if figures.get("gap") is not None
                    else f"{figures['accuracy']:.3f}")
