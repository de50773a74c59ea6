"""Kubeflow Pipelines v2 components: thin typed shells around `portfolio_mlops`.

Each component imports the package inside its body, so the same function runs in kfp.local (the
package is installed in the venv) and on a cluster (the package is installed in the component's
image, see images.py).
"""
