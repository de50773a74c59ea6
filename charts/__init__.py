"""Helm-free charts: typed values (dataclasses) rendered by Python into plain Kubernetes YAML.

`render.render_tree(root)` writes `k8s/base` and the overlays (`kind`, `production`, `seaweedfs`);
the rendered tree is committed and `portfolio-mlops k8s render` rewrites it. Images of our own
services come from `portfolio_mlops_kfp.components.images`, the one place their names and tags live.
Installed as `portfolio_mlops_kfp.charts` (pyproject.toml's package-dir), never as a top-level `charts`.
"""
