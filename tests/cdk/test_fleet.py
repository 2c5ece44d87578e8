import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template
from cdk.fleet import BACKLOG_PER_INSTANCE, TERMINATION_HOOK, WorkerFleet

VISIBLE = "ApproximateNumberOfMessagesVisible"


def fleet_template(
    *, spot: bool = True, instance_types: list[str] | None = None, max_workers: int = 7
) -> Template:
    stack = cdk.Stack(cdk.App(), env=cdk.Environment(account="123456789012", region="us-east-1"))
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Vpc",
        vpc_id="vpc-0a1b2c3d4e5f60718",
        availability_zones=["us-east-1a"],
        public_subnet_ids=["subnet-0a1b2c3d4e5f60710"],
    )
    WorkerFleet(
        stack,
        "Fleet",
        vpc=vpc,
        machine_image=ec2.MachineImage.latest_amazon_linux2023(),
        instance_types=["t3.small", "t3a.small"] if instance_types is None else instance_types,
        max_workers=max_workers,
        spot=spot,
        user_data=ec2.UserData.for_linux(),
        requests=sqs.Queue(stack, "Requests"),
    )
    return Template.from_stack(stack)


def test_launch_template_requires_imdsv2_and_encrypts_its_volume() -> None:
    fleet_template().has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "MetadataOptions": {
                        "HttpTokens": "required",
                        "HttpPutResponseHopLimit": 1,
                        "InstanceMetadataTags": "enabled",
                    },
                    "BlockDeviceMappings": [
                        Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})
                    ],
                }
            )
        },
    )


def test_group_starts_at_zero_with_metrics_and_spot() -> None:
    fleet_template().has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MinSize": "0",
            "MaxSize": "7",
            "MetricsCollection": [{"Granularity": "1Minute"}],
            "MixedInstancesPolicy": {
                "InstancesDistribution": Match.object_like(
                    {
                        "OnDemandPercentageAboveBaseCapacity": 0,
                        "SpotAllocationStrategy": "price-capacity-optimized",
                    }
                ),
                "LaunchTemplate": Match.object_like(
                    {
                        "Overrides": [
                            {"InstanceType": "t3.small"},
                            {"InstanceType": "t3a.small"},
                        ]
                    }
                ),
            },
        },
    )


def test_spot_groups_rebalance_and_every_group_waits_for_its_workers_to_leave() -> None:
    spot = fleet_template()
    spot.has_resource_properties("AWS::AutoScaling::AutoScalingGroup", {"CapacityRebalance": True})
    spot.has_resource_properties(
        "AWS::AutoScaling::LifecycleHook",
        {
            "LifecycleHookName": TERMINATION_HOOK,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            "DefaultResult": "CONTINUE",
            "HeartbeatTimeout": 180,
        },
    )
    fleet_template(spot=False).has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup", {"CapacityRebalance": False}
    )


def test_on_demand_when_spot_is_off() -> None:
    fleet_template(spot=False).has_resource_properties(
        "AWS::AutoScaling::AutoScalingGroup",
        {
            "MixedInstancesPolicy": Match.object_like(
                {
                    "InstancesDistribution": Match.object_like(
                        {"OnDemandPercentageAboveBaseCapacity": 100}
                    )
                }
            )
        },
    )


def test_target_tracking_on_backlog_per_instance_by_metric_math() -> None:
    template = fleet_template()
    template.has_resource_properties(
        "AWS::AutoScaling::ScalingPolicy",
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingConfiguration": {
                "TargetValue": BACKLOG_PER_INSTANCE,
                "CustomizedMetricSpecification": {
                    "Metrics": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Id": "visible",
                                    "MetricStat": Match.object_like(
                                        {
                                            "Metric": Match.object_like(
                                                {"MetricName": VISIBLE, "Namespace": "AWS/SQS"}
                                            )
                                        }
                                    ),
                                }
                            ),
                            Match.object_like(
                                {
                                    "Id": "inservice",
                                    "MetricStat": Match.object_like(
                                        {
                                            "Metric": Match.object_like(
                                                {"MetricName": "GroupInServiceInstances"}
                                            )
                                        }
                                    ),
                                }
                            ),
                            Match.object_like(
                                {
                                    "Expression": Match.string_like_regexp(
                                        r"\(visible \+ inflight\) / inservice"
                                    ),
                                    "ReturnData": True,
                                }
                            ),
                        ]
                    )
                },
            },
        },
    )


def test_a_step_policy_scales_from_zero_on_the_first_message() -> None:
    template = fleet_template()
    template.has_resource_properties(
        "AWS::AutoScaling::ScalingPolicy",
        {
            "PolicyType": "StepScaling",
            "AdjustmentType": "ExactCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Metrics": Match.array_with(
                [Match.object_like({"Expression": "IF(visible >= 1 AND inservice == 0, 1, 0)"})]
            ),
            "AlarmActions": [Match.any_value()],
        },
    )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="instance type"):
        fleet_template(instance_types=[])
    with pytest.raises(ValueError, match="max_workers"):
        fleet_template(max_workers=0)
