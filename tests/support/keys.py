"""API keys as the runtime reads them: a folder like a mounted Secret, one file per principal."""

from __future__ import annotations

from pathlib import Path


def write_api_keys(folder: Path, keys: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for principal, key in keys.items():
        (folder / principal).write_text(key + "\n")
    return folder


def api_key_settings(folder: Path, reload_seconds: float = 0.5) -> dict[str, str]:
    """`rillet_server` settings for `auth.mode: api_keys` reading `folder`."""
    return {
        "auth__mode": "api_keys",
        "auth__api_keys__path": str(folder),
        "auth__api_keys__reload_seconds": str(reload_seconds),
    }
