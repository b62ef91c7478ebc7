"""After start-up, the collector keeps what start-up made out of its passes and still frees the
rest, and a thread holding the interpreter lock hands it over sooner.

Run in a child interpreter: freezing the test process's own heap would outlive the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import gc
    import sys
    import weakref

    from controller.plumbing.runtime import settle_after_start_up, share_the_interpreter_lock

    class Node:
        pass

    def cycle():
        node = Node()
        node.self = node  # only the cyclic collector frees it
        return weakref.ref(node)

    start_up_garbage = cycle()
    kept = Node()
    settle_after_start_up()
    assert start_up_garbage() is None, "garbage of start-up was frozen instead of freed"
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects()), "a start-up object is still in the passes"
    later = cycle()
    gc.collect()
    assert later() is None, "garbage made after start-up is no longer collected"
    assert sys.getswitchinterval() == 0.005
    share_the_interpreter_lock()
    assert sys.getswitchinterval() <= 0.001
    print("ok")
    """
)


def test_start_up_objects_leave_the_collector_and_the_lock_is_shared_sooner() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
