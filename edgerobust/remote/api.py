"""`device_bench` and `device_replay`: measure a run's exported bundle on a device and merge the results into the run.

Results go to `RUN/device/<device>/bench.json` and `replay.json` (written after every row, so a failure keeps what
was gathered) and to the manifest's `device` section. Every row carries its record: device, software, power mode,
clocks, temperatures, runtime, precision, threads, batch, warm-up, repeats and spread.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DeviceConfig, validated
from ..devices import DeviceProfile, load_profile
from ..errors import EdgeRobustError
from ..export.bundle import read_manifest, verify_bundle
from ..io import sha256_file, write_json
from ..names import check_name, slug
from ..progress import progress_bar
from ..run import RunDir, now
from ..runner.precisions import PRECISIONS, REFERENCE
from ..runner.runtimes import runtime_names
from .errors import RemoteError, RuntimeMissingError, error_record
from .options import Stability, device_session
from .session import DeviceSession

DEVICE_FORMAT = "edgerobust-device-1"
_MANIFEST_LOCK = threading.Lock()  # a fleet finishes several devices' records in threads


def as_profile(target: str | Path | DeviceProfile) -> DeviceProfile:
    return target if isinstance(target, DeviceProfile) else load_profile(target)


def resolve_bundle(run: RunDir, profile: DeviceProfile, bundle: str | Path | None = None) -> Path:
    """The run's bundle for `profile` (checked on the host first: hashes, target)."""
    if bundle is None:
        export = run.manifest.get("export", {}).get(profile.name)
        if not export:
            raise EdgeRobustError(f"run {run.path} has no export for target '{profile.name}'; run "
                                  f"`edgerobust export {run.path} --target {profile.name}` before using --host")
        bundle = run.bundle(profile.name) or run.path / export["bundle"]  # not found: the error names the record
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest.get("target") != profile.name:
        raise EdgeRobustError(f"bundle {bundle} was exported for target '{manifest.get('target')}', not "
                              f"'{profile.name}'; export for {profile.name} or pass --target "
                              f"{manifest.get('target')}")
    verify_bundle(bundle)
    return bundle


def choose_runtime(session: DeviceSession, profile: DeviceProfile, runtime: str | None) -> str:
    """The profile's first runtime that the runner supports and the device has (or the one asked for)."""
    info = session.info()
    arch = info.get("machine", {}).get("architecture")
    if arch and arch != profile.arch:
        raise EdgeRobustError(f"{session.label} is an {arch} machine but target '{profile.name}' is {profile.arch}; "
                              "choose the device's profile with --target")
    have = info.get("runtimes", {})
    wanted = [runtime] if runtime else [r for r in profile.runtimes if r in runtime_names()]  # what the runner runs
    for name in wanted:
        if have.get(name, {}).get("available"):
            return name
    reasons = "; ".join(f"{n}: {have.get(n, {}).get('reason') or 'not known to the runner'}" for n in wanted)
    raise RuntimeMissingError(f"{session.label} lacks every runtime target '{profile.name}' uses ({reasons}); "
                              "install one (scripts/prepare-jetson.sh shows how) or choose another --target")


def device_facts(session: DeviceSession, transfer: dict | None = None) -> dict[str, Any]:
    """What the device said about itself, plus how it was reached (no secrets: host label and transport only)."""
    info = session.info()
    return {"host": session.label, **session.transport.describe(), "info": info, "transfer": transfer,
            "python_version": session.python_version, "runner_sha256": session.runner_sha,
            "runner": {"sha256": session.runner_sha, "verified": "before every call",
                       "replaced": session.runner_replaced}}


def is_emulated(info: dict[str, Any]) -> bool:
    """The device runs the runner under user-mode emulation (qemu-user): its timings are not latencies."""
    return bool((info.get("emulation") or {}).get("emulated") or (info.get("machine") or {}).get("emulated"))


