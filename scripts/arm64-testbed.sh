#!/usr/bin/env bash
# The aarch64 device test bed: a Debian arm64 userland run under qemu-user (binfmt_misc), with its own Python,
# numpy, onnxruntime and OpenSSH server, reached over SSH on a loopback port. See docs/arm64-testbed.md.
#
#   scripts/arm64-testbed.sh check                 can aarch64 binaries run here? (exit 3 with the reason if not)
#   scripts/arm64-testbed.sh build                 build the userland once and install the device side into it
#   scripts/arm64-testbed.sh start STATE_DIR       start the userland's sshd on a free 127.0.0.1 port; prints JSON
#   scripts/arm64-testbed.sh stop STATE_DIR        stop that sshd (by the pid `start` recorded)
#   scripts/arm64-testbed.sh path                  print the userland's directory
#
# Environment:
#   EDGEROBUST_ARM64_TESTBED      cache directory (default: ${XDG_CACHE_HOME:-~/.cache}/edgerobust/arm64-testbed);
#                                 the userland is DIR/rootfs, the downloaded wheels DIR/wheels
#   EDGEROBUST_ARM64_SUITE        Debian suite of the userland (default: bookworm, Python 3.11)
#   EDGEROBUST_ARM64_SOURCES      apt sources file(s) for the userland, space-separated (default: the host's own
#                                 configured sources that name the suite; no mirror is written here)
#   EDGEROBUST_ARM64_SSHD_TIMEOUT seconds the sshd has to accept a login (default: 180; emulation is slow)
#   EDGEROBUST_ARM64_QEMU / EDGEROBUST_ARM64_BINFMT   the qemu binary and the binfmt_misc directory checked
#                                 (default: qemu-aarch64-static, /proc/sys/fs/binfmt_misc)
#   EDGEROBUST_ARM64_NUMPY / EDGEROBUST_ARM64_ONNXRUNTIME   versions for the device (default: the host's installed
#                                 versions, so that both sides run the same release)
#
# Exit codes: 0 done, 2 a step failed (one line on stderr: "arm64-testbed: STEP: what is wrong; how to fix it"),
# 3 aarch64 emulation is not available on this machine (the tests skip with that line unless EDGEROBUST_REQUIRE_ARM64).
# Needs root: mmdebstrap (root mode), chroot and mount. Never touches any address but 127.0.0.1.
set -euo pipefail

TESTBED=${EDGEROBUST_ARM64_TESTBED:-${XDG_CACHE_HOME:-$HOME/.cache}/edgerobust/arm64-testbed}
SUITE=${EDGEROBUST_ARM64_SUITE:-bookworm}
SSHD_TIMEOUT=${EDGEROBUST_ARM64_SSHD_TIMEOUT:-180}
QEMU=${EDGEROBUST_ARM64_QEMU:-qemu-aarch64-static}
BINFMT=${EDGEROBUST_ARM64_BINFMT:-/proc/sys/fs/binfmt_misc}
HOST_PYTHON=${PYTHON:-python3}
ROOTFS="$TESTBED/rootfs"
MARKER=".edgerobust-testbed"          # written into the rootfs after a complete build
DEVICE_VENV="/opt/edgerobust/venv"    # inside the userland
DEVICE_STAMP="/opt/edgerobust/device.json"

die() { local step=$1; shift; echo "arm64-testbed: $step: $*" >&2; exit 2; }
unavailable() { local step=$1; shift; echo "arm64-testbed: $step: $*" >&2; exit 3; }
log() { echo "arm64-testbed: $*" >&2; }

# --- check: qemu, binfmt, root ------------------------------------------------------------------------------------
check() {
  if [ "$(uname -m)" != aarch64 ]; then
    command -v "$QEMU" >/dev/null 2>&1 \
      || unavailable qemu "$QEMU not found; install it: apt-get install qemu-user-static binfmt-support"
    local bf=$BINFMT
    if [ ! -e "$bf/status" ]; then
      { [ "$bf" = /proc/sys/fs/binfmt_misc ] && mount -t binfmt_misc binfmt_misc "$bf" 2>/dev/null; } \
        || unavailable binfmt "binfmt_misc is not mounted and cannot be (a container without that privilege?);" \
          "as root on the machine: mount -t binfmt_misc binfmt_misc $bf"
    fi
    if ! grep -qx enabled "$bf/qemu-aarch64" 2>/dev/null && [ "$bf" = /proc/sys/fs/binfmt_misc ]; then
      update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    fi
    grep -qx enabled "$bf/qemu-aarch64" 2>/dev/null \
      || unavailable binfmt "no enabled qemu-aarch64 entry in $bf; as root: apt-get install binfmt-support" \
        "qemu-user-static && update-binfmts --enable qemu-aarch64"
  fi
  for tool in mmdebstrap ssh ssh-keygen chroot mountpoint; do
    command -v "$tool" >/dev/null 2>&1 \
      || unavailable tools "$tool not found; install it: apt-get install mmdebstrap openssh-client"
  done
  [ "$(id -u)" = 0 ] || unavailable root "the test bed needs root (mmdebstrap, chroot, mount); run it as root"
}

