#!/bin/bash
# Install taskfleet on a Debian 12 (apt) or Amazon Linux 2023 (dnf) instance:
# Python 3.11, the project in /opt/taskfleet/venv with pinned dependencies, the
# task user, the task firewall and the systemd unit. Idempotent. Debian's is the
# install the tests run (tests/image/test_boot.py); Amazon Linux's is not.
# Used at boot by bootstrap.sh, and by worker.pkr.hcl to bake an AMI.
#
# usage: install.sh SOURCE_DIR    (a checkout or unpacked source asset of taskfleet)
set -euo pipefail

source_dir=${1:?usage: install.sh SOURCE_DIR}
prefix=/opt/taskfleet
tasks_home=/var/lib/taskfleet/tasks

if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Debian 12's python3 is 3.11.
  apt-get install -y -q --no-install-recommends python3 python3-venv nftables curl \
    ca-certificates
  python=python3
else
  dnf install -y python3.11 python3.11-pip nftables
  python=python3.11
fi
# Tasks run as this user, never as the worker (see taskfleet-worker.service).
if ! id taskfleet-task >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$tasks_home" --shell /usr/sbin/nologin taskfleet-task
fi
install -d -m 0755 /var/lib/taskfleet
install -d -m 0700 -o taskfleet-task -g taskfleet-task "$tasks_home"
install -d -m 0755 "$prefix"
"$python" -m venv "$prefix/venv"
# The versions this release was tested with, not whatever the registry serves today.
"$prefix/venv/bin/pip" install --quiet --constraint "$source_dir/image/constraints.txt" "$source_dir"
install -m 0644 "$source_dir/image/task-firewall.nft" "$prefix/task-firewall.nft"
install -m 0644 "$source_dir/image/taskfleet-worker.service" /etc/systemd/system/taskfleet-worker.service
# Not where systemd is not running (a chroot: the boot's test); it reads units at start.
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
