"""The reviewer at a terminal without a service: the OS account that owns the process.

The real uid is asked of the kernel (`os.getuid()`) and its name read from the password
database: `$USER`, `$LOGNAME` and `getpass.getuser()` come from the environment, which any
caller sets as they like.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Collection
from datetime import UTC, datetime

from tools.identity.principal import OS_ACCOUNT_ISSUER_PREFIX, NotAllowedError, Principal


def os_account_name() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def os_account_issuer() -> str:
    return OS_ACCOUNT_ISSUER_PREFIX + socket.gethostname()


def os_radiologist(listed: Collection[str]) -> Principal:
    """The OS account as a radiologist, if the settings list it; raises NotAllowedError otherwise."""
    entry = pwd.getpwuid(os.getuid())
    if entry.pw_name not in listed:
        raise NotAllowedError(
            f"the OS account {entry.pw_name} (uid {entry.pw_uid}) is not listed as a radiologist: sign in with "
            "`imaging-agent login` against `imaging-agent serve`, or add it to IMAGING_AGENT_LOCAL_RADIOLOGISTS"
        )
    full_name = entry.pw_gecos.split(",")[0].strip()
    return Principal(
        id=entry.pw_name,
        display_name=full_name or entry.pw_name,
        issuer=os_account_issuer(),
        roles=frozenset({"radiologist"}),
        auth_time=datetime.now(UTC),
        auth_method="os-account",
    )
