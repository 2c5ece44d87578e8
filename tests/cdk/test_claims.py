import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Template
from cdk.claims import KEY_ATTRIBUTE, TTL_ATTRIBUTE, ClaimTable


def test_claim_table_is_on_demand_with_ttl_and_recovery() -> None:
    stack = cdk.Stack(cdk.App())
    ClaimTable(stack, "Claims")
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}],
            "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
    )
    template.has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Delete"})


def test_with_a_key_the_claim_table_is_encrypted_with_it() -> None:
    stack = cdk.Stack(cdk.App())
    ClaimTable(stack, "Claims", encryption_key=kms.Key(stack, "Key"))
    template = Template.from_stack(stack)
    (key,) = template.find_resources("AWS::KMS::Key")
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "SSESpecification": {
                "SSEEnabled": True,
                "SSEType": "KMS",
                "KMSMasterKeyId": {"Fn::GetAtt": [key, "Arn"]},
            }
        },
    )
