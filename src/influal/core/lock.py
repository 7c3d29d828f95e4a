"""One run per results folder: a lock file holding the owner's pid and host.

A second run on the same folder is refused while the owner is alive; a lock left by a process that no longer
exists (killed with -9) is taken over with a message.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

from .errors import StateError

LOCK_NAME = ".influal.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def lock_owner(folder: Path) -> tuple[int, str] | None:
    """(pid, host) of the live owner of ``folder``'s lock, or None when unlocked or the lock is stale."""
    path = Path(folder) / LOCK_NAME
    try:
        pid_text, _, host = path.read_text(encoding="utf-8").strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host and host != socket.gethostname():
        return pid, host  # another machine's: assume alive (it cannot be checked from here)
    return (pid, host) if pid != os.getpid() and _alive(pid) else None


class FolderLock:
    """``with FolderLock(out, log):`` holds ``out/.influal.lock`` for the block."""

    def __init__(self, folder: Path, log: Callable[[str], None] | None = None):
        self.path = Path(folder) / LOCK_NAME
        self.log = log or (lambda _m: None)
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = lock_owner(self.path.parent)
                if owner is not None:
                    raise StateError(f"{self.path.parent} is in use by another influal run (pid {owner[0]} on "
                                     f"{owner[1] or 'this machine'}); wait for it to finish or stop it") from None
                stale = self.path.read_text(encoding="utf-8", errors="replace").strip() if self.path.exists() else ""
                self.log(f"taking over the stale lock of {self.path.parent} (owner {stale or 'unknown'} is gone)")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return
        raise StateError(f"could not take the lock {self.path}; remove it if no influal run uses the folder")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
