"""Cross-architecture agreement on the aarch64 test bed: x86 and aarch64 onnxruntime on the same bundle.

Figures (a digits scnn2 run, its bundle's 64 golden inputs, fp32 and fp16 artifacts; docs/arm64-testbed.md):
- per architecture and precision: max |output − golden|, the largest ratio of that difference to the derived
  per-logit bound (export/tolerance.py; must stay <= 1), decisions differing from the golden outputs and points
  near the boundary (golden top-2 margin below twice the bound);
- fp16 − fp32 logit difference on each architecture (x86 runs most of an fp16 graph in fp32, aarch64 natively);
- x86 − aarch64 difference per precision (bit equality is not expected);
- smoothing votes (σ = 0.25, n = 200, 4 points, fp16) on the device against the host's exact recount: samples near the
  boundary and samples that voted differently.
Run (as root, test bed built): python -m benchmarks.arm64_agreement
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import onnx

from benchmarks.common import save_result
from edgerobust.config import ExportConfig
from edgerobust.export.api import export_run
from edgerobust.export.bundle import read_manifest
from edgerobust.export.parity import ort_session, run_onnx
from edgerobust.export.tolerance import compare_with_tolerance, smoothing_agreement
from edgerobust.training import TrainConfig
from edgerobust.training.api import train_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "arm64-testbed.sh"
SIGMA, N, POINTS, SEED = 0.25, 200, 4, 0
DEVICE_TEMPLATE = """
import json, sys, numpy as np, onnxruntime as ort
SIGMA, N, POINTS, SEED = {SIGMA!r}, {N}, {POINTS}, {SEED}
sys.path.insert(0, ".")
from edgerobust_runner.commands import noise_batches  # the runner's own sample protocol
x = np.load("golden_inputs.npy")
out = {}
def session(name):
    options = ort.SessionOptions(); options.intra_op_num_threads = 1
    s = ort.InferenceSession(name, options, providers=["CPUExecutionProvider"])
    return lambda b: s.run(None, {s.get_inputs()[0].name: b})[0]
for name in ("model.onnx", "model.fp16.onnx"):
    out[name] = session(name)(x).astype(np.float64).tolist()
run = session("model.fp16.onnx")
out["votes"] = [np.bincount(run(np.concatenate(list(noise_batches(x[r], SIGMA, N, 64, SEED, r)))).argmax(1),
                            minlength=10).tolist() for r in range(POINTS)]
print(json.dumps(out))
"""


def git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or None


def testbed(*args: str) -> str:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, check=False)
    if done.returncode != 0:
        sys.exit(f"arm64-testbed {args[0]}: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout


def on_device(state: Path, files: dict[str, bytes]) -> dict:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    done = subprocess.run(["ssh", "-F", str(state / "ssh_config"), "arm64-testbed",
                           "d=$(mktemp -d) && cd $d && tar -x && python3 script.py; s=$?; rm -rf $d; exit $s"],
                          input=archive.getvalue(), capture_output=True, check=True)
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    testbed("build")
    with tempfile.TemporaryDirectory(prefix="arm64-agree-") as scratch:
        scratch = Path(scratch)
        run = train_model(scratch / "run", "scnn2:8-16", "digits", TrainConfig(epochs=4, batch_size=64, lr=0.05,
                                                                                augment=False), progress=False)
        bundle = export_run(run, ExportConfig(target="jetson-nano", calibration=0, golden=64), progress=False).bundle
        manifest = read_manifest(bundle)
        tolerance = {p: np.load(bundle / e["golden_tolerance"]["file"]) for p, e in manifest["models"].items()}
        golden = np.load(bundle / "golden_outputs.npy")
        inputs = np.load(bundle / "golden_inputs.npy")
        proto = onnx.load(bundle / "model.onnx")
        x86 = {p: run_onnx(ort_session(bundle / e["file"]), inputs).astype(np.float64)
               for p, e in manifest["models"].items()}
        state = scratch / "state"
        testbed("start", str(state))
        try:
            files = {n: (bundle / n).read_bytes() for n in ("model.onnx", "model.fp16.onnx", "golden_inputs.npy")}
            for path in sorted((ROOT / "edgerobust" / "runner").glob("*.py")):
                files[f"edgerobust_runner/{path.name}"] = path.read_bytes()
            files["script.py"] = DEVICE_TEMPLATE.replace("{SIGMA!r}", repr(SIGMA)).replace("{N}", str(N)) \
                .replace("{POINTS}", str(POINTS)).replace("{SEED}", str(SEED)).encode()
            got = on_device(state, files)
        finally:
            testbed("stop", str(state))
    arm = {"fp32": np.array(got["model.onnx"]), "fp16": np.array(got["model.fp16.onnx"])}
    result: dict = {"commit": git_commit(), "model": "scnn2:8-16 digits, 4 epochs", "golden_inputs": len(golden),
                    "architectures": {}}
    for name, outputs in (("x86_64", x86), ("aarch64", arm)):
        figures = {p: compare_with_tolerance(outputs[p], golden, tolerance[p]) for p in outputs}
        figures["fp16_minus_fp32_max_abs"] = float(np.abs(outputs["fp16"] - outputs["fp32"]).max())
        result["architectures"][name] = figures
    result["x86_minus_aarch64_max_abs"] = {p: float(np.abs(x86[p] - arm[p]).max()) for p in x86}
    smoothing = [smoothing_agreement(proto, inputs[r], r, SIGMA, N, SEED, got["votes"][r], "fp16")
                 for r in range(POINTS)]
    result["smoothing"] = {"sigma": SIGMA, "n": N, "points": POINTS, "precision": "fp16",
                           "near_boundary": [s["near_boundary"] for s in smoothing],
                           "disagreeing": [s["disagreeing"] for s in smoothing],
                           "passed": all(s["passed"] for s in smoothing)}
    print(json.dumps(result, indent=1))
    save_result("arm64_agreement", result)


if __name__ == "__main__":
    main()
