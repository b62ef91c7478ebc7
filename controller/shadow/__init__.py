"""Shadow outputs: reading them bounded in memory, comparing them, and cleaning the quarantine.

Between the engine and the plumbing: it reads files and S3 objects and parses workbooks, but
decides nothing about parity (``controller.core.parity``) and never touches a ledger, a backend
or a real conversion's output.
"""
