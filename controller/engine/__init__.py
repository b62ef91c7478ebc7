"""What runs each cycle and beside it: the cycle itself, the loop that drives it, periodic
reconciliation, housekeeping, and signals (notifications and metric values).

Talks to the ledger, the flag and the backends only through the ports of ``controller.core``;
imports no ledger, intake, API or CLI module, and no adapter.
"""
