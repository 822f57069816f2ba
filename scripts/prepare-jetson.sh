#!/usr/bin/env bash
# Prepare (or check) a Jetson Nano with JetPack 4.6.x (L4T R32.7, Ubuntu 18.04, Python 3.6) as an edgerobust device.
#
# Run ON THE JETSON:   bash prepare-jetson.sh           # check only: says what is missing and how to install it
#                      bash prepare-jetson.sh --install # also install what apt can (asks sudo)
#
# What the edgerobust runner needs there: python3 (3.6 is fine), numpy, and one runtime:
#   - TensorRT's Python bindings (python3-libnvinfer, part of JetPack: runtimes `tensorrt`), and/or
#   - onnxruntime (runtimes ort-cpu / ort-cuda / ort-tensorrt): NVIDIA publishes onnxruntime-gpu wheels built for
#     JetPack 4.6 and Python 3.6 (the "Jetson Zoo"); download the cp36 aarch64 wheel on any machine, copy it over
#     and `pip3 install --user onnxruntime_gpu-*.whl`. PyPI has no aarch64 wheel of onnxruntime for Python 3.6.
# No torch is needed on the device. Then, from the host:
#   ssh-copy-id ubuntu@nano                     # key login; BatchMode is used, so no password prompts
#   edgerobust export RUN --target jetson-nano
#   edgerobust bench RUN --target jetson-nano --host ubuntu@nano
# For steady timings: `sudo nvpmodel -m 0` (MAXN, 10 W) or `-m 1` (5 W), then `sudo jetson_clocks` (pins clocks);
# the runner records the power mode, whether clocks are pinned, clocks and temperatures with every figure.
set -u
install=0
[ "${1:-}" = "--install" ] && install=1
missing=0
say() { printf '%-28s %s\n' "$1" "$2"; }

if [ -f /etc/nv_tegra_release ]; then
  say "L4T release" "$(head -1 /etc/nv_tegra_release)"
else
  say "L4T release" "not a Jetson (no /etc/nv_tegra_release); the checks below still apply"
fi
[ -r /proc/device-tree/model ] && say "model" "$(tr -d '\0' </proc/device-tree/model)"

if command -v python3 >/dev/null 2>&1; then
  say "python3" "$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 6))' || { say "" "TOO OLD: the runner needs 3.6+"; missing=1; }
else
  say "python3" "MISSING: sudo apt-get install python3"; missing=1
  [ $install = 1 ] && sudo apt-get install -y python3
fi

if python3 -c 'import numpy' 2>/dev/null; then
  say "numpy" "$(python3 -c 'import numpy; print(numpy.__version__)')"
else
  say "numpy" "MISSING: sudo apt-get install python3-numpy"; missing=1
  [ $install = 1 ] && sudo apt-get install -y python3-numpy
fi

runtimes=0
if python3 -c 'import tensorrt' 2>/dev/null; then
  say "tensorrt" "$(python3 -c 'import tensorrt; print(tensorrt.__version__)')"; runtimes=1
else
  say "tensorrt" "missing: sudo apt-get install python3-libnvinfer (JetPack)"
  [ $install = 1 ] && sudo apt-get install -y python3-libnvinfer && runtimes=1
fi
if python3 -c 'import onnxruntime' 2>/dev/null; then
  say "onnxruntime" "$(python3 -c 'import onnxruntime as o; print(o.__version__, o.get_available_providers())')"
  runtimes=1
else
  say "onnxruntime" "missing: pip3 install --user the onnxruntime-gpu wheel for JetPack 4.6 / cp36 (see above)"
fi
[ $runtimes = 1 ] || { say "runtime" "NONE: install TensorRT's bindings or onnxruntime"; missing=1; }

command -v nvpmodel >/dev/null 2>&1 && say "power mode" "$(nvpmodel -q 2>/dev/null | head -1)"
for zone in /sys/class/thermal/thermal_zone*; do
  [ -r "$zone/temp" ] && say "$(cat "$zone/type" 2>/dev/null)" "$(( $(cat "$zone/temp") / 1000 )) °C"
done

if [ $missing = 0 ]; then
  echo "ready: the edgerobust runner can run here"
else
  echo "not ready: install what is marked MISSING above (or run with --install)"
fi
exit $missing
