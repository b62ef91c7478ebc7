"""The pure core: domain values, the one error tree, every port, and the pure rules (routing,
admission, transitions, the requeue reset, schedules).

No I/O and no clock: values in, values out. Imports nothing of the controller outside ``core``;
of ``flags`` only its value modules (``flags.snapshot``, ``flags.versions``).
"""
