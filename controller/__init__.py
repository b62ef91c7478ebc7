"""cutover's controller: the pure routing core, the ownership ledger, the cycle and the service.

Adapters (CodeBuild, Batch, local runners) live in their own packages and are wired in by
``controller.bootstrap`` alone.
"""
