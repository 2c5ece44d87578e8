"""What the stack, the worker, the scheduler and the scripts must agree on.

The stack's output names, the worker's settings (environment variables), and
the SQS limits both ends of the queues obey: spelled here once. Only the
standard library is used, so ``cdk/`` and ``scripts/`` import it as freely as
the packages do. ``image/bootstrap.sh`` keeps shell copies of the worker
settings; a test compares them with these.
"""

from typing import Final


class Output:
    """The outputs of the deployed stack, by the names CloudFormation lists them."""

    REQUEST_QUEUE_URL: Final = "RequestQueueUrl"
    RESPONSE_QUEUE_URL: Final = "ResponseQueueUrl"
    DEAD_LETTER_QUEUE_URL: Final = "DeadLetterQueueUrl"
    CLAIM_TABLE_NAME: Final = "ClaimTableName"
    GROUP_NAME: Final = "AutoScalingGroupName"
    REGION: Final = "Region"
    MAX_WORKERS: Final = "MaxWorkers"
    SLOTS_PER_INSTANCE: Final = "SlotsPerInstance"
    IDLE_TIMEOUT_SECONDS: Final = "IdleTimeoutSeconds"
    VISIBILITY_TIMEOUT_SECONDS: Final = "VisibilityTimeoutSeconds"
    INSTANCE_TYPES: Final = "InstanceTypes"  # comma-separated: what a job's cost is priced at
    SPOT: Final = "Spot"  # "true" or "false"
    JOB_TABLE_NAME: Final = "JobTableName"
    JOB_QUEUE_PREFIX: Final = "JobQueuePrefix"  # a job's result queue: this + its id
    JOB_RETENTION_DAYS: Final = "JobRetentionDays"
    JOB_QUEUE_KEY: Final = "JobQueueKey"  # the KMS key job queues use; absent: SQS's own
    JOB_FILES_BUCKET: Final = "JobFilesBucket"  # a job's input and output files (JobFiles)


class JobFiles:
    """Where a job's files lie in the stack's job-files bucket (Output.JOB_FILES_BUCKET):
    the instance role may read under the one prefix and write under the other."""

    INPUTS: Final = "inputs/"  # input files, content-addressed, and each job's list of them
    OUTPUTS: Final = "outputs/"  # each task's files, packed: outputs/<job>/<task>.tar


class Setting:
    """The environment variables that configure a worker (``taskfleet worker``
    reads each as its option's default)."""

    SOURCE_URL: Final = "TASKFLEET_SOURCE_URL"  # bootstrap.sh only: the source zip
    REGION: Final = "TASKFLEET_REGION"
    REQUEST_QUEUE_URL: Final = "TASKFLEET_REQUEST_QUEUE_URL"
    RESPONSE_QUEUE_URL: Final = "TASKFLEET_RESPONSE_QUEUE_URL"
    CLAIM_TABLE: Final = "TASKFLEET_CLAIM_TABLE"
    JOB_TABLE: Final = "TASKFLEET_JOB_TABLE"
    JOB_QUEUE_PREFIX: Final = "TASKFLEET_JOB_QUEUE_PREFIX"
    INSTANCE_ID: Final = "TASKFLEET_INSTANCE_ID"
    GROUP_NAME: Final = "TASKFLEET_GROUP_NAME"
    IDLE_TIMEOUT: Final = "TASKFLEET_IDLE_TIMEOUT"
    VISIBILITY_TIMEOUT: Final = "TASKFLEET_VISIBILITY_TIMEOUT"
    CONCURRENCY: Final = "TASKFLEET_CONCURRENCY"
    TASK_TIMEOUT: Final = "TASKFLEET_TASK_TIMEOUT"
    TASK_USER: Final = "TASKFLEET_TASK_USER"
    METADATA_URL: Final = "TASKFLEET_METADATA_URL"
    LIFECYCLE_HOOK: Final = "TASKFLEET_LIFECYCLE_HOOK"
    STATE_DIR: Final = "TASKFLEET_STATE_DIR"
    POLL_SECONDS: Final = "TASKFLEET_POLL_SECONDS"


