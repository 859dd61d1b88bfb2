"""Files that stay honest under faults: per-process temporary names, stale temporaries cleaned, write errors
that name the path and the free space, damaged files set aside, and one owner per run.

* A temporary file or folder is named ``.<name>.tmp-<host>-<pid>`` (:func:`temp_path`): two processes never
  share one, and a later process can tell whether its writer still lives (:func:`is_stale`: same host and a
  dead pid, or another host and older than :data:`FOREIGN_TEMP_AGE` seconds). :func:`remove_stale` deletes
  those; the model cache's ``<name>.tmp<pid>`` (the old form) is read the same way.
* :func:`write_error` turns an ``OSError`` / torch's ``RuntimeError`` of a failed write (disk full, quota,
  read-only file system) into :class:`WriteFailed`, naming the path and the free space there
  (``shutil.disk_usage``).
* :func:`set_aside` renames a damaged file or folder to ``<name>.corrupt`` and says so in a
  :class:`DamagedFileWarning` with what to do; :func:`read_json` reads strict JSON (no ``NaN``/``Infinity``)
  and raises :class:`DamagedFile` naming the path.
* :class:`RunLock`: an exclusive ``fcntl.flock`` on ``.<run_id>.lock`` beside the run's results file. The kernel
  (or the NFS server, which emulates flock with POSIX locks) releases it when its process dies, even by
  SIGKILL: no stale lock survives a kill. The file holds the owner's host, pid and start time, shown to a
  process that waits. (Lustre needs the ``flock`` mount option.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path

HOST = socket.gethostname()
FOREIGN_TEMP_AGE = 24 * 3600  # a temporary file of another host is stale after a day
CORRUPT_SUFFIX = ".corrupt"
# ".<name>.tmp-<host>-<pid>" (this module), ".<name>.tmp<pid>" / "<name>.tmp<pid>" (older writers), ".<name>.tmp"
_TEMP = re.compile(r"\.tmp(?:-(?P<host>.+)-(?P<pid>\d+)|(?P<oldpid>\d+))?$")


class WriteFailed(OSError):
    """A file could not be written (disk full, quota, read-only file system); the message names the path and
    the free space there."""


class DamagedFile(ValueError):
    """A file that should hold JSON (a results file, a build stamp, a checkpoint's state) cannot be read."""


class DamagedFileWarning(UserWarning):
    """A damaged file was renamed to ``*.corrupt`` and is not used."""


def temp_path(path: str | Path) -> Path:
    """The temporary name of ``path`` for this process: ``.<name>.tmp-<host>-<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{HOST}-{os.getpid()}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def is_stale(path: str | Path, now: float | None = None) -> bool:
    """Whether the temporary file or folder ``path`` was left by a process that no longer writes it."""
    match = _TEMP.search(Path(path).name)
    if match is None:
        return False
    host, pid = match["host"], match["pid"] or match["oldpid"]
    if pid is None:  # no owner recorded (".step-000014.tmp" of older code)
        return True
    if host in (None, HOST):
        return not pid_alive(int(pid))
    try:
        age = (now or time.time()) - Path(path).stat().st_mtime
    except FileNotFoundError:
        return False
    return age > FOREIGN_TEMP_AGE


def remove_stale(folder: str | Path, pattern: str = ".*.tmp*") -> list[Path]:
    """Delete the temporaries matching ``pattern`` in ``folder`` whose writer is gone (:func:`is_stale`);
    returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.glob(pattern)):
        if is_stale(path):
            remove(path)
            removed.append(path)
    return removed


def remove_free_locks(folder: str | Path) -> list[Path]:
    """Delete the :class:`RunLock` files in ``folder`` that nobody holds (left by killed owners): each is
    locked first, so a held one is never touched; returns what was removed."""
    removed = []
    for path in sorted(Path(folder).glob(".*.lock")) if Path(folder).is_dir() else []:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)  # while holding it: RunLock.acquire then sees another inode and retries
            removed.append(path)
        except OSError:  # held (BlockingIOError) or already gone
            pass
        finally:
            os.close(fd)
    return removed