# --- the userland -------------------------------------------------------------------------------------------------
is_userland() {  # an aarch64 Debian userland with Python: what the rest of the script relies on
  [ -x "$1/bin/sh" ] && [ -x "$1/usr/bin/python3" ] && [ -x "$1/usr/sbin/sshd" ] && [ -f "$1/etc/os-release" ] \
    && [ -f "$1/$MARKER" ] && [ "$(od -An -tu2 -j18 -N2 "$1/bin/dash" 2>/dev/null | tr -d ' ')" = 183 ]  # EM_AARCH64
}

host_sources() {  # the host's configured apt sources for the suite; mmdebstrap pastes each file into the userland
  if [ -n "${EDGEROBUST_ARM64_SOURCES:-}" ]; then
    for f in $EDGEROBUST_ARM64_SOURCES; do
      [ -f "$f" ] || die sources "EDGEROBUST_ARM64_SOURCES names $f, which is not a file; give apt sources files"
      echo "$f"
    done
    return
  fi
  local found=0 f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    if grep -v '^[[:space:]]*#' "$f" | grep -qw "$SUITE"; then echo "$f"; found=1; fi
  done
  [ "$found" = 1 ] || die sources "no apt sources on this machine name the suite $SUITE; set EDGEROBUST_ARM64_SOURCES" \
    "to a sources file for it (or EDGEROBUST_ARM64_SUITE to the host's suite)"
}

check_testbed_dir() {  # before anything else: a cache directory holding something else is refused, never deleted
  if [ -e "$TESTBED" ] && [ ! -d "$TESTBED" ]; then
    die userland "$TESTBED is not a directory; point EDGEROBUST_ARM64_TESTBED at a directory"
  fi
  if [ -e "$ROOTFS" ] && ! is_userland "$ROOTFS" && [ ! -f "$ROOTFS/$MARKER" ]; then
    die userland "$ROOTFS exists but is not an aarch64 userland built by this script; remove it or point" \
      "EDGEROBUST_ARM64_TESTBED at another directory"
  fi
}

failure_reason() {  # the first line of a log's last attempt that says what failed: the package or the step
  local reason
  reason=$(awk '/^=== attempt/{buf=""; next} {buf=buf $0 "\n"} END{printf "%s", buf}' "$1" \
    | grep -E -m1 "Failed to fetch|Unable to (locate|fetch)|no installation candidate|dpkg: error|Hash Sum mismatch|\
^E: |ERROR: |[Ee]rror" | tr -d '[:cntrl:]' | cut -c1-240)
  [ -n "$reason" ] || reason=$(grep -v '^=== attempt' "$1" | tail -n 1 | tr -d '[:cntrl:]' | cut -c1-240)
  echo "${reason:-it printed nothing}"
}

twice() {  # LOG STEP COMMAND...: run a download or install, appending to LOG; one more try when it fails
  local log=$1 step=$2 attempt
  shift 2
  for attempt in 1 2; do
    echo "=== attempt $attempt of $step: $(date -u +%FT%TZ)" >>"$log"
    if "$@" >>"$log" 2>&1; then return 0; fi
    [ "$attempt" = 2 ] || log "$step: failed ($(failure_reason "$log")); trying once more"
  done
  return 1
}

build_userland() {
  check_testbed_dir
  if [ -e "$ROOTFS" ]; then
    if is_userland "$ROOTFS"; then return 0; fi
    # Rebuild only what this script built (its marker is there, the rest is damaged): never delete anything else.
    log "userland: $ROOTFS is damaged; rebuilding it"
    umount_proc "$ROOTFS"
    rm -rf --one-file-system "$ROOTFS"
  fi
  mkdir -p "$TESTBED"
  local partial="$TESTBED/rootfs.partial" sources
  rm -rf --one-file-system "$partial"
  mapfile -t sources < <(host_sources)
  log "userland: building Debian $SUITE arm64 in $ROOTFS (a few minutes under emulation; log: $TESTBED/build.log)"
  : >"$TESTBED/build.log"
  debootstrap_once() { rm -rf --one-file-system "$partial"; mmdebstrap --verbose --arch=arm64 --variant=apt \
      --include=python3,python3-venv,openssh-server --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      "$SUITE" "$partial" "${sources[@]}"; }
  twice "$TESTBED/build.log" userland debootstrap_once \
    || die userland "mmdebstrap failed twice: $(failure_reason "$TESTBED/build.log") (full log:" \
      "$TESTBED/build.log); check the apt sources and that binfmt runs arm64"
  # No host keys baked in: each start generates its own.
  rm -f "$partial"/etc/ssh/ssh_host_*
  printf '{"suite": "%s", "arch": "arm64", "built": "%s"}\n' "$SUITE" "$(date -u +%FT%TZ)" >"$partial/$MARKER"
  mv "$partial" "$ROOTFS"
  is_userland "$ROOTFS" || die userland "the build finished but $ROOTFS is not an aarch64 userland with python3" \
    "and sshd; remove it and build again"
}

