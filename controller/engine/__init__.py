"""What runs each cycle and beside it: the cycle itself, the loop that drives it, periodic
reconciliation, housekeeping, signals (notifications and metric values), the rollout gates and
auto-advance, shadow runs, and the rollout plan as they read it; and what looks ahead and behind:
the simulation that runs the cycle on simulated paths, the forecast built on it, and the evidence
for switching the old path off.

Talks to the ledger, the flag and the backends only through the ports of ``controller.core``;
imports no ledger, intake, API or CLI module, and no adapter.
"""
