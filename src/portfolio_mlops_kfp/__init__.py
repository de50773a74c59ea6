"""portfolio_mlops_kfp: the shells around `portfolio_mlops`, installed under the project's own name.

Its subpackages keep their folders at the top of the repository (pyproject.toml's package-dir):
`portfolio_mlops_kfp.components` is components/ (the KFP v2 components and the image names),
`portfolio_mlops_kfp.pipelines` is pipelines/ (the pipeline, its compilation, local runs, submission
and the `portfolio-mlops` CLI) and `portfolio_mlops_kfp.charts` is charts/ (renders k8s/). Imports
point one way: these import the domain, the domain never imports them.
"""
