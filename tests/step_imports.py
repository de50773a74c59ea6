"""What each pipeline step's process imports before it starts its work (issue 13: each step imports only
what it uses; issue 14: those imports are most of a kfp.local task's cost).

A KFP step does not import `portfolio_mlops_kfp.components.<step>`: kfp writes the component function's
source, under `import kfp; from kfp import dsl; from kfp.dsl import *`, into `ephemeral_component.py`
and runs `_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path ...` (the container
command in the component spec). The body's first statements are its imports. `PROBE` repeats exactly
that in a fresh interpreter - load the executor, load the ephemeral module the way the executor does,
run the import statements of the function's body - and prints the top-level modules then loaded. It is
self-contained (standard library + kfp), so the same text runs in the dev venv and inside each image.

Used by tests/test_step_imports.py (dev venv), tests/integration/test_step_images.py (the built images)
and benchmarks/bench_pipeline.py (seconds per step).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent

# Heavy distributions by the top-level module they install.
SCIKIT_LEARN = {"sklearn", "scipy", "joblib", "threadpoolctl"}
# (mlflow-skinny itself requires fastapi, starlette and uvicorn, for its scoring server)
MLFLOW = {"mlflow", "sqlalchemy", "alembic", "flask", "graphene", "skops", "opentelemetry", "databricks",
          "fastapi", "starlette", "uvicorn"}
PLOTTING = {"matplotlib", "PIL", "kiwisolver", "contourpy", "fontTools"}
# Never in a step: the KFP client and its Kubernetes/API libraries (only `pipelines/` submits runs) and
# the dev-only reference libraries.
NEVER = {"kfp_server_api", "kubernetes", "statsmodels", "empyrical"}

# step (= the function the executor calls) -> (modules its body's imports load, modules they must not).
# configure validates every hyperparameter against scikit-learn's own constraints (sanity.check_config),
# so it runs on the train image and may load scikit-learn (at run time, and not when `portfolio-mlops run`
# has checked the same config: components/configure.py); ingest and features must not.
STEPS: dict[str, tuple[set[str], set[str]]] = {
    "configure": ({"pydantic", "yaml"}, MLFLOW | PLOTTING | NEVER),
    "ingest": ({"pandas", "pyarrow", "pydantic", "yaml"}, SCIKIT_LEARN | MLFLOW | PLOTTING | NEVER),
    "features": ({"numpy", "pandas", "pyarrow", "pydantic", "yaml"}, SCIKIT_LEARN | MLFLOW | PLOTTING | NEVER),
    "train": ({"numpy", "pandas", "pyarrow", "sklearn"}, MLFLOW | PLOTTING | NEVER),
    "promote": ({"numpy", "pandas", "pyarrow", "matplotlib"}, NEVER),
}
# What each step imports later, inside the functions it calls (lazy imports): its image must have them.
RUNTIME: dict[str, tuple[str, ...]] = {
    "configure": ("sklearn",),  # sanity.check_config: scikit-learn's own parameter validation
    "ingest": (),
    "features": (),
    "train": ("sklearn", "threadpoolctl"),  # walk_forward
    "promote": ("sklearn", "scipy", "mlflow", "skops.io", "matplotlib.pyplot"),  # models, tracking, report
}
# The image each step runs on (components/images.py names): configure needs scikit-learn, see above.
IMAGE = {"configure": "train", "ingest": "ingest", "features": "features", "train": "train", "promote": "promote"}
# Submodules that must not load either: the local runner is the orchestrator's, not a step's.
NEVER_SUBMODULES = ("kfp.local", "kfp.client", "kfp.compiler")

PROBE = r'''
import ast, importlib.util, json, os, sys, tempfile, time
function, source = sys.argv[1], sys.stdin.read()
cpu = time.process_time()
extra = sys.argv[2:]
split = extra.index("--") if "--" in extra else len(extra)
require, candidates = extra[:split], extra[split + 1:]
started = time.perf_counter()
import kfp.dsl.executor_main  # what `python3 -m kfp.dsl.executor_main` loads before the component
from kfp.dsl import utils
folder = tempfile.mkdtemp()
with open(os.path.join(folder, "ephemeral_component.py"), "w") as handle:
    handle.write(source)
module = utils.load_module(module_name="ephemeral_component", module_directory=folder)  # as executor_main does
body = next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == function)
imports = [node for node in ast.walk(body) if isinstance(node, (ast.Import, ast.ImportFrom))]
error = None
try:
    exec(compile(ast.Module(body=imports, type_ignores=[]), "<" + function + " body imports>", "exec"), {})
    for name in require:  # what the step needs later, at run time
        __import__(name)
except ImportError as exc:
    error = f"{type(exc).__name__}: {exc}"
seconds = time.perf_counter() - started
installed = [name for name in candidates if importlib.util.find_spec(name) is not None]  # importable, loaded or not
print(json.dumps({"modules": sorted(sys.modules), "seconds": seconds, "cpu": time.process_time() - cpu,
                  "error": error, "installed": installed}))
'''


def ephemeral_source(step: str) -> str:
    """The program kfp runs for the step: the source its container command writes to ephemeral_component.py."""
    component = getattr(importlib.import_module(f"portfolio_mlops_kfp.components.{step}"), step)
    command = component.component_spec.implementation.container.command
    return command[command.index("-ec") + 2]  # ["sh", "-ec", <script>, <source>]


def probe(step: str, interpreter: Sequence[str] | None = None, require: Sequence[str] = (),
          installed: Sequence[str] = (), timeout: float = 120) -> dict:
    """Run PROBE for the step in a fresh interpreter (default: this venv's python, run from / so the
    repository's own folders are not on sys.path); `require` names modules imported after the body's,
    `installed` modules whose presence (importable, loaded or not) is reported.

    Returns {"modules": [...], "top": {top-level names}, "seconds": wall, "cpu": this process's CPU seconds
    (both from before the executor's import), "error": str | None, "installed": [the names of `installed`
    that are importable]}.
    """
    env = {**os.environ, "_KFP_RUNTIME": "true"}  # as the container command sets it
    command = [*(interpreter or [sys.executable]), "-c", PROBE, step, *require, "--", *installed]
    done = subprocess.run(command, input=ephemeral_source(step), capture_output=True, text=True, env=env,
                          cwd="/", timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"the import probe for step {step} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["top"] = {name.split(".")[0] for name in result["modules"]}
    return result


def violations(step: str, result: dict) -> list[str]:
    """Why the modules a step loaded break its contract (empty when they do not)."""
    required, forbidden = STEPS[step]
    problems = [f"{step}: {result['error']}"] if result.get("error") else []
    problems += [f"{step} loads {name} (not in its image's set)" for name in sorted(result["top"] & forbidden)]
    problems += [f"{step} loads {name} (the orchestrator's, not a step's)" for name in NEVER_SUBMODULES
                 if name in result["modules"]]
    problems += [f"{step} does not load {name}" for name in sorted(required - result["top"])]
    return problems


if __name__ == "__main__":  # `python tests/step_imports.py [step ...]`: what each step loads, and any violation
    sys.path.insert(0, str(REPO))
    for name in sys.argv[1:] or STEPS:
        found = probe(name)
        print(f"{name}: {found['seconds']:.2f} s, {len(found['modules'])} modules; "
              f"{'; '.join(violations(name, found)) or 'ok'}")
