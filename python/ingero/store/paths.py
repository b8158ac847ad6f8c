"""The default database location: $INGERO_DB, else ~/.ingero/ingero.db."""

from __future__ import annotations

import os
import pwd
from pathlib import Path


def _home() -> Path:
    # Under sudo, the invoking user's home, so `sudo ingero trace` and a later
    # `ingero explain` by that user find the same file.
    sudo_user = os.environ.get("SUDO_USER")
    if os.geteuid() == 0 and sudo_user:
        try:
            return Path(pwd.getpwnam(sudo_user).pw_dir)
        except KeyError:
            pass
    return Path.home()


def default_db_path(create_dir: bool = False) -> Path:
    env = os.environ.get("INGERO_DB")
    if env:
        return Path(env)
    path = _home() / ".ingero" / "ingero.db"
    if create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path
