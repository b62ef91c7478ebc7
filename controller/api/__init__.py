"""The HTTP face of a running controller: the FastAPI app (one router per concern), the JSON
shapes it publishes, the read models behind ``/status``, ``/tenants`` and the dashboard,
Prometheus metrics, and the dashboard with its charts.

May import everything below it (service, intake, ledger ports, engine, core); never the CLI.
"""
