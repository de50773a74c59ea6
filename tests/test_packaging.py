"""What the installed distribution puts on a user's import path: `portfolio_mlops` and
`portfolio_mlops_kfp`, nothing else at the top level (issue 15). The KFP shells and the charts keep
their folders at the top of the repository (components/, pipelines/, charts/) but install as
`portfolio_mlops_kfp.components`, `.pipelines` and `.charts` (pyproject.toml's package-dir): generic
names such as `components` would collide with other packages in a user's environment.

`python -m pytest` run from the repository puts the repository root on sys.path: a module that still
imported the shells by their folder names would pass every other test here and fail only in a wheel or an
image, and a stale `portfolio_mlops.egg-info` left there by a build would stand in for the installed
metadata. The fresh interpreters below therefore start outside the repository, and the last test reads
the sources for such imports.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTION = "portfolio-mlops"
TOP_LEVEL = {"portfolio_mlops", "portfolio_mlops_kfp"}
# Installed name -> the repository folder it is installed from.
SHELLS = {"portfolio_mlops_kfp.components": "components", "portfolio_mlops_kfp.pipelines": "pipelines",
          "portfolio_mlops_kfp.charts": "charts"}
FOLDER_NAMES = ("components", "pipelines", "charts")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _outside_the_repository(code: str, folder: Path) -> dict:
    """What `code` prints (JSON) in a fresh interpreter whose working directory is `folder`, not the
    repository and with no PYTHONPATH: only the installed distribution (here the editable dev install)
    is on its path."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


INSTALLED = f"""
import importlib.metadata, json
dist = importlib.metadata.distribution({DISTRIBUTION!r})
print(json.dumps({{"top_level": (dist.read_text("top_level.txt") or "").split(),
                  "files": [str(f) for f in dist.files or ()],
                  "scripts": {{e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}}}}))
"""


def _top_level_of_installed_files(files: list[str]) -> set[str]:
    """Top-level import names among the distribution's installed files (a wheel install lists every
    module; an editable one lists only setuptools' own `__editable__` finder, which is not ours)."""
    names = set()
    for file in files:
        parts = Path(file).parts
        top = parts[0]
        if top in ("..", "__pycache__") or top.endswith(".dist-info") or top.startswith("__editable__"):
            continue
        if len(parts) > 1 or top.endswith(".py"):
            names.add(top.removesuffix(".py"))
    return names


def test_the_distribution_installs_only_the_two_project_packages_at_the_top_level(tmp_path):
    installed = _outside_the_repository(INSTALLED, tmp_path)
    assert set(installed["top_level"]) == TOP_LEVEL, f"{DISTRIBUTION}'s top_level.txt: {installed['top_level']}"
    extra = _top_level_of_installed_files(installed["files"]) - TOP_LEVEL
    assert not extra, f"{DISTRIBUTION} installs top-level {sorted(extra)}"


def test_the_console_script_is_the_namespaced_cli(tmp_path):
    scripts = _outside_the_repository(INSTALLED, tmp_path)["scripts"]
    assert scripts == {"portfolio-mlops": "portfolio_mlops_kfp.pipelines.cli:main"}


def test_outside_the_repository_the_shells_import_only_under_the_project_namespace(tmp_path):
    code = ("import importlib.util, json\n"
            f"names = {list(SHELLS)!r} + {list(FOLDER_NAMES)!r}\n"
            "specs = {n: importlib.util.find_spec(n) for n in names}\n"
            "print(json.dumps({n: s and s.origin for n, s in specs.items()}))\n")
    origins = _outside_the_repository(code, tmp_path)
    for name, folder in SHELLS.items():
        # editable: <repo>/components/__init__.py; wheel: site-packages/portfolio_mlops_kfp/components/__init__.py
        assert origins[name] is not None and Path(origins[name]).parent.name == folder, (name, origins[name])
    for name in FOLDER_NAMES:
        # Another distribution may own such a name; ours must not provide it.
        assert origins[name] is None or not Path(origins[name]).is_relative_to(REPO), (name, origins[name])


def test_every_package_folder_is_listed_in_pyproject():
    """The package list is written out (a find cannot rename a folder): a subpackage missing from it
    would still import in the editable dev install but be absent from the wheel and the images."""
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    package_dir = setuptools["package-dir"]
    assert {name: package_dir.get(name) for name in SHELLS} == SHELLS
    roots = {name: REPO / folder for name, folder in SHELLS.items()}
    roots |= {name: REPO / package_dir[""] / name for name in TOP_LEVEL}
    found = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            found.add(".".join((name, *relative)))
    assert found == listed, (f"pyproject.toml [tool.setuptools] packages: missing {sorted(found - listed)}, "
                             f"no such package folder {sorted(listed - found)}")


# A from-import, a plain import or a `python -m` of a folder name, also inside strings (`python -c` in
# the scripts, a component's embedded source in the compiled IR).
FOLDER_IMPORT = re.compile(r"(?<![\w.])from (?:components|pipelines|charts)(?:\.\w+)* import "
                           r"|^\s*import (?:components|pipelines|charts)\b"
                           r"|-m[\"', ]+(?:components|pipelines|charts)\.", re.MULTILINE)
SKIP_FOLDERS = {".git", ".venv", ".cache", ".bench", ".pytest_cache", "__pycache__", "mlruns", "build", "dist",
                "k8s"}
SOURCE_SUFFIXES = {".py", ".sh", ".md", ".toml", ".yaml", ".yml"}


def test_no_source_imports_the_shells_by_their_folder_names():
    offenders = []
    for path in sorted(REPO.rglob("*")):
        relative = path.relative_to(REPO)
        if any(part in SKIP_FOLDERS or part.endswith(".egg-info") for part in relative.parts[:-1]):
            continue
        if not path.is_file() or not (path.suffix in SOURCE_SUFFIXES or path.name == "Dockerfile"):
            continue
        text = path.read_text(errors="replace")
        for match in FOLDER_IMPORT.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            offenders.append(f"{relative}:{line}: {match.group(0).strip()!r}")
    assert not offenders, ("import the shells as portfolio_mlops_kfp.components/.pipelines/.charts:\n"
                           + "\n".join(offenders))
