"""The ownership ledger on DynamoDB, shared by every controller replica of a deployment.

Every transition is a conditional write on the conversion's state, fence and path, so two
replicas racing for the same conversion cannot both win. Counters and per-minute decision totals
move in the same ``TransactWriteItems`` as the transition they count, so ``counts()`` and the
dashboard never scan; state queries go through the ``by_state`` index and tenant queries through
``by_tenant`` (see ``controller.ledger.dynamodb.schema``, which Terraform reads too). This module
only puts the parts together; the ledger stores, it never decides who should own what.
"""

from __future__ import annotations

from controller.ledger.dynamodb import schema
from controller.ledger.dynamodb.claims import Claims
from controller.ledger.dynamodb.codec import SEQ_KEY, text
from controller.ledger.dynamodb.dispatch import Dispatch
from controller.ledger.dynamodb.flag_leases import FlagAndLeases
from controller.ledger.dynamodb.outcomes import Outcomes
from controller.ledger.dynamodb.reads import Reads


class DynamoDBLedger(Claims, Dispatch, Outcomes, FlagAndLeases, Reads):
    """The ledger port on one DynamoDB table (``CUTOVER_LEDGER=dynamodb://TABLE``)."""

    def close(self) -> None:
        """Close the DynamoDB client."""
        self.client.close()

    def ping(self) -> None:
        """Raise ``LedgerError`` unless the table answers (one small GetItem)."""
        with self._errors("ping"):
            self._call(
                lambda: self.client.get_item(
                    TableName=self.table, Key={schema.HASH_KEY: text(SEQ_KEY)}, ProjectionExpression="pk"
                )
            )
