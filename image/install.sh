#!/bin/bash
# Install taskfleet on an Amazon Linux 2023 instance: Python 3.11, the project
# in /opt/taskfleet/venv with pinned dependencies, the task user, the task
# firewall and the systemd unit. Idempotent.
# Used at boot by bootstrap.sh, and by worker.pkr.hcl to bake an AMI.
#
# usage: install.sh SOURCE_DIR    (a checkout or unpacked source asset of taskfleet)
set -euo pipefail

source_dir=${1:?usage: install.sh SOURCE_DIR}
prefix=/opt/taskfleet
tasks_home=/var/lib/taskfleet/tasks

dnf install -y python3.11 python3.11-pip nftables
# Tasks run as this user, never as the worker (see taskfleet-worker.service).
if ! id taskfleet-task >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$tasks_home" --shell /sbin/nologin taskfleet-task
fi
install -d -m 0755 /var/lib/taskfleet
install -d -m 0700 -o taskfleet-task -g taskfleet-task "$tasks_home"
install -d -m 0755 "$prefix"
python3.11 -m venv "$prefix/venv"
# The versions this release was tested with, not whatever the registry serves today.
"$prefix/venv/bin/pip" install --quiet --constraint "$source_dir/image/constraints.txt" "$source_dir"
install -m 0644 "$source_dir/image/task-firewall.nft" "$prefix/task-firewall.nft"
install -m 0644 "$source_dir/image/taskfleet-worker.service" /etc/systemd/system/taskfleet-worker.service
systemctl daemon-reload
