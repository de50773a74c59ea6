"""Compile the training pipeline to KFP IR YAML (what `pipeline submit` uploads)."""

from pathlib import Path

from portfolio_mlops.names import COMPILED_PIPELINE

COMPILED = Path(__file__).resolve().parent / COMPILED_PIPELINE


def compile_pipeline(path: str | Path = COMPILED) -> Path:
    from kfp import compiler

    from portfolio_mlops_kfp.pipelines.training import training_pipeline

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(training_pipeline, str(path))
    return path