#: What the stack's user data hands ``image/bootstrap.sh``, which requires each.
BOOTSTRAP_SETTINGS: Final = (
    Setting.SOURCE_URL,
    Setting.REGION,
    Setting.REQUEST_QUEUE_URL,
    Setting.RESPONSE_QUEUE_URL,
    Setting.CLAIM_TABLE,
    Setting.JOB_TABLE,
    Setting.JOB_QUEUE_PREFIX,
    Setting.IDLE_TIMEOUT,
    Setting.VISIBILITY_TIMEOUT,
    Setting.CONCURRENCY,
    Setting.LIFECYCLE_HOOK,
)

#: What ``image/bootstrap.sh`` writes to /etc/taskfleet/worker.env for the worker's unit.
WORKER_ENV_SETTINGS: Final = (
    Setting.REGION,
    Setting.REQUEST_QUEUE_URL,
    Setting.RESPONSE_QUEUE_URL,
    Setting.CLAIM_TABLE,
    Setting.JOB_TABLE,
    Setting.JOB_QUEUE_PREFIX,
    Setting.INSTANCE_ID,
    Setting.GROUP_NAME,
    Setting.IDLE_TIMEOUT,
    Setting.VISIBILITY_TIMEOUT,
    Setting.CONCURRENCY,
    Setting.LIFECYCLE_HOOK,
    Setting.METADATA_URL,
    Setting.STATE_DIR,
    Setting.TASK_USER,
)


class JobItem:
    """The job table's items. A job's partition holds its ``meta`` item (state,
    settings, who submitted it) and the record items its readers stored
    (``rec#...``: result records as gzipped JSON Lines, in the order they were
    stored); its record shards (``<job>#<k>``) those its workers stored."""

    PARTITION: Final = "job"  # the job id
    SORT: Final = "item"  # META, or RECORDS_PREFIX + a key that sorts by storing time
    META: Final = "meta"
    RECORDS_PREFIX: Final = "rec#"
    # A record shard's partition is the job id, this and the shard's number: no
    # job id holds it, so a grant of ``*#*`` partitions never reaches a meta item.
    SHARD_SEPARATOR: Final = "#"
    STATE: Final = "state"  # one of the states below
    TTL: Final = "expires_at"  # epoch seconds after which DynamoDB deletes the item
    # tail_<Usage field>: what an instance used for no job (instance-seconds no
    # task used, long polls that found nothing), charged to the last job it ran.
    TAIL_PREFIX: Final = "tail_"
    DAY: Final = "day"  # meta items only: the submission date, the jobs index's key
    DAY_INDEX: Final = "by_day"  # recent jobs: partition DAY, sort submitted_at
    RUNNING: Final = "running"
    CANCELLED: Final = "cancelled"
    DONE: Final = "done"


#: The scheduler's token in an environment (taken out before any task starts).
TOKEN_VARIABLE: Final = "TASKFLEET_TOKEN"

#: SQS's largest message, and the largest a SendMessageBatch may carry in all.
MAX_MESSAGE_BYTES: Final = 1_048_576

#: Most messages one ReceiveMessage, SendMessageBatch or DeleteMessageBatch takes.
MAX_MESSAGES_PER_CALL: Final = 10

#: Longest long poll SQS allows, in seconds (the queues' receive wait).
LONG_POLL_SECONDS: Final = 20


class Default:
    """What the worker takes for a setting that neither its option nor its
    environment variable gives: ``taskfleet worker`` shows these in its help,
    ``RemoteConfig.from_environment`` applies them. (The stack gives every
    instance its own values: cdk/app.py's settings.)"""

    IDLE_TIMEOUT_SECONDS: Final = 300
    VISIBILITY_TIMEOUT_SECONDS: Final = 60
    TASK_TIMEOUT_SECONDS: Final = 3600  # per shell command; 0: none
    CONCURRENCY: Final = 0  # 0: one slot per CPU the worker sees
    POLL_SECONDS: Final = LONG_POLL_SECONDS  # the long poll's wait
