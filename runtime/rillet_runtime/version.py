"""The one version and the revision built from, for `rillet --version`, `GET /info`, the
operator's startup line and the default image.

The version is pyproject.toml's, read from the installed package's metadata (the wheel in
the image, the editable install in a checkout), so nothing else in the tree spells it. The
revision is the git commit the image was built from: its build sets `RILLET_REVISION`."""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Mapping

DISTRIBUTION = "rillet"
REVISION_ENV = "RILLET_REVISION"
UNKNOWN_REVISION = "unknown"
IMAGE_REPOSITORY = "ghcr.io/rillet-dev/rillet"


@functools.cache
def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "0.0.0+unknown"


def revision(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(REVISION_ENV) or UNKNOWN_REVISION


def describe(environ: Mapping[str, str] = os.environ) -> str:
    """One line naming what runs, as `rillet --version` prints it and the operator logs it."""
    return f"rillet {version()} (revision {revision(environ)})"


def default_image() -> str:
    """The image of this version, which ChatService pods run unless their spec names one."""
    return f"{IMAGE_REPOSITORY}:{version()}"
