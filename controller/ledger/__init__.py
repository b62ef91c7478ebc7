"""The ownership ledger's implementations: SQLite (the embedded default, one file shared by
local processes), DynamoDB (shared by every replica of a deployment), and memory (simulations and
tests only: it keeps nothing).

Each implements the ledger role protocols of ``controller.core.ports`` and passes the contract
suite in ``tests/contract``. Imports the core and the plumbing only.
"""
