"""`device_certify_check`: the device's own outputs inside certified balls, checked against the certificates.

For every point `edgerobust certify` certified (RUN/certificates.json: per artifact, ε and arithmetic model the
per-point flags and lower bounds of y_label - y_j over the ball), the device computes raw logits with the runner's
`logits` command at `samples` points drawn inside the ball (runner/balls.py, keyed by seed and row, the stream's
fingerprint checked against the host's own draw) and at every point the attacks saved (RUN/adversarial/*.npz) that
lies inside the ball. Every output must satisfy y_label - y_j >= bound_j, compared exactly in float64 from the
float32 logits, and, where the certificate keeps them (`logit_lower`, `logit_upper` of the certified points), every
logit must lie in its certified interval; a non-finite output is a violation. Violations are counted and named per
point, never hidden (issue 22: "No Soundness in the Real World", arXiv 2506.01054: a certificate checked on the host
does not vouch for the device). The real-number model is not checked (it bounds the real-valued network, not what
the artifact computes); a vacuous model certifies nothing, so it has nothing to check.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DeviceConfig
from ..errors import EdgeRobustError
from ..io import sha256_file, write_json
from ..progress import progress_bar
from ..run import RunDir, now
from ..runner.balls import fingerprint as ball_fingerprint
from .api import (
    DeviceRecord,
    _open,
    adversarial_sets,
    choose_runtime,
    device_facts,
    row_record,
)
from .errors import RemoteError
from .fleet import Fleet, failed, plan_devices
from .session import DeviceSession

CERTIFICATES_FILE = "certificates.json"  # certify/api.py's file
BYTES_PER_LOGIT = 24  # a float32 written as a JSON number with its separator, at most ("-1.2345678901234567e-05, ")


class CertifyCheckError(EdgeRobustError):
    """Bad input for the device check: no certificates, or certificates of another artifact."""


def read_certificates(run: RunDir) -> dict[str, Any]:
    path = run.path / CERTIFICATES_FILE
    if not path.is_file():
        raise CertifyCheckError(f"run {run.path} has no {CERTIFICATES_FILE}; run `edgerobust certify {run.path}` "
                                "before checking on a device")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CertifyCheckError(f"{path} is not readable JSON ({exc}); run `edgerobust certify {run.path}` again") \
            from None
    artifacts = doc.get("artifacts") if isinstance(doc, dict) else None
    if not isinstance(artifacts, list) or doc.get("norm") not in ("inf", "2") or not isinstance(doc.get("n"), int):
        raise CertifyCheckError(f"{path} is not a certificates file (no artifacts, norm or n); run `edgerobust "
                                f"certify {run.path}` again")
    for artifact in artifacts:
        for row in artifact.get("rows", []):
            points = row.get("points")
            if not isinstance(points, dict) or len(points.get("certified", [])) != doc["n"] or \
                    len(points.get("margin_lower", [])) != doc["n"]:
                raise CertifyCheckError(f"{path} has no per-point bounds for {artifact.get('precision')} at ε "
                                        f"{row.get('eps')} ({row.get('arithmetic')}); it predates the device check: "
                                        f"run `edgerobust certify {run.path}` again")
    return doc


def plan(doc: dict[str, Any], manifest: dict[str, Any], bundle: Path, precisions: list[str] | None,
         arithmetic: list[str] | None, shard: tuple[int, int] = (0, 1)) -> list[dict[str, Any]]:
    """Per (precision, ε): the arithmetic rows to check and the union of their certified points (of those, the
    ones at positions `index`, `index + count`, … for shard (index, count))."""
    jobs = []
    for artifact in doc["artifacts"]:
        precision = artifact["precision"]
        if precisions and precision not in precisions:
            continue
        entry = manifest.get("models", {}).get(precision)
        if entry is None or sha256_file(bundle / entry["file"]) != artifact.get("sha256"):
            raise CertifyCheckError(f"certificates.json certifies a {precision} artifact ({artifact.get('file')}, "
                                    f"sha256 {str(artifact.get('sha256'))[:12]}…) that is not this bundle's "
                                    f"({bundle}); run `edgerobust certify` on this bundle again")
        by_eps: dict[float, list[dict[str, Any]]] = {}
        for row in artifact["rows"]:
            name = row["arithmetic"]
            if (arithmetic and name not in arithmetic) or (not arithmetic and name == "real") or row.get("vacuous"):
                continue
            by_eps.setdefault(float(row["eps"]), []).append(row)
        for eps, rows in by_eps.items():
            points = sorted({i for row in rows for i, ok in enumerate(row["points"]["certified"]) if ok})
            points = points[shard[0]::shard[1]]
            jobs.append({"precision": precision, "eps": eps, "rows": rows, "points": points})
    return jobs


def within(x_adv: np.ndarray, centre: np.ndarray, eps: float, norm: str) -> np.ndarray:
    """Which attacked points lie inside the ball (float64, the box included)."""
    diff = (x_adv.astype(np.float64) - centre.astype(np.float64)).reshape(len(x_adv), -1)
    size = np.abs(diff).max(1) if norm == "inf" else np.linalg.norm(diff, axis=1)
    flat = x_adv.reshape(len(x_adv), -1)
    return (size <= eps) & (flat >= 0).all(1) & (flat <= 1).all(1)


def violations(outputs: np.ndarray, label: int, bound: list[float | None],
               interval: tuple[list[float | None], list[float | None]] | None = None) -> dict[str, Any]:
    """Samples whose margin y_label - y_j falls below the certified lower bound for some j, or (with `interval`,
    the certified [lower, upper] of each logit) whose logit y_j leaves its interval, or that are not finite. A
    sample is one violation whichever bounds it breaks; `margin_violations` and `interval_violations` count each."""
    wide = outputs.astype(np.float64)
    margin = wide[:, label:label + 1] - wide
    lower = np.array([-np.inf if b is None else b for b in bound], dtype=np.float64)
    lower[label] = -np.inf
    slack = margin - lower  # >= 0 everywhere when the bound holds
    slack[:, label] = np.inf
    finite = np.isfinite(wide).all(1)
    bad_margin = (slack < 0).any(1)
    bad = ~finite | bad_margin
    first = None
    if bad.any():
        s = int(np.argmax(bad))
        key = np.where(np.isnan(slack[s]), -np.inf, slack[s])  # a non-finite output is the worst
        key[label] = np.inf
        j = int(np.argmin(key))
        first = {"sample": s, "class": j, "margin": float(margin[s, j]) if np.isfinite(margin[s, j]) else None,
                 "bound": float(lower[j])}
    kept = slack[np.isfinite(slack)]
    out = {"violations": int(bad.sum()), "margin_violations": int(bad_margin.sum()),
           "min_slack": float(kept.min()) if kept.size else None, "first": first}
    if interval is not None:
        lo = np.array([-np.inf if v is None else v for v in interval[0]], dtype=np.float64)
        hi = np.array([np.inf if v is None else v for v in interval[1]], dtype=np.float64)
        gap = np.minimum(wide - lo, hi - wide)  # >= 0 where each logit lies in its interval
        bad_interval = (gap < 0).any(1)
        bad |= bad_interval
        out["violations"], out["interval_violations"] = int(bad.sum()), int(bad_interval.sum())
        inside = gap[np.isfinite(gap)]
        out["min_interval_slack"] = float(inside.min()) if inside.size else None
        if first is None and bad_interval.any():
            s = int(np.argmax(bad_interval))
            j = int(np.argmin(np.where(np.isnan(gap[s]), np.inf, gap[s])))
            out["first"] = {"sample": s, "class": j, "logit": float(wide[s, j]), "interval": [float(lo[j]),
                                                                                             float(hi[j])]}
    return out


def device_certify_check(run: RunDir | str | Path, config: DeviceConfig, session: DeviceSession | None = None, *,
                         bundle: str | Path | None = None, samples: int = 10_000, seed: int = 0,
                         arithmetic: list[str] | None = None, shard: tuple[int, int] = (0, 1),
                         progress: bool | None = None) -> dict[str, Any]:
    """Check the device's outputs at `samples` points per certified ball, and at the attacks' points inside it,
    against the certificates; RUN/device/<device>/certify_check.json (one row per precision, ε and arithmetic model,
    per point the samples, attacked points and violations) and the manifest's `device` section.

    `config` is the [device] section (target, name, runtime, threads, precisions, replay_batch, and how to reach the
    device unless `session` is given); `bundle` replaces the run's export; `shard` (index, count): check only every
    count-th certified point from the index-th (a fleet's share, `certify_check_fleet`)."""
    if not 0 <= shard[0] < shard[1]:
        raise CertifyCheckError(f"shard {shard[0]} of {shard[1]} does not exist; shards are 0..count-1")
    if samples < 1:
        raise CertifyCheckError(f"--check-samples {samples} must be at least 1")
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    doc = read_certificates(run)  # bad input fails before any connection
    config, run, profile, bundle_path, session, slug = _open(run, config, session, bundle)
    from ..export.bundle import read_manifest

    manifest = read_manifest(bundle_path)
    jobs = plan(doc, manifest, bundle_path, config.precisions, arithmetic, shard)
    classes = int(np.load(bundle_path / "golden_outputs.npy", mmap_mode="r").shape[1])
    per_call = int(config.max_output_mib * 2**20 * 0.8) // (BYTES_PER_LOGIT * classes * samples)  # rows per call
    if per_call < 1:
        raise CertifyCheckError(f"--check-samples {samples} × {classes} logits per point does not fit in one answer "
                                f"of --max-output {config.max_output_mib:g} MiB; lower --check-samples or raise "
                                "--max-output")
    norm, n = doc["norm"], doc["n"]
    centres = np.load(bundle_path / "golden_inputs.npy")[:n].astype(np.float32)
    labels = np.load(bundle_path / "golden_labels.npy")[:n].astype(np.int64)
    attacked = {}
    for key, path in adversarial_sets(run).items():
        with np.load(path, allow_pickle=False) as data:
            if "x_adv" in data.files:
                attacked[key] = np.asarray(data["x_adv"], dtype=np.float32)
    threads = profile.threads if config.threads is None else config.threads
    transfer = session.connect(bundle_path)
    runtime = choose_runtime(session, profile, config.runtime)
    record = DeviceRecord(run, slug, "certify_check", {
        "host": session.label, "target": profile.name, "bundle": str(bundle_path),
        "bundle_sha256": session.bundle_sha, "device": device_facts(session, transfer.to_dict()),
        "certificates": {"file": CERTIFICATES_FILE, "method": doc.get("method"), "norm": norm, "n": n},
        "settings": {"runtime": runtime, "threads": threads, "batch": config.replay_batch, "samples": samples,
                     "seed": seed, "attack_sets": sorted(attacked), "shard": list(shard)},
        "violations": 0, "checked_outputs": 0})
    try:
        with tempfile.TemporaryDirectory() as temp:
            with progress_bar(progress) as bar:
                task = bar.add_task(f"certify check on {session.label}", total=len(jobs), status="")
                for job in jobs:
                    bar.update(task, status=f"{job['precision']} ε={job['eps']:g}")
                    base = ["--precision", job["precision"], "--runtime", runtime, "--threads", str(threads),
                            "--batch", str(config.replay_batch)]
                    sampled, meta = _sampled(session, temp, centres, job, (samples, seed, norm, per_call), base)
                    hits = _attacked(session, temp, centres, attacked, job, norm, base)
                    for row in job["rows"]:
                        record.add(_check_row(job, row, labels, sampled, hits, samples, meta))
                        record.doc["violations"] += record.doc["rows"][-1]["violations"]
                        record.doc["checked_outputs"] += record.doc["rows"][-1]["checked_outputs"]
                    bar.advance(task)
    except RemoteError as exc:
        exc.partial = record.finish(exc)
        raise
    return record.finish()


def _send(session: DeviceSession, temp: str, name: str, x: np.ndarray) -> str:
    path = Path(temp) / name
    np.savez(path, x=np.ascontiguousarray(x, dtype=np.float32))
    return f"{session.send_sets(Path(temp), [name])}/{name}"


def _sampled(session, temp, centres, job, draw, base):
    """Logits at `samples` points in each certified ball, `per_call` balls per runner call (so that an answer fits
    the output cap)."""
    samples, seed, norm, per_call = draw
    out: dict[int, np.ndarray] = {}
    meta: dict[str, Any] = {}
    if not job["points"]:
        return out, meta
    remote = _send(session, temp, "centres.npz", centres)
    for start in range(0, len(job["points"]), per_call):
        rows = job["points"][start:start + per_call]
        result = session.call("logits", *base, "--set", remote, "--rows", ",".join(map(str, rows)), "--samples",
                              str(samples), "--eps", repr(job["eps"]), "--norm", norm, "--seed", str(seed))
        meta = {"artifact": result.get("artifact"), "runtime": result.get("runtime"), "machine": result.get("machine"),
                "record": row_record(session.label, session.info(), result)}
        for item in result["rows"]:
            r = item["row"]
            expected = ball_fingerprint(centres[r], job["eps"], norm, seed, r)
            if r not in rows or item.get("fingerprint") != expected:
                raise RemoteError(f"{session.label}: the device drew other points than the host for point {r} "
                                  f"(fingerprint {item.get('fingerprint')}, host {expected}); its numpy draws "
                                  "another stream: use a numpy whose Generator matches the host's")
            out[r] = _matrix(item["logits"])
    return out, meta


def _attacked(session, temp, centres, attacked, job, norm, base):
    """Logits at the attacks' points inside each certified ball: {point: (set keys and rows, outputs)}."""
    found: dict[int, list[tuple[str, int]]] = {}
    stacked = []
    for i in job["points"]:
        for key, x_adv in attacked.items():
            if x_adv.shape[1:] != centres.shape[1:]:
                continue
            for r in np.nonzero(within(x_adv, centres[i], job["eps"], norm))[0]:
                found.setdefault(i, []).append((key, int(r)))
                stacked.append(x_adv[r])
    if not stacked:
        return {}
    remote = _send(session, temp, "attacked.npz", np.stack(stacked))
    result = session.call("logits", *base, "--set", remote)
    outputs = [_matrix(item["logits"]) for item in result["rows"]]
    if len(outputs) != len(stacked):
        raise RemoteError(f"{session.label}: the device returned {len(outputs)} logits for {len(stacked)} attacked "
                          "points; a broken or foreign runner answered (check the device)")
    hits, k = {}, 0
    for i, names in found.items():
        hits[i] = (names, np.concatenate(outputs[k:k + len(names)]))
        k += len(names)
    return hits


def _matrix(rows: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in line] for line in rows], dtype=np.float64)


