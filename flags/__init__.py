"""Reading the migration flag (sources, document validation, last-known-good) and operating it.

No routing logic lives here: ``controller.core.routing`` turns a snapshot into a path.
"""
