"""Plumbing shared by the controller and the adapter packages: AWS clients, error classification
and the one retry policy; what the two AWS backends share; the forwarding base of backend
decorators; local processes and result files; the ticker thread; JSON logging.

Imports only ``controller.core`` and ``controller.settings``: the adapters may import it without
dragging in the engine or the service.
"""
