"""Bad and degenerate input, as a new user gives it: every engine and command answers the same way.

The contract (README, errors.py): the user's input (data, configuration, options) -> exit status 2
and one line on stderr naming the file, row or field and the fix, no traceback; an unusable tracking
store -> exit status 3 and one line. All of it is checked before any compute, so the default engine
(kfp.local) refuses in seconds, before the pipeline starts: no retried step, no `data/` folder.

Each case runs through the CLI in this process for both engines (the default kfp and `--engine
inprocess`), and a case of each family also through the installed `portfolio-mlops` in a fresh
process. `python tests/test_bad_inputs.py` runs every case as a subprocess and prints the table:
case, engine, exit status, seconds to exit, message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

CLI = str(Path(sys.executable).with_name("portfolio-mlops"))
HEADER = "date,open,high,low,close,volume,Name"
TICKERS = 24
DAYS = pd.bdate_range("2015-01-02", periods=300)  # ends 2016-02-25
SECONDS_LIMIT = 20.0  # validation comes first: a refusal takes the CLI's start-up time, not a pipeline's


def market_lines(tickers: int = TICKERS) -> list[str]:
    """A valid all_stocks_5yr-style panel (random walks), one text line per row."""
    rng = np.random.default_rng(11)
    lines = []
    for i in range(tickers):
        close = 40 * np.exp(np.cumsum(rng.normal(0.0003, 0.012, len(DAYS))))
        lines += [f"{d:%Y-%m-%d},{c:.2f},{c * 1.01:.2f},{c * 0.99:.2f},{c:.2f},{1000 + i},T{i:02d}" for d, c in zip(DAYS, close)]
    return lines


def csv_file(name: str, lines: list[str], header: str = HEADER, encoding: str = "utf-8", end: str = "\n") -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(("\n".join([header, *lines]) + end).encode(encoding))
        return path

    return write


def yaml_file(text: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / "run.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def _binary(folder: Path) -> Path:
    path = folder / "all_stocks_5yr.csv"
    path.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8)))
    return path


def _empty_store(folder: Path) -> None:
    """An embedded MLflow store with no runs, made the way a user makes one (`models` creates it)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    subprocess.run([CLI, "models"], cwd=folder, env=env, check=True, capture_output=True, timeout=120)


def _junk_store(folder: Path) -> None:
    (folder / "mlflow.db").write_text("this is not a database\n" * 50)


GOOD = market_lines()
DUPLICATE = GOOD[5].split(",")
CONFLICT = ",".join(DUPLICATE[:4] + [str(float(DUPLICATE[4]) + 1)] + DUPLICATE[5:])
LAST = DAYS[-1]
LATER = [f"{d:%Y-%m-%d},50,51,49,50,1000,T00" for d in pd.bdate_range("2024-01-02", periods=5)]
FUTURE = [f"{d:%Y-%m-%d},50,51,49,50,1000,T00" for d in pd.bdate_range("2030-01-02", periods=5)]


@dataclass
class Case:
    name: str
    expected: int
    pattern: str  # the stderr line must match this (re.search)
    data: Callable[[Path], Path] | None = None
    config: Callable[[Path], Path] | None = None
    args: list[str] = field(default_factory=list)
    command: str = "run"  # run: both engines; anything else: one engine-less command
    setup: Callable[[Path], None] | None = None
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI for the case (default: unset, the embedded store)


