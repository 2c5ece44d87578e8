#!/bin/bash
# Install taskfleet on an Amazon Linux 2023 instance: Python 3.11, the project
# in /opt/taskfleet/venv, a system user and the systemd unit. Idempotent.
# Used at boot by bootstrap.sh, and by worker.pkr.hcl to bake an AMI.
#
# usage: install.sh SOURCE_DIR    (a checkout or unpacked source asset of taskfleet)
set -euo pipefail

source_dir=${1:?usage: install.sh SOURCE_DIR}
prefix=/opt/taskfleet

dnf install -y python3.11 python3.11-pip
if ! id taskfleet >/dev/null 2>&1; then
  useradd --system --home-dir "$prefix" --shell /sbin/nologin taskfleet
fi
install -d -m 0755 "$prefix"
python3.11 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install --quiet --upgrade pip
"$prefix/venv/bin/pip" install --quiet "$source_dir"
install -m 0644 "$source_dir/image/taskfleet-worker.service" /etc/systemd/system/taskfleet-worker.service
systemctl daemon-reload
