"""What every ``cutover`` command shares: the settings of this invocation and JSON output.

Imports settings and nothing else of the controller, so that every command module can use it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from controller.settings import Settings, load_settings

# Wide enough that piped output (to grep, a file, a chat) keeps one record a line.
PIPED_WIDTH = 1000


class State:
    """The root options of this invocation (``cutover --config FILE …``)."""

    config: Path | None = None
    # Set once the configuration's warnings were printed, or by a command that logs them itself.
    warned: bool = False


def settings(**overrides: Any) -> Settings:
    """The settings in force for this invocation; their warnings printed once, on stderr."""
    cfg = load_settings(State.config, **overrides)
    if not State.warned:
        State.warned = True
        for warning in cfg.warnings:
            sys.stderr.write(f"cutover: warning: {warning}\n")
    return cfg


def console(*, stderr: bool = False) -> Console:
    """A console that wraps for a terminal only: piped, a line stays one line."""
    terminal = Console(stderr=stderr).is_terminal
    return Console(stderr=stderr, soft_wrap=not terminal, width=None if terminal else PIPED_WIDTH)


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
