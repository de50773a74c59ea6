"""Helm-free charts: typed values (dataclasses) rendered by Python into plain Kubernetes YAML.

`charts.render.render_tree(root)` writes `k8s/base` and the overlays (`kind`, `production`,
`seaweedfs`); the rendered tree is committed and `portfolio-mlops k8s render` rewrites it.
Images of our own services come from `components.images`, the one place their names and tags live.
"""
