"""The pipeline's device step: the whole on-device flow (copy, verify, bench, replay) through `--host local`, the
runner in a subprocess, so the main job shows it with no SSH server. Results land in RUN/device/<name>/."""
from __future__ import annotations

import sys
from dataclasses import replace

from ..config import DeviceConfig, section
from ..devices import load_profile
from ..names import slug
from ..remote.api import device_bench, device_replay
from ..remote.hosts import parse_host
from ..remote.options import device_session
from ..report.devices import set_labels
from .context import PIPELINE_STEPS, PipelineContext


def device_config(ctx: PipelineContext) -> DeviceConfig:
    """[device], its target defaulting to the [export] one and a local host's Python to this interpreter."""
    config: DeviceConfig = section(ctx.recipe, "device")
    return replace(config, target=config.target or section(ctx.recipe, "export").target,
                   python=config.python or (sys.executable if config.host == "local" else None))


def check_device(ctx: PipelineContext) -> None:
    """The device's target and host spelling (nothing is contacted), before any step runs."""
    config = device_config(ctx)
    load_profile(config.target)
    parse_host(config.host, config.python)


@PIPELINE_STEPS.register("device", "bench and replay the exported bundle through the device runner (--host local)")
def device_step(ctx: PipelineContext) -> None:
    config = device_config(ctx)  # named after its host as written (RUN/device/local/), not this interpreter's path
    config = replace(config, root=config.root or str((ctx.out / "device-work").resolve()),
                     name=config.name or slug(config.host))
    session = device_session(config)
    name = config.name
    bench = device_bench(ctx.run, config, session, progress=ctx.progress)
    for row in bench["rows"]:
        rec = row["record"]
        ctx.add("device", f"{name} {rec['precision']} batch {rec['batch']} p50 ms", round(row["compute"]["p50_ms"], 4))
    replay = device_replay(ctx.run, config, session, progress=ctx.progress)
    labels = set_labels(ctx.run)
    for row in replay["rows"]:
        for key, figures in row["sets"].items():
            ctx.add("device", f"{name} {row['precision']} {labels.get(key, key)} accuracy (gap to host)",
                    f"{figures['accuracy']:.3f} ({figures['gap']:+.3f})" if figures.get("gap") is not None
                    else f"{figures['accuracy']:.3f}")


device_step.check = check_device  # type: ignore[attr-defined]
