"""cutover's controller, in sub-packages by role; each one's docstring says what it may import.

- ``core``: domain values, the error tree, every port, the pure rules. No I/O.
- ``plumbing``: what the adapters share with the controller (AWS clients and retries, local
  processes, the ticker, logging).
- ``engine``: the cycle and what runs beside it (loop, reconciliation, housekeeping, signals).
- ``ledger``: the ledger ports on SQLite and on DynamoDB.
- ``intake``: request validation, the SQS intake, the scheduled finders.
- ``api``: the HTTP service, its read models, metrics and the dashboard.
- ``cli``: every ``cutover`` command, ``cutover flag …`` and the demo included.

At the root: ``settings`` (the one configuration object), ``service`` (the running controller's
parts) and ``bootstrap``, the one composition root and the only module that names adapters.
Layers are enforced by import-linter (``pyproject.toml``): a package imports only those below it.
"""
