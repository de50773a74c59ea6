"""The pinned versions of what the cluster path runs, read from their one home: k8s/versions.env.

scripts/kind.sh sources that file and the kind-e2e workflow appends it to $GITHUB_ENV; Python reads it
here. The file is plain `KEY=value` lines (comments with #, no quotes, no shell expansion), so bash,
GitHub Actions and this parser all read the same thing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from portfolio_mlops.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
VERSIONS_FILE = REPO / "k8s" / "versions.env"

_LINE = re.compile(r"([A-Z][A-Z0-9_]*)=(\S+)")


def pinned_versions(path: str | Path = VERSIONS_FILE) -> dict[str, str]:
    """Every `KEY=value` pin of the file, in file order. Malformed lines are a ConfigError naming file:line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the version pins: {exc}") from exc
    pins: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: expected KEY=value (upper-case key, no spaces or quotes), got {line!r}")
        key, value = match.groups()
        if key in pins:
            raise ConfigError(f"{path}:{number}: {key} is pinned twice")
        pins[key] = value
    return pins


def kfp_backend_version(path: str | Path = VERSIONS_FILE) -> str:
    """The KFP backend release `scripts/kind.sh kfp-install` installs: $KFP_VERSION if set (an
    experiment, as kind.sh allows), otherwise the pin."""
    override = os.environ.get("KFP_VERSION", "").strip()
    if override:
        return override
    pins = pinned_versions(path)
    if "KFP_VERSION" not in pins:
        raise ConfigError(f"{path}: no KFP_VERSION pin")
    return pins["KFP_VERSION"]
