"""Shared builders for tiny input files in the layouts users have (written into tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest

DAILY_HEADER = "Date,Symbol,Adj Close,Close,High,Low,Open,Volume"
FIVE_YR_HEADER = "date,open,high,low,close,volume,Name"


def _write(path: Path, header: str, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write_daily(tmp_path):
    """write_daily(lines, index=None, companies=None, folder="kaggle") -> the folder.

    Writes sp500_stocks.csv (Date,Symbol,Adj Close,Close,High,Low,Open,Volume) from data lines and, when
    given, sp500_index.csv (Date,S&P500) and sp500_companies.csv (Symbol,Sector).
    """

    def write(lines: list[str], index: list[str] | None = None, companies: list[str] | None = None,
              folder: str = "kaggle") -> Path:
        target = tmp_path / folder
        _write(target / "sp500_stocks.csv", DAILY_HEADER, lines)
        if index is not None:
            _write(target / "sp500_index.csv", "Date,S&P500", index)
        if companies is not None:
            _write(target / "sp500_companies.csv", "Symbol,Sector", companies)
        return target

    return write


@pytest.fixture
def write_5yr(tmp_path):
    """write_5yr(lines, name="all_stocks_5yr.csv") -> the file (date,open,high,low,close,volume,Name)."""

    def write(lines: list[str], name: str = "all_stocks_5yr.csv") -> Path:
        return _write(tmp_path / name, FIVE_YR_HEADER, lines)

    return write


@pytest.fixture(autouse=True, scope="session")
def isolated_mlflow_store(tmp_path_factory):
    """Every test logs to a throwaway embedded store, never to the repository's working directory.

    MLflow's sqlite store puts artifacts in ./mlruns of the current directory, so the session runs
    from a fresh folder. Session-scoped so that module-scoped fixtures (which run before any
    function-scoped one) are covered too; tests that need another store set MLFLOW_TRACKING_URI again.
    """
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
        patch.chdir(folder)
        yield folder
