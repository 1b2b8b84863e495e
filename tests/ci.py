"""What a test needs and cannot find: a failure in CI (nothing skips there), a skip elsewhere."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(message: str, remedy: str) -> NoReturn:
    """Fail with `message` and `remedy` when CI is set; skip with `message` on a user's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI requires it ({remedy})")
    pytest.skip(message)
