"""A secret kept in a file of its own: made once, readable by its owner only, never seen half-written."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes in `path`; the first caller writes `make()` there with mode 0600.

    Two processes starting at once (the service and a CLI command) must end up with the same
    secret, and neither may read the file between its creation and its write: the content is
    staged in a private file and hard-linked into place, which appears whole or not at all.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staged = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(make())
    try:
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink()
    return path.read_bytes()
