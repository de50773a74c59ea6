"""The committed pipeline IR is accepted by the pinned KFP backend, parsed as its API server parses it.

The protos are those of the backend release pinned in k8s/versions.env (KFP_VERSION; an exported
$KFP_VERSION overrides it, as in scripts/kind.sh), not of the kfp SDK installed here: the PyPI wheels
kfp-pipeline-spec / kfp-kubernetes of that release, installed by scripts/setup.sh into
.cache/kfp-backend-protos/<version> (installed here if missing; PyPI must be reachable). No mocks.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from portfolio_mlops.errors import ConfigError
from portfolio_mlops_kfp.pipelines import backend_protos
from portfolio_mlops_kfp.pipelines.compile import COMPILED
from portfolio_mlops_kfp.pipelines.versions import REPO, VERSIONS_FILE, kfp_backend_version, pinned_versions


@pytest.fixture(scope="module")
def version():
    return kfp_backend_version()


@pytest.fixture(scope="module")
def accepted(version):
    return backend_protos.check(COMPILED, version)


def test_the_committed_pipeline_parses_strictly_against_the_pinned_backend_protos(accepted, version):
    print(f"KFP backend {version}: " + "; ".join(f"{n} from {p}" for n, p in accepted.modules.items()))
    assert not accepted.errors, (
        f"the KFP {version} backend would refuse to create a run from {COMPILED}:\n" + "\n".join(accepted.errors))


def test_the_protos_come_from_the_backend_release_not_from_the_installed_sdk(accepted, version):
    folder = backend_protos.protos_dir(version).resolve()
    assert set(accepted.modules) == set(backend_protos.MODULES)
    for name, path in accepted.modules.items():
        assert Path(path).resolve().is_relative_to(folder), f"{name} was imported from {path}, not from {folder}"


def test_a_field_the_backend_does_not_know_is_rejected_naming_executor_and_field(tmp_path, version):
    documents = list(yaml.safe_load_all(COMPILED.read_text()))
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # its own executor: the parse of one executor stops at its first unknown field
    executors["exec-probe"] = {"secretAsEnv": [{"secretName": "s", "notAKfpField": True}]}
    documents[0]["pipelineInfo"]["alsoNotAKfpField"] = "x"
    ir = tmp_path / "pipeline.yaml"
    ir.write_text(yaml.safe_dump_all(documents))
    errors = backend_protos.check(ir, version).errors
    assert any("executors.exec-probe" in e and "notAKfpField" in e for e in errors), errors
    assert any("document 1 as PipelineSpec" in e and "alsoNotAKfpField" in e for e in errors), errors


def test_bash_and_python_read_the_same_pins_from_versions_env():
    sourced = subprocess.run(["bash", "-c", f"set -a; . {VERSIONS_FILE}; env -0"], capture_output=True, text=True,
                             check=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}).stdout
    environment = dict(item.split("=", 1) for item in sourced.split("\0") if "=" in item)
    pins = pinned_versions()
    assert "KFP_VERSION" in pins
    assert {key: environment.get(key) for key in pins} == pins


def test_the_kind_script_and_the_workflow_take_the_backend_version_only_from_versions_env():
    workflow = yaml.safe_load((REPO / ".github/workflows/kind-e2e.yaml").read_text())
    hard_coded = [where for where, env in [("workflow", workflow.get("env", {}))]
                  + [(f"job {n}", j.get("env", {})) for n, j in workflow["jobs"].items()]
                  + [(f"step {s.get('name')}", s.get("env", {})) for j in workflow["jobs"].values() for s in j["steps"]]
                  if "KFP_VERSION" in env]
    assert not hard_coded, f".github/workflows/kind-e2e.yaml sets KFP_VERSION itself in: {hard_coded}"
    first_run = next(s["run"] for s in workflow["jobs"]["kind-e2e"]["steps"] if "run" in s)
    assert "k8s/versions.env" in first_run and "GITHUB_ENV" in first_run, (
        "the workflow's first run step must append k8s/versions.env to $GITHUB_ENV")
    env = {k: v for k, v in os.environ.items() if k != "KFP_VERSION"}
    script = (REPO / "scripts/kind.sh").read_text()
    assert "k8s/versions.env" in script
    printed = subprocess.run(["bash", "scripts/kind.sh", "versions"], capture_output=True, text=True, env=env, cwd=REPO)
    assert printed.returncode == 0, printed.stderr
    assert f"KFP_VERSION={pinned_versions()['KFP_VERSION']}" in printed.stdout.splitlines()


def test_a_malformed_pin_is_an_error_naming_file_and_line(tmp_path):
    pins = tmp_path / "versions.env"
    pins.write_text("# comment\nKFP_VERSION=2.17.0\nKIND_NODE = v1\n")
    with pytest.raises(ConfigError, match=rf"{pins}:3: expected KEY=value"):
        pinned_versions(pins)
