"""Mark this instance unhealthy in its Auto Scaling group, which then ends it
(and launches another in its place): what image/bootstrap.sh does when the
stack's setup script fails, so that no worker runs tasks on an instance that
lacks what they need. The reason goes to the log (the instance's console and
journal), not to the API, which takes none.

    python -m worker.unhealthy --instance-id ID --region REGION
"""

import argparse

from worker.sqs import aws_client


def mark_unhealthy(instance_id: str, region: str) -> None:
    """Tell the group its instance is unhealthy, at once (no grace period)."""
    aws_client("autoscaling", region).set_instance_health(
        InstanceId=instance_id, HealthStatus="Unhealthy", ShouldRespectGracePeriod=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--region", required=True)
    args = parser.parse_args()
    mark_unhealthy(args.instance_id, args.region)


if __name__ == "__main__":
    main()
