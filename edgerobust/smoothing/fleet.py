"""CERTIFY across the devices of a fleet: the points' rows split into one contiguous shard per device, every shard
merged into the one smoothing.json entry of its settings (the entry's key leaves the host out, so it holds only when
every device runs the same artifact; a fleet whose devices hold different artifacts is refused before any work)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import SmoothConfig
from ..run import RunDir
from .api import SmoothingError, points_of, smooth_config, smooth_run


def smooth_fleet(run: RunDir | str | Path, fleet: Any, config: SmoothConfig | None = None, *,
                 progress: bool | None = False, **overrides: Any) -> list[dict[str, Any]]:
    """One shard of the rows per device of `fleet` (remote.fleet.load_fleet: each device a complete DeviceConfig,
    its target from the fleet file or the command line), run `fleet.concurrency` at a time; returns one row per
    device with its shard and the merged entries."""
    from ..export.bundle import read_manifest
    from ..remote.fleet import plan_devices

    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = smooth_config(config, **overrides)
    plans = []
    for device, _, bundle in plan_devices(run, fleet):  # targets and bundles checked before any device
        entry = (read_manifest(bundle).get("models") or {}).get(config.precision)
        if not entry:
            raise SmoothingError(f"bundle {bundle} (device {device.name}) has no {config.precision} model")
        plans.append((device, device.target, bundle, entry.get("sha256")))
    held = {sha for *_, sha in plans}
    if len(held) > 1:
        which = ", ".join(f"{d.name}: {str(sha)[:12]}" for d, _, _, sha in plans)
        raise SmoothingError(f"the fleet's devices hold different {config.precision} artifacts ({which}); certify "
                             "one artifact per run of smooth: give every device the same target")
    _, _, rows = points_of(run, config)
    share = -(-len(rows) // len(plans))
    shards = [(plan, rows[i * share:(i + 1) * share]) for i, plan in enumerate(plans)]

    def one(item) -> dict[str, Any]:
        (device, name, bundle, _), part = item
        if not len(part):
            return {"device": device.name, "rows": [], "entries": []}
        entries = smooth_run(run, config, device=replace(device, target=name), artifact=bundle, progress=progress,
                             start=part.start, count=len(part))
        return {"device": device.name, "rows": [part.start, part.stop], "entries": entries}

    with ThreadPoolExecutor(max_workers=max(1, fleet.concurrency)) as pool:
        return list(pool.map(one, shards))
