"""Models-from-code entry point of the registered model (MLflow copies this file into every version).

Loading a version runs this file: the model is our package's PortfolioModel, built from the version's
own artifacts in `load_context`, so no pickled Python object is ever deserialised.
"""

import mlflow

from portfolio_mlops.portfolio_model import PortfolioModel

mlflow.models.set_model(PortfolioModel())
