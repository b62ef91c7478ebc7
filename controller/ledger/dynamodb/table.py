"""Creating the DynamoDB ledger's table, for tests and local trials.

Production tables come from Terraform (``terraform/modules/ledger``); both build the key schema
``schema`` declares. Only creates: it never reads or writes an item.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from controller.ledger.dynamodb import schema

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.literals import ScalarAttributeTypeType
    from mypy_boto3_dynamodb.type_defs import AttributeDefinitionTypeDef


def _attribute(name: str, kind: str) -> AttributeDefinitionTypeDef:
    return {"AttributeName": name, "AttributeType": cast("ScalarAttributeTypeType", kind)}


def create_table(client: DynamoDBClient, table: str) -> None:
    """Create the ledger table with the schema Terraform also builds (for tests and local trials)."""
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            _attribute(schema.HASH_KEY, schema.HASH_KEY_TYPE),
            _attribute(schema.STATE_INDEX_HASH_KEY, schema.STATE_INDEX_HASH_KEY_TYPE),
            _attribute(schema.STATE_INDEX_RANGE_KEY, schema.STATE_INDEX_RANGE_KEY_TYPE),
            _attribute(schema.TENANT_INDEX_HASH_KEY, schema.TENANT_INDEX_HASH_KEY_TYPE),
            _attribute(schema.TENANT_INDEX_RANGE_KEY, schema.TENANT_INDEX_RANGE_KEY_TYPE),
        ],
        KeySchema=[{"AttributeName": schema.HASH_KEY, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": schema.STATE_INDEX,
                "KeySchema": [
                    {"AttributeName": schema.STATE_INDEX_HASH_KEY, "KeyType": "HASH"},
                    {"AttributeName": schema.STATE_INDEX_RANGE_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": schema.TENANT_INDEX,
                "KeySchema": [
                    {"AttributeName": schema.TENANT_INDEX_HASH_KEY, "KeyType": "HASH"},
                    {"AttributeName": schema.TENANT_INDEX_RANGE_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE},
    )
