"""The pipeline's device step: the whole on-device flow (copy, verify, bench, replay) through `--host local`, the
runner in a subprocess, so the main job shows it with no SSH server. Results land in RUN/device/<name>/."""
from __future__ import annotations

import sys

from ..config import DeviceConfig, section
from ..devices import load_profile
from ..remote.api import device_bench, device_replay
from ..remote.hosts import parse_host
from ..remote.options import RemoteOptions
from .context import PIPELINE_STEPS, PipelineContext


def check_device(ctx: PipelineContext) -> None:
    """The device's target and host spelling (nothing is contacted), before any step runs."""
    settings: DeviceConfig = section(ctx.recipe, "device")
    load_profile(settings.target or section(ctx.recipe, "export").target)
    parse_host(settings.host, settings.python)


@PIPELINE_STEPS.register("device", "bench and replay the exported bundle through the device runner (--host local)")
def device_step(ctx: PipelineContext) -> None:
    settings: DeviceConfig = section(ctx.recipe, "device")
    target = settings.target or section(ctx.recipe, "export").target
    python = settings.python or (sys.executable if settings.host == "local" else None)
    session = RemoteOptions(settings.host, python=python, root=str((ctx.out / "device-work").resolve())).session()
    name = settings.name
    bench = device_bench(ctx.run, target, session, batches=settings.batches, repeats=settings.repeats,
                         warmup=settings.warmup, name=name, progress=ctx.progress,
                         stability={"max_cv": settings.max_cv, "remeasure": settings.remeasure})
    for row in bench["rows"]:
        rec = row["record"]
        ctx.add("device", f"{name} {rec['precision']} batch {rec['batch']} p50 ms", round(row["compute"]["p50_ms"], 4))
    replay = device_replay(ctx.run, target, session, name=name, progress=ctx.progress)
    for row in replay["rows"]:
        for key, figures in row["sets"].items():
            ctx.add("device", f"{name} {row['precision']} {key} accuracy (gap to host)",
                    f"{figures['accuracy']:.3f} ({figures['gap']:+.3f})" if figures.get("gap") is not None
                    else f"{figures['accuracy']:.3f}")


device_step.check = check_device  # type: ignore[attr-defined]
