"""MLflow "model from code" entry for the `fsrfer` pyfunc: MLflow stores this file, not a
pickle, so loading the model runs no unpickled code (components/serving/fsrfer.py)."""

import mlflow

from components.serving.fsrfer import FSRFERPyfunc

mlflow.models.set_model(FSRFERPyfunc())
