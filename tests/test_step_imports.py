"""Each pipeline step's process loads only what its step uses (issue 13), in the dev venv.

Every probe is a fresh interpreter doing what a step's container does before its work: the KFP
executor, the component's ephemeral module, the imports of the function body (tests/step_imports.py).
The venv has every dependency installed, so here a step fails only by loading too much; the same probe
runs inside each built image in tests/integration/test_step_images.py, where a missing module fails too.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from portfolio_mlops_kfp.components import images
from portfolio_mlops_kfp.components.configure import configure
from portfolio_mlops_kfp.components.features import features
from portfolio_mlops_kfp.components.ingest import ingest
from portfolio_mlops_kfp.components.promote import promote
from portfolio_mlops_kfp.components.train import train
from tests.step_imports import IMAGE, RUNTIME, STEPS, probe, violations

COMPONENTS = {"configure": configure, "ingest": ingest, "features": features, "train": train, "promote": promote}


@pytest.fixture(scope="module")
def loaded() -> dict[str, dict]:
    """Every step probed once, two fresh interpreters at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(STEPS, pool.map(probe, STEPS)))


@pytest.mark.parametrize("step", list(STEPS))
def test_each_step_loads_only_its_own_dependencies(step, loaded):
    assert violations(step, loaded[step]) == []


def test_the_probe_sees_a_heavy_module_a_step_must_not_load(loaded):
    # promote's body loads matplotlib (report.py); judged by the features step's contract it must fail
    assert "features loads matplotlib (not in its image's set)" in violations("features", loaded["promote"])


@pytest.mark.parametrize("step", list(STEPS))
def test_each_step_runs_on_the_image_that_has_its_run_time_modules(step):
    # what a step imports inside the functions it calls must be allowed in its image's set
    component = COMPONENTS[step]
    image = component.component_spec.implementation.container.image
    runs_on = IMAGE[step]
    _, forbidden_there = STEPS[runs_on]
    assert image == images.image(runs_on)
    assert {name.split(".")[0] for name in RUNTIME[step]} & forbidden_there == set()
