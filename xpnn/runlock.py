"""One process at a time in a run folder: an exclusive `fcntl.flock` on `<run>/.lock`, held for the run's life.

Two `xpnn train --resume` on one folder would otherwise both write its checkpoint (and one would delete
the other's temporary file in mid-write). The lock file holds the owner's pid, for the message the second
process gets and for `xpnn runs`. The kernel drops a flock when its process dies (kill -9 included), so a
killed run leaves no stale lock: "running" in status.json with a free lock means the run was interrupted.
The lock file itself is never deleted (deleting it would let two processes lock two different files).
TensorFlow's checkpoint manager has no such lock; this is Unix advisory locking, as git's index.lock is
a lock by convention. Where `fcntl` does not exist (Windows) the lock is not taken and every run reads free.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from xpnn.errors import RunInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class RunLock:
    """`with RunLock(folder):` holds the run folder for this process, or raises RunInUseError.

    The second process gets "run <id> is in use by process <pid>". Call `acquire()`/`release()` to hold
    it across callbacks (acquire at the start of training, release when training ends or fails).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (idempotent); a `RunInUseError` naming the holder's pid if another process has it."""
        if self._fd is not None:
            return self
        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot lock run {self.folder.name} ({path}: {exc.strerror}); the run folder must be "
                "writable to train in it.",
            ) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                pid = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                owner = f"process {pid}" if pid is not None else "another process"
                raise RunInUseError(
                    f"run {self.folder.name} is in use by {owner}; wait for it to finish or stop it "
                    f"(kill {pid if pid is not None else '<pid>'}), then resume."
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the folder up (the pid is cleared first, so a reader never sees a stale owner)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_state(folder: str | os.PathLike) -> str | int:
    """ "free" when no process holds the run folder, else the pid of the one that does (0 if unreadable).

    Works on a read-only folder (a shared lock is only tried, never kept).
    """
    path = Path(folder) / LOCK_FILE
    if fcntl is None:
        return "free"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "free"
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid = _read_pid(fd)
            return pid if pid is not None else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return "free"
    finally:
        os.close(fd)


def describe_status(folder: str | os.PathLike, status: dict[str, Any]) -> str:
    """The status to show for a run: status.json's, except "running" with a free lock, which is "interrupted"
    (the process was killed or the machine stopped; `xpnn train --resume <folder>` continues it)."""
    word = str(status.get("status", "?"))
    if word == "running" and lock_state(folder) == "free":
        return "interrupted"
    return word
