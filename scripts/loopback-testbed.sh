#!/usr/bin/env bash
# Start the remote harness's test bed by hand: Debian's OpenSSH server on 127.0.0.1 and a free port, with a
# generated host key, user key, known_hosts and a client ssh_config whose aliases edge-a / edge-b reach it.
# It runs as you (as root it also creates /run/sshd). Ctrl-C stops it.
#
#   sudo apt-get install -y openssh-server openssh-client      # once
#   scripts/loopback-testbed.sh /tmp/edge-bed
#   # in another shell, with the printed port:
#   ssh -F /tmp/edge-bed/ssh_config edge-a true
#   EDGEROBUST_SSH_CONFIG=/tmp/edge-bed/ssh_config edgerobust bench RUN --target x86-cpu --host edge-a
#   pytest --edge-host edge-a --edge-ssh-config /tmp/edge-bed/ssh_config --edge-target x86-cpu \
#          --edge-bundle RUN/export-x86-cpu --edge-latency-ms 50
set -euo pipefail
dir=${1:-$(mktemp -d -t edgerobust-bed.XXXXXX)}
exec python -m edgerobust.remote.testbed "$dir"
