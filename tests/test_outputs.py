"""A report folder is one run's, whole (outputs.py, session.py): written beside --output and swapped
in at the end, so a second run with fewer algorithms leaves no file of the first, every report names
its run id (also the MLflow runs' invocation tag), and a run whose tracking fails leaves the previous
complete report untouched and no summary.json for itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runs import Workspace, write_market
from portfolio_mlops.outputs import OutputFolder


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    data, config = write_market(tmp_path / "input")
    return Workspace(tmp_path / "user", data, config)


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_commit_replaces_the_whole_folder_and_leaves_nothing_beside_it(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text('{"run_id": "old"}')
    (tmp_path / "out" / "holdings_hgb.csv").write_text("old")
    folder = OutputFolder(tmp_path / "out", "abc123")
    (folder.prepare() / "summary.json").write_text('{"run_id": "abc123"}')

    folder.commit()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["summary.json"]
    assert (tmp_path / "out" / "summary.json").read_text() == '{"run_id": "abc123"}'


def test_a_second_run_with_fewer_algorithms_leaves_no_file_of_the_first(workspace):
    ws = workspace
    first = ws.run(ws.run_args("inprocess", "ridge,lasso"))
    assert first.returncode == 0, first.stderr[-3000:]
    first_id = json.loads((ws.root / "out" / "summary.json").read_text())["run_id"]
    assert (ws.root / "out" / "holdings_lasso.csv").is_file()

    second = ws.run(ws.run_args("inprocess", "ridge"))

    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((ws.root / "out" / "summary.json").read_text())
    assert summary["run_id"] != first_id
    assert not [p.name for p in (ws.root / "out").rglob("*lasso*")]
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("out")) == ["out"]
    # The MLflow record was added before the swap, and names the same run.
    parent = summary["mlflow"]["parent_run_id"]
    tag = ws.query("select value from tags where run_uuid = ? and key = 'portfolio_mlops.invocation'", parent)
    assert tag == [(summary["run_id"],)]


def test_a_run_whose_tracking_fails_leaves_the_previous_report_untouched_and_no_summary(workspace):
    ws = workspace
    first = ws.run(ws.run_args("inprocess", "ridge,lasso"))
    assert first.returncode == 0, first.stderr[-3000:]
    before = _files(ws.root / "out")
    # The experiment's artifact folder becomes a file (a permission change would not stop root): the
    # run computes its report, then tracking fails when it logs the first artifact.
    (location,) = ws.query("select artifact_location from experiments where name = 'sp500-stock-ranking'")[0]
    artifacts = Path(location)
    artifacts.rename(artifacts.with_name("moved"))
    artifacts.write_text("not a folder")
    try:
        failed = ws.run(ws.run_args("inprocess", "ridge"))
    finally:
        artifacts.unlink()
        artifacts.with_name("moved").rename(artifacts)

    assert failed.returncode == 3, failed.stderr[-3000:]
    assert "MLflow tracking" in failed.stderr and "Traceback" not in failed.stderr
    assert _files(ws.root / "out") == before
    partial = [p for p in ws.root.iterdir() if p.name.startswith("out.partial-")]
    assert len(partial) == 1 and str(partial[0]) in failed.stderr
    assert not (partial[0] / "summary.json").exists()
    assert ws.running() == []

    third = ws.run(ws.run_args("inprocess", "ridge"))  # the next run into the folder removes the leftovers

    assert third.returncode == 0, third.stderr[-3000:]
    assert f"removed {partial[0]}" in third.stderr
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("out")) == ["out"]


def test_an_output_folder_that_holds_anything_but_a_report_is_refused_and_left_alone(workspace):
    ws = workspace
    (ws.root / "notes").mkdir(parents=True)
    (ws.root / "notes" / "mine.txt").write_text("keep me")

    done = ws.run(ws.run_args("inprocess", "ridge", "notes", "--no-tracking"))

    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"portfolio-mlops run: error: --output {ws.root / 'notes'}: exists and is not a report folder (no summary.json); "
        "the run replaces its output folder as a whole, so name a new folder or remove this one")
    assert [p.name for p in (ws.root / "notes").iterdir()] == ["mine.txt"]
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("notes")) == ["notes"]