def _check_row(job, row, labels, sampled, hits, samples, meta) -> dict[str, Any]:
    points = []
    have_intervals = row["points"].get("logit_lower") is not None
    for i in job["points"]:
        if not row["points"]["certified"][i]:
            continue
        bound = row["points"]["margin_lower"][i]
        interval = None
        if have_intervals and row["points"]["logit_lower"][i] is not None:
            interval = (row["points"]["logit_lower"][i], row["points"]["logit_upper"][i])
        label = int(labels[i])
        entry = {"point": i, "label": label, "samples": samples,
                 **_prefixed("sampled", violations(sampled[i], label, bound, interval))}
        names, outputs = hits.get(i, ([], np.zeros((0, len(bound)))))
        attack = _prefixed("attacked", violations(outputs, label, bound, interval))
        if attack["attacked_first"] is not None:
            sample = attack["attacked_first"]["sample"]
            attack["attacked_first"] = {**attack["attacked_first"], "set": names[sample][0], "row": names[sample][1]}
        entry.update(attacked=len(names), **attack)
        points.append(entry)
    bad = sum(p["sampled_violations"] + p["attacked_violations"] for p in points)
    kinds = {kind: sum(p.get(f"sampled_{kind}", 0) + p.get(f"attacked_{kind}", 0) for p in points)
             for kind in ("margin_violations", "interval_violations")}
    return {"precision": job["precision"], "eps": job["eps"], "arithmetic": row["arithmetic"],
            "certified_points": len(points), "checked_outputs": sum(p["samples"] + p["attacked"] for p in points),
            "violations": bad, **kinds, "logit_intervals": have_intervals,
            "violating_points": [p["point"] for p in points
                                 if p["sampled_violations"] + p["attacked_violations"]],
            "points": points, **meta}