CASES = [
    Case("conflicting duplicates", 2, r"conflicting duplicates: T00 on 2015-01-09 .* data row 6, .* data row 7201",
         csv_file("all_stocks_5yr.csv", GOOD + [CONFLICT])),
    Case("missing path", 2, r"no_such_folder: no such file or folder", args=["--data", "{tmp}/no_such_folder"]),
    Case("a text price", 2, r"data row 3, field 'close': expected a number, got 'n/a-price'",
         csv_file("all_stocks_5yr.csv", GOOD[:2] + ["2015-01-06,1,1,1,n/a-price,10,T00"] + GOOD[3:])),
    Case("binary junk input", 2, r"all_stocks_5yr.csv: not a text CSV file", _binary),
    Case("CSV cut mid-line", 2, r"data row 7200: expected 7 fields .* got 3; the file looks cut off mid-line",
         csv_file("all_stocks_5yr.csv", GOOD[:-1] + ["2016-02-25,41.3,41"], end="")),
    Case("Latin-1 input", 2, r"data row 7201, field 'Name': not UTF-8 text .*Latin-1",
         csv_file("all_stocks_5yr.csv", GOOD + ["2016-02-26,1,1,1,1,10,CAF\u00e9"], encoding="latin-1")),
    Case("Ticker instead of Name", 2, r"closest is missing \['name'\] \(all_stocks_5yr.csv \(layout 2\)\) - did you mean 'name' for column 'ticker'\?",
         csv_file("prices.csv", GOOD, header="date,open,high,low,close,volume,Ticker")),
    Case("';' delimiter", 2, r"separated by semicolons, not commas",
         csv_file("prices.csv", [line.replace(",", ";") for line in GOOD], header=HEADER.replace(",", ";"))),
    Case("tab delimiter", 2, r"separated by tabs, not commas",
         csv_file("prices.csv", [line.replace(",", "\t") for line in GOOD], header=HEADER.replace(",", "\t"))),
    Case("YAML start: not-a-date", 2, r"walk_forward.start: expected a date like 2015-01-02, got 'not-a-date'",
         config=yaml_file('walk_forward:\n  start: "not-a-date"\n')),
    Case("hgb max_iter: many", 2, r"models\[hgb\].params.max_iter: expected an int in the range \[1, inf\), got 'many'",
         config=yaml_file("models:\n  - algorithm: hgb\n    params: {max_iter: many}\n")),
    Case("hgb learning_rate: -1", 2, r"models\[hgb\].params.learning_rate: expected a float in the range \(0.0, inf\), got -1",
         config=yaml_file("models:\n  - algorithm: hgb\n    params: {learning_rate: -1}\n")),
    Case("ridge alpha: abc", 2, r"models\[ridge\].params.alpha: expected a float .*, got 'abc'",
         config=yaml_file("models:\n  - algorithm: ridge\n    params: {alpha: abc}\n")),
    Case("ridge alpha: -1 (negative regularisation)", 2, r"models\[ridge\].params.alpha: expected a float in the range \[0.0, inf\).*got -1",
         config=yaml_file("models:\n  - algorithm: ridge\n    params: {alpha: -1}\n")),
    Case("--algorithms ''", 2, r"--algorithms '' names no algorithm", args=["--algorithms", ""]),
    Case("--cost-bps 1e9", 2, r"portfolio.cost_bps_per_side: Input should be less than or equal to 1000", args=["--cost-bps", "1e9"]),
    Case("--output is a file", 2, r"--output .*: is a file, not a folder", args=["--output", "{tmp}/taken"],
         setup=lambda folder: (folder / "taken").write_text("x")),
    Case("--output unwritable", 2, r"--output /proc/portfolio-mlops-out: cannot write in /proc",
         args=["--output", "/proc/portfolio-mlops-out"]),
    Case("junk mlflow.db", 3, r"MLflow store .*mlflow.db is not an SQLite database", setup=_junk_store, args=["--tracking"]),
    Case("tracking server down", 3, r"MLflow server http://127.0.0.1:9 is not answering http://127.0.0.1:9/health",
         args=["--tracking"], tracking_uri="http://127.0.0.1:9"),
    Case("one ticker", 2, r"the data has 1 ticker\(s\) after validation",
         csv_file("all_stocks_5yr.csv", market_lines(1))),
    Case("--top-n 1000 on 24 tickers", 2, r"portfolio.top_n 1000 would hold more than 75% of the 24 tickers", args=["--top-n", "1000"]),
    Case("5 rows in 2024 after data ending 2016", 2,
         r"gap of \d+ weekdays between 2016-02-25 and 2024-01-02 .* 5 row\(s\) from 2024-01-02 on",
         csv_file("all_stocks_5yr.csv", GOOD + LATER)),
    Case("5 rows dated 2030 (future)", 2, r"5 row\(s\) are dated after today .* first 2030-01-02",
         csv_file("all_stocks_5yr.csv", GOOD + FUTURE)),
    Case("300 trading days, min_train_days 504", 2,
         r"the data has 300 trading days \(2015-01-02 .. 2016-02-25\); features need 252 .* walk_forward.min_train_days=504"),
    Case("walk_forward.start after the data", 2, r"walk_forward.start 2020-01-01 is after the data's last day 2016-02-25",
         config=yaml_file("walk_forward:\n  start: 2020-01-01\n")),
    Case("features.include: [nope]", 2, r"features.include: unknown feature\(s\) \['nope'\]; known: \['ret_1'",
         config=yaml_file("features:\n  include: [nope]\n")),
    Case("unquoted YAML date (accepted)", 0, r"^$", config=yaml_file("walk_forward:\n  start: 2015-01-02\n"),
         command="config"),
    Case("promote --run-id bogus", 2, r"--run-id 'bogus': no such run at sqlite:///", command="promote",
         args=["--run-id", "bogus"], setup=lambda folder: _empty_store(folder)),
    Case("promote with no store yet", 2, r"no MLflow store at .*mlflow.db: nothing has been tracked", command="promote"),
]


