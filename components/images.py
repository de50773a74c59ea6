"""Container images of the components: full image references, from the names in portfolio_mlops/names.py.

The Dockerfile builds one target per component (`--target ingest`, ...); the Kubernetes charts
read the same names. Override the registry with PORTFOLIO_MLOPS_REGISTRY (e.g. a kind-loaded
`localhost/portfolio-mlops`) and the tag with PORTFOLIO_MLOPS_IMAGE_TAG.
"""

from __future__ import annotations

import os

from portfolio_mlops import names
from portfolio_mlops.names import COMPONENT_TARGETS, SERVICE_TARGETS  # noqa: F401  (callers import them from here)


def registry() -> str:
    return os.environ.get(names.IMAGE_REGISTRY_ENV, names.IMAGE_REGISTRY)


def tag() -> str:
    return os.environ.get(names.IMAGE_TAG_ENV, names.IMAGE_TAG)


def image(target: str) -> str:
    """Full image reference of a Dockerfile target, e.g. localhost/portfolio-mlops/python-train:0.1.0."""
    return f"{names.image_repository(target, registry())}:{tag()}"
