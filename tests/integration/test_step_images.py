"""Each step's image has exactly what its step loads (issue 13): the import probe of
tests/step_imports.py, run inside the image the step runs on; nothing the step must not load is even
installed there.

The same probe as tests/test_step_imports.py (the KFP executor, the component's ephemeral module, the
function body's imports), then the modules the step imports later inside the functions it calls
(step_imports.RUNTIME). In the dev venv everything is installed, so only loading too much can fail;
here a module the image lacks fails as well. Skipped, with the reason, when no Docker engine answers or
the step images were not built (scripts/build-images.sh --local-base).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from portfolio_mlops_kfp.components.images import image
from tests.step_imports import IMAGE, RUNTIME, STEPS, probe, violations

pytestmark = [pytest.mark.integration, pytest.mark.images]


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    try:  # `docker version`, not `docker info`: the latter scans plugins and can take 20 s on a busy machine
        if subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                          timeout=60).returncode != 0:
            return "no Docker engine answers (`docker version` failed)"
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer"
    missing = sorted({image(target) for target in IMAGE.values()
                      if subprocess.run(["docker", "image", "inspect", image(target)], capture_output=True).returncode})
    return f"images not built: {', '.join(missing)} (run scripts/build-images.sh --local-base)" if missing else None


PROBLEM = _engine_problem()
if PROBLEM:
    pytestmark.append(pytest.mark.skip(reason=PROBLEM))


@pytest.mark.parametrize("step", list(STEPS))
def test_each_step_image_loads_its_step_with_nothing_missing_and_nothing_extra(step):
    # --entrypoint: the component images have none, but the step must not depend on that; -i: the
    # ephemeral source goes in on stdin, as `sh -ec` hands it to the executor in a real step.
    in_image = ["docker", "run", "--rm", "-i", "--network", "host", "-e", "_KFP_RUNTIME=true",
                "--entrypoint", "python3", image(IMAGE[step])]
    _, forbidden = STEPS[step]
    loaded = probe(step, in_image, require=RUNTIME[step], installed=sorted(forbidden))
    print(f"\n{step} in {image(IMAGE[step])}: {loaded['seconds']:.2f} s, {len(loaded['modules'])} modules")
    assert violations(step, loaded) == []
    assert loaded["installed"] == [], f"{image(IMAGE[step])} carries what step {step} must not load"
