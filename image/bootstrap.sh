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
set -euo pipefail

: "${TASKFLEET_SOURCE_URL:?}" "${TASKFLEET_REGION:?}" "${TASKFLEET_REQUEST_QUEUE_URL:?}"
: "${TASKFLEET_RESPONSE_QUEUE_URL:?}" "${TASKFLEET_CLAIM_TABLE:?}"
: "${TASKFLEET_JOB_TABLE:?}" "${TASKFLEET_JOB_QUEUE_PREFIX:?}"
: "${TASKFLEET_IDLE_TIMEOUT:?}" "${TASKFLEET_VISIBILITY_TIMEOUT:?}"
: "${TASKFLEET_CONCURRENCY:?}" "${TASKFLEET_LIFECYCLE_HOOK:?}"

# A baked AMI (worker.pkr.hcl) has taskfleet installed already: boot is then
# only the configuration below.
if [ ! -x /opt/taskfleet/venv/bin/taskfleet ]; then
  work=$(mktemp -d)
  aws s3 cp --region "$TASKFLEET_REGION" "$TASKFLEET_SOURCE_URL" "$work/source.zip"
  dnf install -y unzip
  unzip -q "$work/source.zip" -d "$work/source"
  bash "$work/source/image/install.sh" "$work/source"
  rm -rf "$work"
fi

# This instance and its Auto Scaling group, from instance metadata (IMDSv2;
# the launch template makes instance tags readable there).
imds=http://169.254.169.254/latest
token=$(curl -sS -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$imds/api/token")
metadata() { curl -sS -f -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/$1"; }
instance_id=$(metadata instance-id)
group_name=$(metadata tags/instance/aws:autoscaling:groupName)

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

systemctl enable --now taskfleet-worker.service
