"""Who made a resource and when: the tags every backend puts on what it creates.

A backend writes :func:`owner_tag` and :func:`created_tag` into its own tagging (job
comment, pod labels, AWS tags, an agent's command line) when it creates something, and
returns them from ``deploy_discover`` in ``handle.data["owner"]`` and
``handle.data["created"]``. ``dask-deploy gc`` uses them to leave other users' clusters
alone and to give a cluster that is still starting a grace period.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["created_tag", "owner_is_me", "owner_tag", "owner_user", "tags_from_argv", "tags_to_argv"]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no $USER (a container): the uid still says who
        return str(os.getuid())


def owner_tag() -> str:
    """``user@host`` of this (the creating) process."""
    return f"{_user()}@{socket.gethostname()}"


def created_tag() -> int:
    """The creation time to tag with: seconds since the epoch."""
    return int(time.time())


def owner_user(owner: str | None) -> str | None:
    """The user part of an owner tag (None when the tag is missing)."""
    return owner.rpartition("@")[0] or owner if owner else None


def owner_is_me(owner: str | None) -> bool | None:
    """Whether an owner tag names the user running this process (None: untagged)."""
    user = owner_user(owner)
    return None if user is None else user == _user()


def tags_to_argv(owner: str | None = None, created: float | None = None,
                 owner_pid: int | None = None) -> list[str]:
    """Command-line flags that tag a process (an agent) with its owner and creation time."""
    out = ["--owner", owner or owner_tag(), "--created", str(int(created or created_tag()))]
    return [*out, "--owner-pid", str(owner_pid)] if owner_pid else out


def tags_from_argv(argv: Sequence[str]) -> dict[str, Any]:
    """The tags :func:`tags_to_argv` wrote, read back from a command line (missing: absent)."""
    out: dict[str, Any] = {}
    for flag, key, conv in (("--owner", "owner", str), ("--created", "created", float),
                            ("--owner-pid", "owner_pid", int)):
        if flag in argv[:-1]:
            with contextlib.suppress(ValueError):
                out[key] = conv(argv[list(argv).index(flag) + 1])
    return out


def tags_of(data: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """``(owner, created)`` of a discovered handle's data."""
    created = data.get("created")
    try:
        return data.get("owner"), float(created) if created is not None else None
    except (TypeError, ValueError):
        return data.get("owner"), None
