"""The worker fleet: role, launch template and an Auto Scaling group scaled on queue depth."""

from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.nag import acknowledge

MetricQuery = autoscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty

#: Backlog (messages visible or in flight) per in-service instance the
#: target-tracking policy aims at: one bundle at a time per worker.
BACKLOG_PER_INSTANCE = 1.0

#: Period of the queue and group metrics the policies read, in seconds.
METRIC_PERIOD = Duration.minutes(1)

#: Seconds a new instance is given to boot before its metrics count.
WARMUP = Duration.minutes(2)

#: The name of the group's termination lifecycle hook, which workers complete.
TERMINATION_HOOK = "taskfleet-termination"


class WorkerFleet(Construct):
    """EC2 workers in an Auto Scaling group that grows from zero with the request queue."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        machine_image: ec2.IMachineImage,
        instance_types: list[str],
        max_workers: int,
        spot: bool,
        user_data: ec2.UserData,
        requests: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        if not instance_types:
            raise ValueError("instance_types needs at least one instance type")
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="taskfleet worker: its queues, its claim table, its own group",
        )
        security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="taskfleet workers: no inbound; outbound to AWS APIs and packages",
            allow_all_outbound=True,
        )
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            machine_image=machine_image,
            instance_type=ec2.InstanceType(instance_types[0]),
            role=self.role,
            security_group=security_group,
            user_data=user_data,
            require_imdsv2=True,
            instance_metadata_tags=True,  # the worker reads its group's name from its tags
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        16, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
                    ),
                )
            ],
        )
        on_demand_share = 0 if spot else 100
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            min_capacity=0,
            max_capacity=max_workers,
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                launch_template=self.launch_template,
                launch_template_overrides=[
                    autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(name))
                    for name in instance_types
                ],
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=on_demand_share,
                    spot_allocation_strategy=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                ),
            ),
            group_metrics=[autoscaling.GroupMetrics.all()],
            default_instance_warmup=WARMUP,
            # A spot instance at risk is replaced before its interruption.
            capacity_rebalance=spot,
        )
        # An instance the group ends waits (up to the hook's timeout) while its
        # worker gives its bundles back, then completes the hook itself.
        self.group.add_lifecycle_hook(
            "Termination",
            lifecycle_hook_name=TERMINATION_HOOK,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=Duration.minutes(3),
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        acknowledge(
            self.group,
            "Scaling events are followed in the group's metrics and activity history; "
            "nobody subscribes to SNS notifications, and idle workers end themselves.",
            "AwsSolutions-AS3",
        )
        acknowledge(
            self.group,
            "The root volume is encrypted (BlockDeviceVolume.ebs(encrypted=True)); the "
            "rule cannot read a launch template whose image id is an SSM parameter.",
            "AwsSolutions-EC26",
        )
        self._scale_on_backlog(requests)
        self._scale_from_zero(requests)

    def _queue_metric(self, requests: sqs.IQueue, name: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/SQS",
            metric_name=name,
            dimensions_map={"QueueName": requests.queue_name},
            statistic="Sum",
            period=METRIC_PERIOD,
        )

    def _in_service(self) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace="AWS/AutoScaling",
            metric_name="GroupInServiceInstances",
            dimensions_map={"AutoScalingGroupName": self.group.auto_scaling_group_name},
            statistic="Average",
            period=METRIC_PERIOD,
        )

    def _scale_on_backlog(self, requests: sqs.IQueue) -> None:
        """Target tracking on backlog per instance, by metric math.

        CDK's L2 target tracking takes a single metric, not an expression, so
        this is the L1 policy.
        """

        def stat(query_id: str, metric: cloudwatch.Metric) -> MetricQuery:
            dimensions = metric.dimensions or {}
            return MetricQuery(
                id=query_id,
                return_data=False,
                metric_stat=autoscaling.CfnScalingPolicy.TargetTrackingMetricStatProperty(
                    metric=autoscaling.CfnScalingPolicy.MetricProperty(
                        namespace=metric.namespace,
                        metric_name=metric.metric_name,
                        dimensions=[
                            autoscaling.CfnScalingPolicy.MetricDimensionProperty(
                                name=name, value=str(value)
                            )
                            for name, value in dimensions.items()
                        ],
                    ),
                    stat=metric.statistic,
                ),
            )

        autoscaling.CfnScalingPolicy(
            self,
            "BacklogPerInstance",
            auto_scaling_group_name=self.group.auto_scaling_group_name,
            policy_type="TargetTrackingScaling",
            estimated_instance_warmup=int(WARMUP.to_seconds()),
            target_tracking_configuration=autoscaling.CfnScalingPolicy.TargetTrackingConfigurationProperty(
                target_value=BACKLOG_PER_INSTANCE,
                customized_metric_specification=autoscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                    metrics=[
                        stat(
                            "visible",
                            self._queue_metric(requests, "ApproximateNumberOfMessagesVisible"),
                        ),
                        stat(
                            "inflight",
                            self._queue_metric(requests, "ApproximateNumberOfMessagesNotVisible"),
                        ),
                        stat("inservice", self._in_service()),
                        MetricQuery(
                            id="backlog_per_instance",
                            label="Backlog per in-service instance",
                            expression=(
                                "IF(inservice > 0, (visible + inflight) / inservice,"
                                " visible + inflight)"
                            ),
                            return_data=True,
                        ),
                    ]
                ),
            ),
        )

    def _scale_from_zero(self, requests: sqs.IQueue) -> None:
        """One instance as soon as a bundle waits and none is in service.

        Target tracking alone is slow from zero (it needs data points from
        instances that do not exist yet); this step policy is the first step.
        """
        waiting_with_none = cloudwatch.MathExpression(
            expression="IF(visible >= 1 AND inservice == 0, 1, 0)",
            using_metrics={
                "visible": self._queue_metric(requests, "ApproximateNumberOfMessagesVisible"),
                "inservice": self._in_service(),
            },
            period=METRIC_PERIOD,
            label="Bundles waiting and no worker",
        )
        alarm = cloudwatch.Alarm(
            self,
            "WaitingWithNoWorker",
            metric=waiting_with_none,
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description="A bundle waits on the request queue and no worker is in service",
        )
        from_zero = autoscaling.StepScalingAction(
            self,
            "FromZero",
            auto_scaling_group=self.group,
            adjustment_type=autoscaling.AdjustmentType.EXACT_CAPACITY,
        )
        from_zero.add_adjustment(adjustment=1, lower_bound=0)
        alarm.add_alarm_action(cloudwatch_actions.AutoScalingAction(from_zero))


def read_image_file(name: str) -> str:
    """A file of image/, the folder that says how an instance becomes a worker."""
    return (Path(__file__).resolve().parent.parent / "image" / name).read_text()
