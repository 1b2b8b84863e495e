"""The run directory holds PHI (DICOM, volumes, results, checkpoints) and secrets: only its owner may read it.

`protect_run_dir` is called by every entry point that writes there (the CLI, the app, the
runtime, `services up`): the run directory becomes 0700 and, through the process umask, every
file the process (and the servers it starts) creates afterwards is 0600 and every folder 0700.
The umask is process-wide on purpose: pydicom, SQLite, numpy and Orthanc create files in many
places, and only the umask reaches them all.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from tools.secret_file import read_or_create

PRIVATE_UMASK = 0o077


def protect_run_dir(run_dir: Path) -> Path:
    """Create `run_dir` if needed, make it 0700 and set the umask so new files are 0600."""
    os.umask(PRIVATE_UMASK)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A run directory made by an older version (or by hand) may be world-readable: close it.
    try:
        run_dir.chmod(0o700 | _database_passage(run_dir))
    except PermissionError as exc:
        raise PermissionError(
            f"cannot make the run directory {run_dir} private (mode 0700): {exc.strerror}. It holds patient "
            "data; use a directory this account owns (IMAGING_AGENT_RUN_DIR)."
        ) from exc
    return run_dir


def _database_passage(run_dir: Path) -> int:
    """The group search bit, kept while `services up --scale` lets PostgreSQL's system user through.

    PostgreSQL refuses to run as root, so its cluster in run/postgres belongs to its own system user,
    who must pass through the run directory to reach it: the run directory's group is then that
    user's own group, with search (x) only; it cannot list the run directory or read anything else
    there (every other file is 0600, every folder 0700). agent/services/scale.py sets this."""
    cluster = run_dir / "postgres"
    group = run_dir.stat().st_gid
    passes = cluster.is_dir() and group != os.getegid() and cluster.stat().st_gid == group
    return 0o010 if passes else 0


def read_or_create_secret(path: Path) -> SecretStr:
    """The secret kept in `path`, generated (and written with mode 0600) the first time."""
    made = read_or_create(path, lambda: (secrets.token_urlsafe(24) + "\n").encode())
    return SecretStr(made.decode().strip())