def _prefixed(prefix: str, found: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{key}": value for key, value in found.items()}


def certify_check_fleet(run: RunDir | str | Path, fleet: Fleet, *, samples: int = 10_000, seed: int = 0,
                        arithmetic: list[str] | None = None) -> dict[str, Any]:
    """The check sharded over a fleet: device k of K checks every K-th certified point from the k-th
    (`fleet.concurrency` at a time), each into its own RUN/device/<name>/certify_check.json; the summary
    RUN/device/fleet-certify_check.json counts every device's violations and names the shards not checked (a
    device that failed leaves its points unchecked, said in its row, never counted as passed)."""
    from concurrent.futures import ThreadPoolExecutor

    run = run if isinstance(run, RunDir) else RunDir.open(run)
    read_certificates(run)
    plan_devices(run, fleet)  # bad input before any device is contacted
    count = len(fleet.devices)

    def one(item) -> dict[str, Any]:
        k, device = item
        row = {"device": device.name, "host": device.host, "target": device.target, "shard": [k, count]}
        try:
            doc = device_certify_check(run, device, samples=samples, seed=seed, arithmetic=arithmetic,
                                       shard=(k, count), progress=False)
            row.update(status="ok", file=f"device/{device.name}/certify_check.json", violations=doc["violations"],
                       checked_outputs=doc["checked_outputs"],
                       violating_points=sorted({p for r in doc["rows"] for p in r["violating_points"]}))
        except EdgeRobustError as exc:
            row.update(failed(exc))
        return row

    with ThreadPoolExecutor(max_workers=fleet.concurrency) as pool:
        rows = list(pool.map(one, enumerate(fleet.devices)))
    summary = {"format": "edgerobust-fleet-1", "kind": "certify_check", "created": now(), "fleet": fleet.source,
               "samples": samples, "seed": seed, "rows": rows,
               "violations": sum(r.get("violations", 0) for r in rows),
               "unchecked_shards": [r["shard"] for r in rows if r["status"] != "ok"]}
    write_json(run.path / "device" / "fleet-certify_check.json", summary)
    return summary
