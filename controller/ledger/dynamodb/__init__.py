"""The ownership ledger on DynamoDB, in parts by role.

``ledger`` composes ``DynamoDBLedger`` from the parts (``claims``, ``dispatch``, ``outcomes``,
``flag_leases``, ``reads``) over the transaction engine (``writes``) and the plumbing (``base``);
``codec`` maps items to values, ``schema`` names the keys Terraform builds too, and ``table``
creates a table for tests and local trials. Imports the core, the plumbing and the flag snapshot
only.
"""

from controller.ledger.dynamodb.ledger import DynamoDBLedger
from controller.ledger.dynamodb.table import create_table

__all__ = ["DynamoDBLedger", "create_table"]
