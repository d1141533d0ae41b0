"""Private directories and log files: nobody else may read them or point them elsewhere.

A log or state directory at a predictable shared path (``/tmp/dask-deploy-<uid>``) can be
pre-created by another user, who then reads every log or, with a symlink, makes a worker
append to a file of their choosing. :func:`private_dir` refuses such a directory (it never
falls back silently: a refused path is named in a one-line error together with the option
that moves it); :func:`open_private` never follows a symlink and never writes into a file
that someone else owns.

Standard library only (plus the error class): the agent imports it on remote hosts too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from ._errors import SpecError

__all__ = ["open_private", "private_dir", "runtime_dir"]


def _unsafe_ancestor(path: str) -> str:
    """Why someone else could swap ``path`` or a folder above it ("" when nobody can).

    Every ancestor must belong to this user or root and must not be writable by others,
    unless it is sticky (like ``/tmp``: others may add entries there but not rename ours).
    A group-writable folder is fine when the group is this user's own (user private groups).
    """
    uid, gid = os.getuid(), os.getgid()
    current = os.path.dirname(path)
    while True:
        st = os.stat(current)
        sticky = bool(st.st_mode & stat.S_ISVTX)
        if st.st_uid not in (uid, 0):
            return f"its parent folder {current} belongs to uid {st.st_uid}, not to you (uid {uid})"
        if not sticky and (st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and st.st_gid != gid)):
            return f"its parent folder {current} is writable by other users"
        parent = os.path.dirname(current)
        if parent == current:
            return ""
        current = parent


def private_dir(path: str, option: str = "log_directory") -> str:
    """Create ``path`` (mode 0700, parents as needed) and make sure only this user can use it.

    Checked with ``lstat``: a real directory (not a symlink), owned by this user, not writable
    by group or others, and no folder above it that someone else could rename. A directory
    of ours that others may merely read is tightened to 0700. Anything else raises a one-line
    :class:`SpecError` naming ``option``, the path and why. Returns the absolute path.
    """
    path = os.path.abspath(os.path.expanduser(path))
    fix = f"remove it or pass {option}=<a directory only you can write to>"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        st = os.lstat(path)
    except OSError as e:
        raise SpecError(option, path, f"cannot create it ({e.strerror}): pass {option}=<a directory "
                        "you can write to>") from None
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        raise SpecError(option, path, f"it is a symlink (to {os.readlink(path)}), which someone else "
                        f"may have planted: {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise SpecError(option, path, f"it exists and is not a directory: {fix}")
    if st.st_uid != uid:
        raise SpecError(option, path, f"it belongs to uid {st.st_uid}, not to you (uid {uid}), so "
                        f"they can read or redirect what is written there: {fix}")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SpecError(option, path, f"it is writable by other users (mode "
                        f"{stat.S_IMODE(st.st_mode):o}): chmod 700 it, or {fix}")
    try:
        why = _unsafe_ancestor(path)
    except OSError as e:
        why = f"a folder above it cannot be checked ({e.strerror})"
    if why:
        raise SpecError(option, path, f"{why}, who could swap it for another: {fix}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)  # ours, only readable by others (made under a lax umask)
    return path


def runtime_dir() -> str | None:
    """``$XDG_RUNTIME_DIR`` when it is set and private to this user, else None."""
    path = os.environ.get("XDG_RUNTIME_DIR")
    if not path or not os.path.isabs(path):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    ok = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
    return path if ok else None


def open_private(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                 option: str = "log_directory") -> int:
    """Open (creating it 0600) a file in a private directory: never through a symlink, never
    one that someone else owns or that is linked elsewhere. Returns a close-on-exec fd."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SpecError(option, path, "the log file is a symlink, which someone else may have "
                            f"planted: remove it or pass {option}=<a directory only you can write to>"
                            ) from None
        raise
    st = os.fstat(fd)
    why = ("it is not a regular file" if not stat.S_ISREG(st.st_mode) else
           f"it belongs to uid {st.st_uid}" if st.st_uid != os.getuid() else
           "it has other hard links" if st.st_nlink > 1 else "")
    if why:
        os.close(fd)
        raise SpecError(option, path, f"refusing to write the log file: {why}; remove it or pass "
                        f"{option}=<a directory only you can write to>")
    return fd
