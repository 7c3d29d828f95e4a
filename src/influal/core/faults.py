"""Fault injection for the kill tests: ``INFLUAL_FAULT_AT=N`` kills the process (SIGKILL, as ``kill -9``) at the
N-th fault point it passes. Fault points sit where a real kill hurts most: inside atomic writes (before and after
the rename), between training epochs, between scoring batches and after a round's state is saved.

Unset (every normal run), a fault point costs one dictionary lookup. Under torchrun, ``INFLUAL_FAULT_RANK=R`` limits
the kill to the process of rank R (the ``RANK`` torchrun sets); the others count their points but never fire.
"""

from __future__ import annotations

import os
import signal

_count = 0


def fault_point(where: str = "") -> None:
    """Count this point; SIGKILL the process when it is the one ``INFLUAL_FAULT_AT`` names."""
    target = os.environ.get("INFLUAL_FAULT_AT")
    if not target:
        return
    global _count
    _count += 1
    only = os.environ.get("INFLUAL_FAULT_RANK")
    if only is not None and only != os.environ.get("RANK", "0"):
        return  # another rank's fault
    log = os.environ.get("INFLUAL_FAULT_LOG")
    if log:  # the tests count the points of a whole run this way (INFLUAL_FAULT_AT=0 never fires)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{_count} {where}\n")
    if _count == int(target):
        os.kill(os.getpid(), signal.SIGKILL)
