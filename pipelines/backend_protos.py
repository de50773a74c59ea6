"""Does a KFP backend release accept our compiled pipeline? Parse the IR as its API server does.

The API server (backend/src/apiserver/template/v2_template.go) decodes the IR's first YAML document
into `PipelineSpec` and the second into `PlatformSpec` with Go protojson, which rejects unknown
fields; at run creation its Argo compiler decodes each
`platforms.kubernetes.deploymentSpec.executors.<name>` into `KubernetesExecutorConfig` the same way.
So a field that our (newer) kfp SDK writes and the backend's protos lack makes run creation fail
(kfp-kubernetes 2.17 writes `optional:` in secretAsEnv/configMapAsEnv; the 2.14.3 backend has no
such field).

A backend release builds these protos from its own tree at the tag. The PyPI wheels
`kfp-pipeline-spec` and `kfp-kubernetes` of the same version carry the same protos compiled to
Python, so `install` puts them in `.cache/kfp-backend-protos/<version>` (pip --no-deps --target), and
`check` imports them in a fresh interpreter where the venv's kfp SDK (another version) cannot
shadow them, then parses with `ignore_unknown_fields=False`.

    python -m portfolio_mlops_kfp.pipelines.backend_protos install [--version V]     # scripts/setup.sh runs this
    python -m portfolio_mlops_kfp.pipelines.backend_protos check [--version V] [IR]  # default: pin, committed IR
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

from portfolio_mlops.errors import PortfolioMLOpsError
from portfolio_mlops_kfp.pipelines.compile import COMPILED
from portfolio_mlops_kfp.pipelines.versions import REPO, kfp_backend_version

# Run as `python -m MODULE` (scripts/setup.sh, and the strict parse in its own interpreter); `__name__`
# is "__main__" there.
MODULE = "portfolio_mlops_kfp.pipelines.backend_protos"
CACHE = REPO / ".cache" / "kfp-backend-protos"
WHEELS = ("kfp-pipeline-spec", "kfp-kubernetes")
# The generated modules, by the import name the wheels give them (relative to the install folder).
MODULES = {
    "kfp.pipeline_spec.pipeline_spec_pb2": "kfp/pipeline_spec/pipeline_spec_pb2.py",
    "kfp.kubernetes.kubernetes_executor_config_pb2": "kfp/kubernetes/kubernetes_executor_config_pb2.py",
}


class BackendProtosError(PortfolioMLOpsError):
    """The protos of a KFP backend release could not be installed or loaded (names the version and folder)."""


@dataclass
class CheckResult:
    """errors: one line per rejected document or executor, naming it and the field; empty = accepted.

    modules: the generated module actually imported for each proto, by file (proves what was parsed).
    """

    version: str
    ir: Path
    modules: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def protos_dir(version: str) -> Path:
    return CACHE / version


def _complete(folder: Path) -> bool:
    return all((folder / relative).is_file() for relative in MODULES.values())


def install(version: str, quiet: bool = True) -> Path:
    """Install the protos of backend release `version` once; later calls return the folder at once.

    pip installs into a temporary sibling that is renamed into place, so an interrupted install never
    leaves a folder that looks complete.
    """
    target = protos_dir(version)
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps",
               "--target", str(staging), *(f"{wheel}=={version}" for wheel in WHEELS)]
    if quiet:
        command.insert(4, "--quiet")
    try:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not _complete(staging):
            raise BackendProtosError(
                f"could not install the protos of KFP backend {version} into {target} "
                f"({' '.join(f'{w}=={version}' for w in WHEELS)} from PyPI): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check(ir: str | Path = COMPILED, version: str | None = None) -> CheckResult:
    """Parse `ir` strictly against the protos of backend `version` (default: the pin) in a fresh interpreter."""
    version = version or kfp_backend_version()
    folder = install(version)
    done = subprocess.run([sys.executable, "-m", MODULE, "parse-isolated", str(folder), str(ir)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise BackendProtosError(f"the strict parse against {folder} crashed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    return CheckResult(version=version, ir=Path(ir), modules=report["modules"], errors=report["errors"])


def _import_only_from(folder: Path) -> dict[str, types.ModuleType]:
    """Import the generated modules from `folder` and nowhere else.

    The wheels put them inside the `kfp` package, which the venv's kfp SDK also provides (with its own
    `__init__` that wins over a plain folder on sys.path, and with its own 2.17.3 protos). Registering
    `kfp`, `kfp.pipeline_spec` and `kfp.kubernetes` as bare packages whose only search path is the
    folder makes every `kfp.*` import here, including the one between the two generated modules,
    resolve inside it. This must run before anything imports kfp, hence the fresh interpreter.
    """
    if "kfp" in sys.modules:
        raise BackendProtosError("kfp was imported before the backend protos: run the parse in a fresh interpreter")
    for package in ("kfp", "kfp.pipeline_spec", "kfp.kubernetes"):
        module = types.ModuleType(package)
        module.__path__ = [str(folder / package.replace(".", "/"))]
        sys.modules[package] = module
    modules = {name: importlib.import_module(name) for name in MODULES}
    for name, module in modules.items():
        if not Path(module.__file__).resolve().is_relative_to(folder.resolve()):
            raise BackendProtosError(f"{name} came from {module.__file__}, not from {folder}")
    return modules


def _parse_isolated(folder: Path, ir: Path) -> dict:
    import yaml
    from google.protobuf import json_format

    modules = _import_only_from(folder)
    spec_pb2 = modules["kfp.pipeline_spec.pipeline_spec_pb2"]
    k8s_pb2 = modules["kfp.kubernetes.kubernetes_executor_config_pb2"]
    errors: list[str] = []

    def parse(value, message, where: str) -> None:
        try:
            json_format.ParseDict(value, message, ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            errors.append(f"{ir}: {where}: {str(exc).splitlines()[0]}")

    documents = [d for d in yaml.safe_load_all(ir.read_text()) if d is not None]
    if not documents:
        return {"modules": {n: m.__file__ for n, m in modules.items()}, "errors": [f"{ir}: no YAML document"]}
    pipeline = documents[0]
    parse(pipeline, spec_pb2.PipelineSpec(), "document 1 as PipelineSpec")
    # deploymentSpec is a Struct inside PipelineSpec; the backend decodes it into PipelineDeploymentConfig
    # discarding unknown fields (backend/src/v2/compiler/visitor.go). Strict here on purpose: a field it
    # would drop is a setting of ours (resources, retries, images) that the cluster would silently ignore.
    if "deploymentSpec" in pipeline:
        parse(pipeline["deploymentSpec"], spec_pb2.PipelineDeploymentConfig(), "document 1 deploymentSpec as PipelineDeploymentConfig")
    for platform in documents[1:]:
        parse(platform, spec_pb2.PlatformSpec(), "document 2 as PlatformSpec")
        executors = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        for name, config in executors.items():
            parse(config, k8s_pb2.KubernetesExecutorConfig(),
                  f"platforms.kubernetes.deploymentSpec.executors.{name} as KubernetesExecutorConfig")
    return {"modules": {n: m.__file__ for n, m in modules.items()}, "errors": errors}


def _run_install(args: argparse.Namespace) -> int:
    version = args.version or kfp_backend_version()
    print(f"KFP {version} backend protos: {install(version, quiet=False)}", file=sys.stderr)
    return 0


def _run_check(args: argparse.Namespace) -> int:
    result = check(args.ir, args.version or kfp_backend_version())
    for name, path in result.modules.items():
        print(f"{name}: {path}")
    for error in result.errors:
        print(f"REJECTED {error}")
    print(f"{result.ir}: {'rejected' if result.errors else 'accepted'} by the KFP {result.version} backend protos")
    return 1 if result.errors else 0


def _run_parse_isolated(args: argparse.Namespace) -> int:
    print(json.dumps(_parse_isolated(args.folder, args.ir)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    version_help = "KFP backend release (default: $KFP_VERSION, else KFP_VERSION in k8s/versions.env)"
    installing = commands.add_parser("install", help="install the protos of a KFP backend release into .cache/")
    installing.add_argument("--version", help=version_help)
    installing.set_defaults(func=_run_install)
    checking = commands.add_parser("check", help="parse a compiled IR strictly against those protos")
    checking.add_argument("--version", help=version_help)
    checking.add_argument("ir", nargs="?", default=str(COMPILED), help="compiled pipeline YAML (default: the committed one)")
    checking.set_defaults(func=_run_check)
    # what `check` runs in a fresh interpreter (see _import_only_from)
    isolated = commands.add_parser("parse-isolated")
    isolated.add_argument("folder", type=Path)
    isolated.add_argument("ir", type=Path)
    isolated.set_defaults(func=_run_parse_isolated)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PortfolioMLOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
