import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Match, Template
from cdk.job_files import ACCESS_LOG_DAYS, JobFilesBucket

BLOCK_ALL = {
    "BlockPublicAcls": True,
    "BlockPublicPolicy": True,
    "IgnorePublicAcls": True,
    "RestrictPublicBuckets": True,
}


def template_of(*, with_key: bool = False) -> Template:
    stack = cdk.Stack(cdk.App())
    key = kms.Key(stack, "Key") if with_key else None
    JobFilesBucket(stack, "JobFiles", retention_days=9, encryption_key=key)
    return Template.from_stack(stack)


def test_the_bucket_is_private_and_its_objects_expire_with_the_jobs() -> None:
    template = template_of()
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like({"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}})
                ]
            },
            "PublicAccessBlockConfiguration": BLOCK_ALL,
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {
                "Rules": [
                    {
                        "ExpirationInDays": 9,
                        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                        "Status": "Enabled",
                    }
                ]
            },
            "LoggingConfiguration": {
                "DestinationBucketName": Match.any_value(),
                "LogFilePrefix": "job-files/",
            },
        },
    )


def test_both_buckets_refuse_requests_without_tls() -> None:
    template = template_of()
    policies = template.find_resources(
        "AWS::S3::BucketPolicy",
        {
            "Properties": {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Action": "s3:*",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            }
        },
    )
    assert len(policies) == 2


def test_with_a_key_the_bucket_is_encrypted_with_it_one_data_key_a_bucket() -> None:
    template = template_of(with_key=True)
    (key,) = template.find_resources("AWS::KMS::Key")
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "BucketKeyEnabled": True,
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": {"Fn::GetAtt": [key, "Arn"]},
                        },
                    }
                ]
            }
        },
    )


def test_accesses_are_logged_to_a_private_bucket_that_keeps_them_a_while() -> None:
    template = template_of()
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "PublicAccessBlockConfiguration": BLOCK_ALL,
            "VersioningConfiguration": {"Status": "Enabled"},
            "LifecycleConfiguration": {
                "Rules": [Match.object_like({"ExpirationInDays": ACCESS_LOG_DAYS})]
            },
        },
    )


def test_both_outlive_a_destroy_and_say_why_checkov_skips_a_check() -> None:
    template = template_of()
    buckets = template.find_resources("AWS::S3::Bucket")
    assert len(buckets) == 2
    assert {b["DeletionPolicy"] for b in buckets.values()} == {"Retain"}
    skipped = sorted(
        skip["id"] for b in buckets.values() for skip in b["Metadata"]["checkov"]["skip"]
    )
    assert skipped == ["CKV_AWS_18", "CKV_AWS_21"]
    assert all(
        len(skip["comment"]) > 40
        for b in buckets.values()
        for skip in b["Metadata"]["checkov"]["skip"]
    )


def test_only_s3_log_delivery_for_this_bucket_may_write_the_logs() -> None:
    template = template_of()
    (bucket,) = template.find_resources(
        "AWS::S3::Bucket", {"Properties": {"LoggingConfiguration": Match.any_value()}}
    )
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "logging.s3.amazonaws.com"},
                                "Action": "s3:PutObject",
                                "Condition": {
                                    "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [bucket, "Arn"]}},
                                    "StringEquals": {"aws:SourceAccount": Match.any_value()},
                                },
                            }
                        )
                    ]
                )
            }
        },
    )