# --- the device side: numpy + onnxruntime in the userland's own venv ---------------------------------------------
host_version() {  # the version of a package installed on the host, or empty
  "$HOST_PYTHON" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || true
}

in_userland() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root "$@"; }

install_device() {
  local numpy_v=${EDGEROBUST_ARM64_NUMPY:-$(host_version numpy)}
  local ort_v=${EDGEROBUST_ARM64_ONNXRUNTIME:-$(host_version onnxruntime)}
  local want="numpy${numpy_v:+==$numpy_v} onnxruntime${ort_v:+==$ort_v}"
  if [ -f "$ROOTFS$DEVICE_STAMP" ] && grep -qF "\"wanted\": \"$want\"" "$ROOTFS$DEVICE_STAMP"; then return 0; fi
  mount_proc "$ROOTFS"
  local pyver
  pyver=$(in_userland python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || die device "python3 does not run in the userland; check binfmt (update-binfmts --display qemu-aarch64)"
  local wheels="$TESTBED/wheels"
  mkdir -p "$wheels"
  log "device: downloading aarch64 wheels for Python $pyver: $want (log: $TESTBED/device.log)"
  : >"$TESTBED/device.log"
  # shellcheck disable=SC2086
  twice "$TESTBED/device.log" device "$HOST_PYTHON" -m pip download --disable-pip-version-check --only-binary=:all: \
      --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
      --python-version "$pyver" --implementation cp -d "$wheels" $want \
    || die device "pip download of $want for aarch64/Python $pyver failed twice: $(failure_reason \
      "$TESTBED/device.log"); check the package index is reachable or set" \
      "EDGEROBUST_ARM64_NUMPY/EDGEROBUST_ARM64_ONNXRUNTIME to versions with aarch64 wheels"
  log "device: installing into the userland's venv $DEVICE_VENV"
  rm -rf "$ROOTFS/tmp/wheels" "$ROOTFS$DEVICE_VENV"
  cp -r "$wheels" "$ROOTFS/tmp/wheels"
  # shellcheck disable=SC2086
  in_userland python3 -m venv "$DEVICE_VENV" \
    && in_userland "$DEVICE_VENV/bin/pip" install --quiet --disable-pip-version-check --no-index \
      --find-links /tmp/wheels $want \
    || die device "installing $want into the userland's venv failed; remove $ROOTFS$DEVICE_VENV and build again"
  rm -rf "$ROOTFS/tmp/wheels"
  # `python3` over SSH is the venv's Python (a wrapper: a symlink would lose the venv).
  printf '#!/bin/sh\nexec %s/bin/python3 "$@"\n' "$DEVICE_VENV" >"$ROOTFS/usr/local/bin/python3"
  chmod 755 "$ROOTFS/usr/local/bin/python3"
  local got
  got=$(in_userland python3 -c 'import platform, numpy, onnxruntime as o; print("%s numpy %s onnxruntime %s" % (platform.machine(), numpy.__version__, o.__version__))') \
    || die device "numpy/onnxruntime do not import in the userland; remove $ROOTFS$DEVICE_VENV and build again"
  printf '{"wanted": "%s", "installed": "%s"}\n' "$want" "$got" >"$ROOTFS$DEVICE_STAMP"
  log "device: $got"
}

# --- sshd ---------------------------------------------------------------------------------------------------------
mount_proc() {  # /proc only: onnxruntime's CPU detection crashes under emulation on the host's x86 /sys
  mkdir -p "$1/proc"
  mountpoint -q "$1/proc" || mount -t proc proc "$1/proc" || die proc "cannot mount /proc in $1; run as root"
}

umount_proc() {
  if mountpoint -q "$1/proc" 2>/dev/null; then umount "$1/proc" 2>/dev/null || umount -l "$1/proc" || true; fi
}

free_port() {
  "$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local state=$1
  is_userland "$ROOTFS" || die start "$ROOTFS is not a built userland; run: scripts/arm64-testbed.sh build"
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  [ ! -f "$state/sshd.pid" ] || ! kill -0 "$(cat "$state/sshd.pid")" 2>/dev/null \
    || die start "an sshd started from $state is still running (pid $(cat "$state/sshd.pid")); stop it first"
  mount_proc "$ROOTFS"
  mkdir -p "$ROOTFS/run/sshd"
  rm -f "$state"/host_key* "$state"/id_ed25519*
  ssh-keygen -q -t ed25519 -N '' -C arm64-testbed-host -f "$state/host_key"
  ssh-keygen -q -t ed25519 -N '' -C arm64-testbed-user -f "$state/id_ed25519"
  local port dir
  port=$(free_port)
  dir="/etc/edgerobust-ssh/$port"   # inside the userland: the sshd reads its files through the chroot
  rm -rf "$ROOTFS$dir"
  mkdir -p "$ROOTFS$dir"
  cp "$state/host_key" "$ROOTFS$dir/host_key"
  cp "$state/id_ed25519.pub" "$ROOTFS$dir/authorized_keys"
  chmod 700 "$ROOTFS$dir"
  chmod 600 "$ROOTFS$dir/host_key" "$ROOTFS$dir/authorized_keys"
  echo "[127.0.0.1]:$port $(cut -d' ' -f1-2 "$state/host_key.pub")" >"$state/known_hosts"
  cat >"$state/ssh_config" <<EOF
Host arm64-testbed
  HostName 127.0.0.1
  Port $port
  User root
  IdentityFile $state/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $state/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
EOF
  setsid chroot "$ROOTFS" /usr/sbin/sshd -D -e -f /dev/null -h "$dir/host_key" -p "$port" \
      -o ListenAddress=127.0.0.1 -o AuthorizedKeysFile="$dir/authorized_keys" -o PermitRootLogin=prohibit-password \
      -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no -o UsePAM=no -o StrictModes=no \
      -o PidFile=none -o MaxStartups=32 -o MaxSessions=32 \
      </dev/null >"$state/sshd.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$state/sshd.pid"
  echo "$port" >"$state/port"
  local deadline=$((SECONDS + SSHD_TIMEOUT))
  while :; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      stop "$state" 2>/dev/null || true
      die sshd "the userland's sshd did not accept a login on 127.0.0.1:$port within ${SSHD_TIMEOUT}s (log:" \
        "$state/sshd.log); raise EDGEROBUST_ARM64_SSHD_TIMEOUT on a slow machine, or read the log"
    fi
    kill -0 "$pid" 2>/dev/null || die sshd "the userland's sshd exited at start (log: $state/sshd.log: $(tail -1 \
      "$state/sshd.log" 2>/dev/null)); read the log"
    if ssh -F "$state/ssh_config" -o ConnectTimeout=10 arm64-testbed true 2>/dev/null; then break; fi
    sleep 1
  done
  printf '{"host": "127.0.0.1", "port": %s, "user": "root", "identity": "%s", "known_hosts": "%s",' \
    "$port" "$state/id_ed25519" "$state/known_hosts"
  printf ' "ssh_config": "%s", "alias": "arm64-testbed", "pid": %s, "python": "python3", "rootfs": "%s"}\n' \
    "$state/ssh_config" "$pid" "$ROOTFS"
}

descendants() {
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do descendants "$child"; echo "$child"; done
}

stop() {
  local state=$1
  [ -f "$state/sshd.pid" ] || die stop "$state has no sshd.pid; give the STATE_DIR that start was given"
  local pid port
  pid=$(cat "$state/sshd.pid")
  port=$(cat "$state/port" 2>/dev/null || echo none)
  if kill -0 "$pid" 2>/dev/null; then
    local tree
    tree=$(descendants "$pid")   # its connections and what they run, by pid (walked before anything dies)
    # shellcheck disable=SC2086
    kill -TERM "$pid" $tree 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/sshd.pid"
  rm -rf "${ROOTFS:?}/etc/edgerobust-ssh/$port"
  umount_if_idle
}

umount_if_idle() {  # the last running sshd of this userland takes /proc down with it
  if [ -z "$(ls -A "$ROOTFS/etc/edgerobust-ssh" 2>/dev/null)" ]; then umount_proc "$ROOTFS"; fi
}

main() {
  case "${1:-}" in
    check) check ;;
    build) check_testbed_dir; check; build_userland; install_device; umount_if_idle; echo "$ROOTFS" ;;
    build-userland) check_testbed_dir; check; build_userland; echo "$ROOTFS" ;;
    install-device) check_testbed_dir; check
                    is_userland "$ROOTFS" || die device "$ROOTFS is not a built userland; run build first"
                    install_device; umount_if_idle ;;
    start) [ $# = 2 ] || die usage "start needs a STATE_DIR"; check; start "$2" ;;
    stop) [ $# = 2 ] || die usage "stop needs a STATE_DIR"; stop "$2" ;;
    path) echo "$ROOTFS" ;;
    *) die usage "unknown command '${1:-}'; use check, build, build-userland, install-device, start DIR, stop DIR or path" ;;
  esac
}

# One line, parsed whole before it runs: an edit to this file cannot derail a running invocation.
main "$@"; exit $?
