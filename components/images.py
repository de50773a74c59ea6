"""Container images of the components: the one place their names and tags come from.

The Dockerfile builds one target per component (`--target ingest`, ...); the Kubernetes charts
read the same names. Override the registry with PORTFOLIO_MLOPS_REGISTRY (e.g. a kind-loaded
`localhost/portfolio-mlops`) and the tag with PORTFOLIO_MLOPS_IMAGE_TAG.
"""

from __future__ import annotations

import os

from portfolio_mlops import __version__

COMPONENT_TARGETS = ("ingest", "features", "train", "promote")
SERVICE_TARGETS = ("mlflow-server", "serving")


def registry() -> str:
    return os.environ.get("PORTFOLIO_MLOPS_REGISTRY", "localhost/portfolio-mlops")


def tag() -> str:
    return os.environ.get("PORTFOLIO_MLOPS_IMAGE_TAG", __version__)


def image(target: str) -> str:
    """Full image reference of a Dockerfile target, e.g. localhost/portfolio-mlops/train:0.1.0.

    The names contain "python" so that kfp knows a Python interpreter is inside (it warns otherwise).
    """
    if target not in COMPONENT_TARGETS + SERVICE_TARGETS:
        raise ValueError(f"unknown image target {target!r}; known: {COMPONENT_TARGETS + SERVICE_TARGETS}")
    return f"{registry()}/python-{target}:{tag()}"