def argv_for(case: Case, engine: str, tmp: Path) -> list[str]:
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    tracking = "--tracking" in args
    args = [a for a in args if a != "--tracking"]
    if case.command != "run":
        argv = [case.command, *args]
    else:
        argv = ["run", *([] if engine == "kfp" else ["--engine", engine]), *args]
        if "--output" not in args:
            argv += ["--output", str(tmp / "out")]
        if "--data" not in args:
            argv += ["--data", str(case.data(tmp)) if case.data else str(csv_file("all_stocks_5yr.csv", GOOD)(tmp))]
        if not tracking:
            argv.append("--no-tracking")
    if case.config:
        argv += ["--config", str(case.config(tmp))]
    return argv


@dataclass
class Outcome:
    code: int
    seconds: float
    stdout: str
    stderr: str
    folder: Path


def run_case(case: Case, engine: str, folder: Path) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(folder)
    argv = argv_for(case, engine, folder)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the embedded store in `folder`
    env["TMPDIR"] = str(folder)
    if case.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = case.tracking_uri
    started = time.perf_counter()
    done = subprocess.run([CLI, *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return Outcome(done.returncode, time.perf_counter() - started, done.stdout, done.stderr, folder)


def engines(case: Case) -> list[str]:
    return ["kfp", "inprocess"] if case.command == "run" else ["-"]


MATRIX = [(case, engine) for case in CASES for engine in engines(case)]
# Through the installed entry point as well: the default engine on a case of each family, and the
# commands that need a fresh process (promote creates the embedded store in its working directory).
SUBPROCESS = [(case, engine) for case, engine in MATRIX if engine in ("kfp", "-") and case.name in (
    "conflicting duplicates", "hgb max_iter: many", "junk mlflow.db", "unquoted YAML date (accepted)",
    "promote --run-id bogus", "promote with no store yet")]


def run_in_process(case: Case, engine: str, folder: Path, monkeypatch, capsys) -> Outcome:
    """The same CLI (portfolio_mlops_kfp.pipelines.cli.main: default engine kfp) called in this process, from `folder`."""
    from portfolio_mlops_kfp.pipelines.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(folder)
    monkeypatch.chdir(folder)
    if case.tracking_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", case.tracking_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)
    capsys.readouterr()
    started = time.perf_counter()
    code = main(argv_for(case, engine, folder))
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    return Outcome(code, seconds, captured.out, captured.err, folder)


def check(case: Case, outcome: Outcome) -> None:
    lines = outcome.stderr.splitlines()
    assert outcome.code == case.expected, outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout
    if case.expected == 0:
        return
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith(f"portfolio-mlops {case.command}: error: ")
    assert re.search(case.pattern, lines[0]), lines[0]
    assert outcome.seconds < SECONDS_LIMIT  # refused before kfp.local starts: no step ran, nothing retried
    assert not (outcome.folder / "out").exists()  # nothing written: no data/ folder, no report
    assert not any(outcome.folder.glob("portfolio-mlops-kfp-*"))  # no pipeline work folder was made


@pytest.mark.parametrize(("case", "engine"), [m for m in MATRIX if m[0].command != "promote"],
                         ids=[f"{c.name}-{e}" for c, e in MATRIX if c.command != "promote"])
def test_bad_input_exits_with_its_status_and_one_line_before_any_compute(case, engine, tmp_path, monkeypatch, capsys):
    check(case, run_in_process(case, engine, tmp_path / "case", monkeypatch, capsys))


@pytest.fixture(scope="module")
def subprocess_outcomes(tmp_path_factory) -> dict[tuple[str, str], Outcome]:
    """Each SUBPROCESS case once, two at a time (each is mostly interpreter start-up)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(case.name, engine): pool.submit(run_case, case, engine, root / f"case{i}")
                   for i, (case, engine) in enumerate(SUBPROCESS)}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize(("case", "engine"), SUBPROCESS, ids=[f"{c.name}-{e}" for c, e in SUBPROCESS])
def test_the_installed_command_answers_the_same_in_a_fresh_process(case, engine, subprocess_outcomes):
    check(case, subprocess_outcomes[(case.name, engine)])


def test_an_unquoted_yaml_date_is_read_as_that_date(subprocess_outcomes):
    outcome = subprocess_outcomes[("unquoted YAML date (accepted)", "-")]
    assert "start: '2015-01-02'" in outcome.stdout


def test_the_kfp_console_shows_one_line_per_step_and_a_failed_steps_own_error(tmp_path):
    """kfp.local's log lines (colour codes and all) are fed to the StepConsole as kfp.local writes them."""
    import io

    from portfolio_mlops_kfp.pipelines.local import StepConsole, _step_failure

    console, log = io.StringIO(), io.StringIO()
    stream = StepConsole(log, console)
    for line in [
        "22:23:54.830 - INFO - Executing task \x1b[96m'ingest'\x1b[0m",
        "    data quality (embedded_sp500_20): 166,260 rows in, 157,947 kept; 20 tickers in, 19 kept; 1990-01-02 .. 2022-12-28",
        "22:23:57.034 - INFO - Task \x1b[96m'ingest'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
        "22:24:01.518 - INFO - Executing task \x1b[96m'train'\x1b[0m",
        "        ridge: 120 refits, ic_mean 0.0222, ic_tstat 1.3480, oos_r2 -0.0045, net_cagr 0.1808, net_sharpe 0.8147,",
        "22:24:09.186 - INFO - Executing task \x1b[96m'promote'\x1b[0m",
        "    promote: error (exit status 3): MLflow server http://127.0.0.1:9 is not answering",
        "22:24:13.488 - INFO - Task \x1b[96m'promote'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m",
    ]:
        stream.write(line + "\n")

    shown = [re.sub(r"\d+\.\ds", "Ns", text) for text in console.getvalue().splitlines()]
    assert shown == ["[ingest] done in Ns  19 tickers, 157,947 rows, 1990-01-02 .. 2022-12-28",
                     "[train] done in Ns  ridge: 120 refits, IC 0.0222, net Sharpe 0.81",
                     "[promote] FAILURE in Ns"]
    assert "\x1b" not in log.getvalue() and len(log.getvalue().splitlines()) == 8  # everything, uncoloured
    failure = _step_failure(stream, "Pipeline 'x' finished with status FAILURE. Inner task failed: 'promote'.",
                            tmp_path / "pipeline.log")
    assert failure.exit_code == 3
    assert str(failure) == f"step promote: MLflow server http://127.0.0.1:9 is not answering (log: {tmp_path}/pipeline.log)"


def _table() -> str:
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "portfolio-mlops-bad-inputs"
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for i, (case, engine) in enumerate(MATRIX):
        outcome = run_case(case, engine, root / f"case{i}")
        message = (outcome.stderr.splitlines() or ["(nothing on stderr)"])[0]
        rows.append(f"| {case.name} | {engine} | {outcome.code} | {outcome.seconds:.1f} | {message.replace('|', '/')} |")
    shutil.rmtree(root, ignore_errors=True)
    return "\n".join(["| case | engine | exit | seconds | message (stderr) |", "|---|---|---|---|---|", *rows])


if __name__ == "__main__":
    print(_table())
