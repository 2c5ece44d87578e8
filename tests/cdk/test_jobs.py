import aws_cdk as cdk
from aws_cdk.assertions import Match, Template
from cdk.jobs import JobTable

from worker.contracts import JobItem


def test_job_table_keeps_jobs_for_a_retention_with_an_index_of_recent_ones() -> None:
    stack = cdk.Stack(cdk.App())
    JobTable(stack, "Jobs")
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": JobItem.PARTITION, "KeyType": "HASH"},
                {"AttributeName": JobItem.SORT, "KeyType": "RANGE"},
            ],
            "TimeToLiveSpecification": {"AttributeName": JobItem.TTL, "Enabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "GlobalSecondaryIndexes": [
                Match.object_like(
                    {
                        "IndexName": JobItem.DAY_INDEX,
                        "KeySchema": [
                            {"AttributeName": JobItem.DAY, "KeyType": "HASH"},
                            {"AttributeName": "submitted_at", "KeyType": "RANGE"},
                        ],
                    }
                )
            ],
        },
    )
