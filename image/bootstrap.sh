# How an instance becomes a taskfleet worker: the body of its EC2 user data,
# run once as root at first boot. The stack puts a "#!/bin/bash" line and
# these variables before it:
#   TASKFLEET_SOURCE_URL            s3:// URL of the project source (a CDK asset, zip)
#   TASKFLEET_REGION                the stack's region
#   TASKFLEET_REQUEST_QUEUE_URL     where bundles of tasks arrive
#   TASKFLEET_RESPONSE_QUEUE_URL    where results go
#   TASKFLEET_CLAIM_TABLE           the DynamoDB claim table
#   TASKFLEET_JOB_TABLE             the DynamoDB job table (a job's state: cancelled?)
#   TASKFLEET_JOB_QUEUE_PREFIX      a job's result queue is named this + the job id
#   TASKFLEET_IDLE_TIMEOUT          seconds idle before the worker ends its instance
#   TASKFLEET_VISIBILITY_TIMEOUT    the request queue's visibility timeout, seconds
#   TASKFLEET_CONCURRENCY           task slots of an instance
#   TASKFLEET_LIFECYCLE_HOOK        the group's termination hook, completed by the worker
# and, with taskfleet:setupScript, the lines that write that script to
# /etc/taskfleet/setup.sh (cdk/setup_script.py): it runs here once taskfleet is
# installed, before the worker starts. Debian 12 (apt) is the image the tests
# boot this in (tests/image/test_boot.py); Amazon Linux 2023 (dnf) is not tested.
# Where no EC2 metadata service is (those tests), another may be named by
# the worker's setting for it, TASKFLEET_METADATA_URL.
set -euo pipefail

: "${TASKFLEET_SOURCE_URL:?}" "${TASKFLEET_REGION:?}" "${TASKFLEET_REQUEST_QUEUE_URL:?}"
: "${TASKFLEET_RESPONSE_QUEUE_URL:?}" "${TASKFLEET_CLAIM_TABLE:?}"
: "${TASKFLEET_JOB_TABLE:?}" "${TASKFLEET_JOB_QUEUE_PREFIX:?}"
: "${TASKFLEET_IDLE_TIMEOUT:?}" "${TASKFLEET_VISIBILITY_TIMEOUT:?}"
: "${TASKFLEET_CONCURRENCY:?}" "${TASKFLEET_LIFECYCLE_HOOK:?}"

# A baked AMI (worker.pkr.hcl) has taskfleet installed already: boot is then
# only the configuration below.
if [ ! -x /opt/taskfleet/venv/bin/taskfleet ]; then
  if command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends awscli unzip ca-certificates
  else
    dnf install -y unzip  # Amazon Linux has the aws CLI
  fi
  work=$(mktemp -d)
  # Debian's aws CLI predates AWS_ENDPOINT_URL: an emulator's endpoint is handed on.
  aws ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} s3 cp --region "$TASKFLEET_REGION" \
    "$TASKFLEET_SOURCE_URL" "$work/source.zip"
  unzip -q "$work/source.zip" -d "$work/source"
  bash "$work/source/image/install.sh" "$work/source"
  rm -rf "$work"
fi

# This instance and its Auto Scaling group, from instance metadata (IMDSv2;
# the launch template makes instance tags readable there).
imds=${TASKFLEET_METADATA_URL:-http://169.254.169.254/latest}
token=$(curl -sS -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$imds/api/token")
metadata() { curl -sS -f -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/$1"; }
instance_id=$(metadata instance-id)
group_name=$(metadata tags/instance/aws:autoscaling:groupName)

# The stack's setup script. An instance where it failed lacks what its tasks
# need: it says why (on its console and in its journal, as all of this
# script's output), asks its group to end it, and no worker starts there.
setup=/etc/taskfleet/setup.sh
if [ -f "$setup" ]; then
  output=/var/log/taskfleet-setup.log
  status=0
  (cd / && bash "$setup") </dev/null >"$output" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "taskfleet: setup script failed with exit code $status; instance marked unhealthy." \
      "Its last lines ($output):" >&2
    tail -n 20 "$output" >&2
    /opt/taskfleet/venv/bin/python -m worker.unhealthy \
      --instance-id "$instance_id" --region "$TASKFLEET_REGION"
    exit 1
  fi
  echo "taskfleet: setup script done; its output is in $output"
fi

install -d -m 0755 /etc/taskfleet
umask 077
cat > /etc/taskfleet/worker.env <<CONFIG
TASKFLEET_REGION=$TASKFLEET_REGION
TASKFLEET_REQUEST_QUEUE_URL=$TASKFLEET_REQUEST_QUEUE_URL
TASKFLEET_RESPONSE_QUEUE_URL=$TASKFLEET_RESPONSE_QUEUE_URL
TASKFLEET_CLAIM_TABLE=$TASKFLEET_CLAIM_TABLE
TASKFLEET_JOB_TABLE=$TASKFLEET_JOB_TABLE
TASKFLEET_JOB_QUEUE_PREFIX=$TASKFLEET_JOB_QUEUE_PREFIX
TASKFLEET_INSTANCE_ID=$instance_id
TASKFLEET_GROUP_NAME=$group_name
TASKFLEET_IDLE_TIMEOUT=$TASKFLEET_IDLE_TIMEOUT
TASKFLEET_VISIBILITY_TIMEOUT=$TASKFLEET_VISIBILITY_TIMEOUT
TASKFLEET_CONCURRENCY=$TASKFLEET_CONCURRENCY
TASKFLEET_LIFECYCLE_HOOK=$TASKFLEET_LIFECYCLE_HOOK
TASKFLEET_METADATA_URL=$imds
TASKFLEET_STATE_DIR=/var/lib/taskfleet/worker
TASKFLEET_TASK_USER=taskfleet-task
CONFIG
chmod 0600 /etc/taskfleet/worker.env

systemctl enable taskfleet-worker.service
# Started by systemd, where it runs (sd_booted's test): not in a chroot (the tests).
if [ -d /run/systemd/system ]; then
  systemctl start taskfleet-worker.service
fi
