"""What every ``cutover`` command shares: the settings of this invocation and JSON output.

Imports settings and nothing else of the controller, so that every command module can use it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from controller.settings import Settings, load_settings


class State:
    """The root options of this invocation (``cutover --config FILE …``)."""

    config: Path | None = None


def settings(**overrides: Any) -> Settings:
    """The settings in force for this invocation."""
    return load_settings(State.config, **overrides)


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
