"""The app's routes, one ``APIRouter`` per concern: ``health`` (liveness, readiness), ``status``
(the status document, metrics), ``conversions`` (intake, one record, a page, requeue), ``tenants``
(the rollout-group view, one tenant's route) and ``dashboard`` (the page at ``/``).

Each module offers ``router(ctx)``; ``controller.api.app`` includes them in that order. Handlers
stay thin: shaping lives in the modules beside this package and reads in the read model.
"""