def remove(path: str | Path) -> None:
    """Delete a file or folder, if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def install_folder(tmp: str | Path, target: str | Path, complete) -> Path:
    """Move the finished folder ``tmp`` to ``target`` by one atomic rename. If ``target`` appeared meanwhile
    (another process converted it too) and ``complete(target)`` holds, it is kept and ``tmp`` dropped; an
    incomplete ``target`` is set aside, never deleted (a process may be reading it)."""
    tmp, target = Path(tmp), Path(target)
    for _ in range(3):
        try:
            os.rename(tmp, target)  # fails if target is a non-empty folder
            return target
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
                raise
        if complete(target):
            remove(tmp)
            return target
        set_aside(target, "an incomplete copy", "replaced by a complete one")
    raise OSError(f"cannot move {tmp} to {target}: it keeps being replaced")


def free_space(path: str | Path) -> str:
    """The free space of the file system holding ``path`` (or its nearest existing parent), readable."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown free space"
    return f"{free / 2**20:.1f} MiB free on the file system of {path}"


def write_error(path: str | Path, err: BaseException, what: str = "file", resume: str = "") -> WriteFailed:
    """The :class:`WriteFailed` to raise for ``err`` while writing ``path`` (call after removing temporaries);
    ``resume`` says where the next run starts."""
    code = getattr(err, "errno", None)
    text = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if code in (errno.ENOSPC, errno.EDQUOT) or "unexpected pos" in str(err):  # torch's disk-full message
        hint = "the disk (or quota) is full"
    elif code == errno.EROFS:
        hint = "the file system is read-only"
    elif code == errno.EACCES:
        hint = "no permission to write there"
    else:
        hint = "the write failed"
    message = (f"cannot write the {what} {path}: {hint} ({text}); {free_space(path)}. Free space or choose "
               f"another folder (results_dir), then run again{resume}; nothing half-written was kept")
    return WriteFailed(code, message) if code is not None else WriteFailed(message)


def set_aside(path: str | Path, problem: str, consequence: str) -> Path:
    """Rename the damaged ``path`` to ``<name>.corrupt`` (``.corrupt.1``, ... if taken) and warn, naming
    both, the ``problem`` and what happens now (``consequence``)."""
    path = Path(path)
    target, k = path.with_name(path.name + CORRUPT_SUFFIX), 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}.{k}")
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another process set it aside first
        return target
    warnings.warn(f"{path} is damaged ({problem}); moved to {target.name} and not used: {consequence}. "
                  f"Delete {target.name} once you have looked at it", DamagedFileWarning, stacklevel=2)
    return target


def _no_constants(name: str):
    raise ValueError(f"non-finite number {name} (not strict JSON)")


def read_json(path: str | Path):
    """Strict JSON from ``path`` (UTF-8; ``NaN``/``Infinity`` refused); :class:`DamagedFile` naming the path
    and the problem when it cannot be read."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise DamagedFile(f"{path}: {type(err).__name__}: {err}") from err


class RunLock:
    """One owner per run: ``with RunLock(path) as lock`` holds an exclusive lock on ``.<name>.lock`` beside
    ``path``; a second process waits (saying who holds it) until the owner ends, by success, error or kill.
    ``lock.waited`` tells whether it had to wait (then the caller should look again for the owner's results).
    ``lock.holder`` is what the owner wrote (host, pid, start time)."""

    NAME_WAIT = 2.0  # seconds a waiter waits for the owner's name before calling it "another process"

    def __init__(self, path: str | Path, poll: float = 0.5, say=None):
        path = Path(path)
        self.file, self.name = path.with_name(f".{path.name}.lock"), path.stem
        self.poll, self.fd, self.waited, self.holder = poll, None, False, None
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))

    def acquire(self) -> "RunLock":
        self.file.parent.mkdir(parents=True, exist_ok=True)
        since = None  # when this process first found the lock held; the owner writes who it is just after locking,
        # so a read in between finds the file empty: wait up to NAME_WAIT seconds for the name before saying
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                self.waited = True
                since = since or time.monotonic()
                if self.holder is None and (holder or time.monotonic() - since >= self.NAME_WAIT):
                    self.holder = holder or "another process"
                    self.say(f"{self.name} is being run by {self.holder}; waiting for it to finish")
                time.sleep(self.poll)
                continue
            try:  # the owner before us may have removed the file after we opened it: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:  # who holds it, for the waiters' message (best effort: the disk may be full)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on host {HOST} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                              .encode("utf-8"), 0)
            except OSError:
                pass
            if self.waited and self.holder is None:  # the owner ended before it could be named
                self.holder = "another process"
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.file)  # while holding it: a waiter then finds another inode and retries
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing releases the flock
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
