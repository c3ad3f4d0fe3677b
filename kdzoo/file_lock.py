"""An exclusive lock on a file, held by a live process, that names its holder.

``fcntl.flock`` on an open file: the kernel releases it when the holding process
exits for any reason (kill -9, OOM, preemption), so a dead holder's lock is simply
taken over, with no stale-pid guessing. The holder writes its pid, host and start
time into the file so a refused process can say who holds it. Locks are per open
file, so two ``FileLock`` objects in one process also exclude each other.
"""

import errno
import fcntl
import json
import os
import socket
import time

from kdzoo.errors import WorkdirInUseError


def _holder_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')!r} (since {since})"


class FileLock:
    """``with FileLock(path, what=...):`` or ``acquire()`` / ``release()``.

    ``blocking=False`` raises :class:`kdzoo.errors.WorkdirInUseError` naming the
    holder at once; ``blocking=True`` waits (for short critical sections such as
    one download or conversion).
    """

    def __init__(self, path, what=None, blocking=False):
        self.path = os.fspath(path)
        self.what = what or os.path.dirname(self.path)
        self.blocking = blocking
        self.previous_holder = None  # set when a dead holder's lock was taken over
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirInUseError(
                f"{self.what} is in use by {_holder_text(self.path)} (lock file "
                f"{self.path}). Wait for that run to end or stop it; to run something "
                "else at the same time, use another --workdir.") from None
        if os.fstat(fd).st_size:  # a holder that died without releasing
            self.previous_holder = _holder_text(self.path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.time()}).encode(), 0)
        self._fd = fd
        return self

    def release(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)  # an empty lock file means "released cleanly"
            os.close(fd)

    def __enter__(self):
        return self.acquire() if not self.held else self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):  # a dropped lock (e.g. an exception unwinding a run) is released
        try:
            self.release()
        except Exception:  # pragma: no cover  (interpreter shutdown)
            pass
