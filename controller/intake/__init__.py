"""Where conversions come from: validation of every request (HTTP, finders, queues), the SQS
intake and the scheduled target finders (SQL, S3, or a callable of your own).

Everything here hands work to the ledger through one validated, idempotent ``accept``; imports
the core, the plumbing and the settings, never the engine's cycle, the API or the CLI.
"""
