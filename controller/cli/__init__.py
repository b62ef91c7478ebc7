"""The ``cutover`` command line: every command, ``cutover flag …`` and ``cutover demo``.

The top layer: it may import anything in the controller; nothing imports it.
``main`` is the console script's entry point (``controller.cli:main``).
"""

from controller.cli.app import main

__all__ = ["main"]
