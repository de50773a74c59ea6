"""What scripts/image-venv.sh removes from the images must stay unused by what the images run.

The images drop SciPy subpackages (SCIPY_UNUSED) that scikit-learn and the rest of SciPy never import.
This re-reads the installed sources of the pinned versions (the dev venv installs the same constraints),
so an upgrade that starts importing one of them fails here instead of in a pipeline step.
"""

from __future__ import annotations

import re
from pathlib import Path

import scipy
import sklearn

IMAGE_VENV = Path(__file__).resolve().parents[1] / "scripts" / "image-venv.sh"

# Import statements, not the `>>> from scipy import signal` of docstrings: at the start of a line.
_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?P<target>[\w.]+)(?:\s+import\s+(?P<names>[^#\n]+))?", re.MULTILINE)


def _scipy_unused() -> list[str]:
    match = re.search(r'SCIPY_UNUSED="([^"]+)"', IMAGE_VENV.read_text())
    assert match, "scripts/image-venv.sh no longer names SCIPY_UNUSED"
    return match.group(1).split()


def _imported_scipy_subpackages(path: Path, package: str) -> set[str]:
    """The scipy.<sub> a module imports, absolute or relative (inside scipy)."""
    found = set()
    for match in _IMPORT.finditer(path.read_text(errors="replace")):
        target, names = match.group("target"), match.group("names") or ""
        if package == "scipy" and target.startswith("."):
            depth = len(target) - len(target.lstrip("."))
            parts = path.relative_to(Path(scipy.__file__).parent).parts[:-1]
            base = ["scipy", *parts[: len(parts) - (depth - 1)]] if depth - 1 <= len(parts) else ["scipy"]
            rest = target.lstrip(".")
            target = ".".join([*base, rest] if rest else base)
        pieces = target.split(".")
        if pieces[0] != "scipy":
            continue
        if len(pieces) > 1:
            found.add(pieces[1])
        else:
            found.update(name.strip().split(" as ")[0].strip("() ") for name in names.split(","))
    return found


def _users(unused: set[str]) -> dict[str, set[str]]:
    users: dict[str, set[str]] = {}
    for package, root in (("scipy", Path(scipy.__file__).parent), ("sklearn", Path(sklearn.__file__).parent)):
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            if "/tests/" in f"/{rel}" or rel.startswith("_testing") or path.name in ("conftest.py", "_testing.py"):
                continue
            if package == "scipy" and rel.split("/")[0] in unused:
                continue  # a trimmed subpackage importing another is trimmed with it
            for sub in _imported_scipy_subpackages(path, package) & unused:
                users.setdefault(sub, set()).add(f"{package}/{rel}")
    return users


def test_the_scipy_subpackages_the_images_drop_are_imported_by_no_scipy_or_sklearn_module():
    unused = set(_scipy_unused())
    assert unused, "SCIPY_UNUSED is empty"
    assert not _users(unused), f"dropped from the images but imported: {_users(unused)}"


def test_the_import_scan_sees_a_subpackage_that_is_imported():
    """The scan must be able to fail: scipy.io is imported (sklearn.datasets loads .mat files), so asking
    about it finds its users."""
    assert "io" in _users({"io"})