def row_record(label: str, info: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The facts one figure was measured under."""
    machine, jetson = info.get("machine", {}), info.get("jetson") or {}
    runtime = result.get("runtime", {})
    return {"device": label, "hostname": machine.get("hostname"), "emulated": is_emulated(info),
            "model": jetson.get("model") or machine.get("cpu_model"), "architecture": machine.get("architecture"),
            "software": {"python": machine.get("python"), "os": machine.get("os"), "l4t": jetson.get("l4t"),
                         **(info.get("packages") or {})},
            "power_mode": jetson.get("power_mode"), "clocks_pinned": jetson.get("clocks_pinned"),
            "clocks": {"before": (result.get("before") or {}).get("clocks"),
                       "after": (result.get("after") or {}).get("clocks")},
            "temperatures": {"before": (result.get("before") or {}).get("thermal"),
                             "after": (result.get("after") or {}).get("thermal")},
            "runtime": {k: runtime.get(k) for k in ("name", "version", "provider")},
            "precision": result.get("artifact", {}).get("precision"), "threads": runtime.get("threads"),
            "batch": runtime.get("batch", result.get("batch")), "warmup": result.get("warmup"),
            "repeats": result.get("repeats"),
            "spread": {k: result["compute"].get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "std_ms", "cv")}
            if isinstance(result.get("compute"), dict) else None}


class DeviceRecord:
    """One device's file in a run (`RUN/device/<slug>/<kind>.json`), rewritten atomically after every row."""

    def __init__(self, run: RunDir, slug: str, kind: str, header: dict[str, Any]):
        self.run, self.slug, self.kind = run, slug, kind
        self.path = run.path / "device" / slug / f"{kind}.json"
        self.doc = {"format": DEVICE_FORMAT, "kind": kind, "created": now(), "complete": False, **header,
                    "rows": []}

    def add(self, row: dict[str, Any]) -> None:
        self.doc["rows"].append(row)
        write_json(self.path, self.doc)

    def finish(self, error: BaseException | None = None) -> dict[str, Any]:
        self.doc["complete"] = error is None
        self.doc["error"] = error_record(error) if error else None
        write_json(self.path, self.doc)
        with _MANIFEST_LOCK:
            section = dict(self.run.manifest.get("device", {}))
            entry = dict(section.get(self.slug, {}))
            entry[self.kind] = {"file": str(self.path.relative_to(self.run.path)), "host": self.doc.get("host"),
                                "target": self.doc.get("target"), "complete": self.doc["complete"],
                                "error": self.doc["error"], "rows": len(self.doc["rows"]), "updated": now()}
            section[self.slug] = entry
            self.run.update("device", section)
        return self.doc


def _open(run: RunDir | str | Path, config: DeviceConfig, session: DeviceSession | None, bundle):
    config = validated(config)
    if config.name is not None:  # RUN/device/<name>: refused before anything is read or written
        check_name(config.name, "device name")
    if config.target is None:
        raise EdgeRobustError("no target for the device run; name the device's profile with --target (or [device] "
                              "target)")
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    profile = as_profile(config.target)
    bundle_path = resolve_bundle(run, profile, bundle)  # bad input fails before any connection
    session = session if session is not None else device_session(config)
    # RUN/device/<this>: the given name (checked above) or the host's label made into one
    return config, run, profile, bundle_path, session, config.name if config.name is not None else slug(session.label)


def measure_row(session: DeviceSession, args: list[str], stability: Stability,
                emulated: bool = False) -> dict[str, Any]:
    """`bench` once, then again up to `stability.remeasure` times while the row is noisy or heating up.

    On an emulated device the row is measured once and recorded as `emulated`: its timings are an emulator's, so
    neither the stability limits nor a comparison apply.
    """
    attempts = []
    for _ in range(1 if emulated else stability.remeasure + 1):
        result = session.call("bench", *args)
        ok, why = (True, "emulated: stability not judged") if emulated else stability.settled(result)
        attempts.append({"cv": result["compute"]["cv"], "temperature_rise_c": result.get("temperature_rise_c"),
                         "settled": ok, "why": why})
        if ok:
            break
    return {**result, "emulated": emulated, "attempts": attempts, "settled": attempts[-1]["settled"],
            "flag": None if attempts[-1]["settled"] else f"never settled after {len(attempts)} runs "
                                                          f"({attempts[-1]['why']})"}


def device_bench(run: RunDir | str | Path, config: DeviceConfig, session: DeviceSession | None = None, *,
                 bundle: str | Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Time the run's bundle on the device per precision and batch (compute and end-to-end) into the run.

    `config` is the [device] section (target, name, runtime, threads, precisions, batches, warmup, repeats, the
    stability limits, and how to reach the device unless `session` is given); `bundle` replaces the run's export.
    """
    config, run, profile, bundle_path, session, slug = _open(run, config, session, bundle)
    manifest = read_manifest(bundle_path)
    precisions = list(config.precisions or [p for p in profile.precisions if p in manifest.get("models", {})])
    missing = [p for p in precisions if p not in manifest.get("models", {})]
    if missing:
        raise EdgeRobustError(f"bundle {bundle_path} has no {missing[0]} model (it has "
                              f"{', '.join(manifest.get('models', {}))}); re-export or choose --precision")
    stability = Stability.from_profile(profile.stability, **config.stability)  # options over the profile's
    threads = profile.threads if config.threads is None else config.threads
    transfer = session.connect(bundle_path)
    runtime = choose_runtime(session, profile, config.runtime)
    record = DeviceRecord(run, slug, "bench", {
        "host": session.label, "target": profile.name, "bundle": str(bundle_path), "bundle_sha256": session.bundle_sha,
        "device": device_facts(session, transfer.to_dict()), "stability": vars(stability),
        "emulated": is_emulated(session.info()),
        "settings": {"runtime": runtime, "threads": threads, "warmup": config.warmup, "repeats": config.repeats,
                     "precisions": precisions, "batches": list(config.batches)}})
    jobs = [(p, b) for p in precisions for b in config.batches]
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"bench on {session.label}", total=len(jobs), status="")
            for precision, batch in jobs:
                bar.update(task, status=f"{precision} batch {batch}")
                args = ["--precision", precision, "--runtime", runtime, "--threads", str(threads), "--batch",
                        str(batch), "--warmup", str(config.warmup), "--repeats", str(config.repeats)]
                result = measure_row(session, args, stability, is_emulated(session.info()))
                result["record"] = row_record(session.label, session.info(), result)
                record.add(result)
                bar.advance(task)
    except RemoteError as exc:
        exc.partial = record.finish(exc)
        raise
    return record.finish()


def host_accuracy(bundle: Path) -> float:
    """The host model's accuracy on the bundle's golden set (its fp32 PyTorch outputs, stored in the bundle)."""
    outputs = np.load(bundle / "golden_outputs.npy")
    labels = np.load(bundle / "golden_labels.npy")
    return float((outputs.argmax(1) == labels).mean())


def adversarial_sets(run: RunDir) -> dict[str, Path]:
    """The sets `evaluate` saved (RUN/adversarial/<key>.npz), by key."""
    directory = run.path / "adversarial"
    return {p.stem: p for p in sorted(directory.glob("*.npz"))} if directory.is_dir() else {}


def device_replay(run: RunDir | str | Path, config: DeviceConfig, session: DeviceSession | None = None, *,
                  bundle: str | Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Accuracy of the deployed artifact on the clean set and on the adversarial sets the host found, per
    precision, beside the host's accuracy on the same points and the gap (host − device). Every set keeps its
    per-point predictions and margins, and each precision after the reference says on how many points its prediction
    differs from the reference's (`diverge_from_reference`: fp32 against int8, clean and attacked).

    `config` is the [device] section (target, name, runtime, threads, precisions, replay_batch, and how to reach the
    device unless `session` is given); `bundle` replaces the run's export.
    """
    config, run, profile, bundle_path, session, slug = _open(run, config, session, bundle)
    manifest = read_manifest(bundle_path)
    have = list(manifest.get("models", {}))
    precisions = [p for p in (config.precisions or PRECISIONS) if p in have]  # default: every precision it has
    bundle_sets = {k: bundle_path / e["file"] for k, e in (manifest.get("replay") or {}).items() if k != "clean"}
    extra = {k: p for k, p in adversarial_sets(run).items() if k not in bundle_sets}  # saved after the export
    host = {"clean": host_accuracy(bundle_path)}
    by_hash = {sha256_file(path): key for key, path in extra.items()}  # the device names a sent set by its path
    for key, path in {**bundle_sets, **extra}.items():
        with np.load(path, allow_pickle=False) as data:
            host[key] = float(np.asarray(data["robust"], dtype=bool).mean()) if "robust" in data.files else None
    threads = profile.threads if config.threads is None else config.threads
    transfer = session.connect(bundle_path)
    runtime = choose_runtime(session, profile, config.runtime)
    remote_dir = session.send_sets(run.path / "adversarial", [f"{k}.npz" for k in extra]) if extra else None
    record = DeviceRecord(run, slug, "replay", {
        "host": session.label, "target": profile.name, "bundle": str(bundle_path),
        "bundle_sha256": session.bundle_sha, "device": device_facts(session, transfer.to_dict()),
        "settings": {"runtime": runtime, "threads": threads, "batch": config.replay_batch, "precisions": precisions,
                     "sets": ["clean", *bundle_sets, *extra]}})
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(f"replay on {session.label}", total=len(precisions), status="")
            reference_rows: dict[str, Any] = {}
            for precision in precisions:
                bar.update(task, status=precision)
                args = ["--precision", precision, "--runtime", runtime, "--threads", str(threads), "--batch",
                        str(config.replay_batch)]
                for key in extra:
                    args += ["--set", f"{remote_dir}/{key}.npz"]
                result = session.call("replay", *args)
                rows = {}
                for key, figures in result.get("sets", {}).items():
                    key = by_hash.get(figures.get("sha256"), key)  # a sent file is matched by its content
                    device_accuracy = figures["accuracy"]
                    rows[key] = {**figures, "host_accuracy": host.get(key),
                                 "gap": None if host.get(key) is None else host[key] - device_accuracy}
                    first = reference_rows.get(key, {}).get("predictions")
                    if first is not None and figures.get("predictions") is not None and precision != REFERENCE:
                        rows[key]["diverge_from_reference"] = int(np.sum(np.asarray(first) !=
                                                                         np.asarray(figures["predictions"])))
                if precision == REFERENCE:
                    reference_rows = rows
                record.add({"precision": precision, "artifact": result.get("artifact"),
                            "runtime": result.get("runtime"), "machine": result.get("machine"), "sets": rows,
                            "record": row_record(session.label, session.info(), result)})
                bar.advance(task)
    except RemoteError as exc:
        exc.partial = record.finish(exc)
        raise
    return record.finish()


def device_health(session: DeviceSession, bundle: Path) -> dict[str, Any]:
    """A fleet's health check: `info` and `verify` (with golden parity) on the device."""
    started = time.perf_counter()
    transfer = session.connect(bundle)
    verify = session.call("verify")
    return {"info": session.info(), "verify": verify, "transfer": transfer.to_dict(),
            "seconds": round(time.perf_counter() - started, 3)}
