"""Key schema of the DynamoDB ledger table; Terraform and the ledger both read these names.

One table holds conversions (``pk = "conv#<id>"``), the last-known-good flag (``pk = "flag#lkg"``),
leases (``pk = "lease#<name>"``) and small key-value items such as finder watermarks
(``pk = "kv#<key>"``). The state index answers the cycle's and ``/status``'s queries without a
scan; the tenant index answers ``/tenants/{id}/route``. Names only: no client, no logic, so that
``tests/terraform`` can hold Terraform's table against it.
"""

from __future__ import annotations

HASH_KEY = "pk"
HASH_KEY_TYPE = "S"

STATE_INDEX = "by_state"
STATE_INDEX_HASH_KEY = "state_key"  # "<state>#<path or ->", e.g. "claimed#new"
STATE_INDEX_HASH_KEY_TYPE = "S"
STATE_INDEX_RANGE_KEY = "state_seq"  # receipt order, a number
STATE_INDEX_RANGE_KEY_TYPE = "N"

TENANT_INDEX = "by_tenant"
TENANT_INDEX_HASH_KEY = "tenant_id"
TENANT_INDEX_HASH_KEY_TYPE = "N"
TENANT_INDEX_RANGE_KEY = "received_at"
TENANT_INDEX_RANGE_KEY_TYPE = "N"

TTL_ATTRIBUTE = "expires_at"  # epoch seconds, set on finished conversions after the retention period
