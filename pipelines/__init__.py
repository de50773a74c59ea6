"""Kubeflow Pipelines: the training pipeline, its compilation, local runs (kfp.local) and submission."""
