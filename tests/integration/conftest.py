"""The real local stack (PostgreSQL, SeaweedFS, MLflow server) on free loopback ports, once per session."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from portfolio_mlops.devstack import StackConfig, StackError, StackState, down, find_postgres_bin_dir, up


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts real servers (deselect with -m 'not integration')")
    config.addinivalue_line("markers", "images: runs the built container images (needs a Docker engine)")


@pytest.fixture(scope="session")
def stack_root() -> Iterator[Path]:
    """A world-searchable temporary folder.

    Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and as root PostgreSQL runs as the `postgres`
    user, which could not reach a data folder inside it.
    """
    root = Path(tempfile.mkdtemp(prefix="portfolio-mlops-stack-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL server binaries; the only reason these tests skip is their absence."""
    try:
        return find_postgres_bin_dir()
    except StackError as exc:
        pytest.skip(f"PostgreSQL server binaries are not installed ({exc}); run scripts/setup.sh as root")


@pytest.fixture(scope="session")
def stack_config(stack_root: Path, postgres_bin_dir: Path) -> StackConfig:
    return StackConfig(base_dir=stack_root / "session", postgres_port=0, s3_port=0, mlflow_port=0,
                       start_timeout_seconds=60)


@pytest.fixture(scope="session")
def stack(stack_config: StackConfig) -> Iterator[StackState]:
    """The running stack's state; torn down (data purged) at the end of the session, even on failure."""
    try:
        yield up(stack_config)
    finally:
        down(stack_config, purge=True)


@pytest.fixture
def isolated_root(stack_root: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh base folder for one test's own (usually failing) stack; stopped and removed afterwards."""
    base = stack_root / request.node.name
    yield base
    down(StackConfig(base_dir=base), purge=True)
