"""MLflow "model from code" entry for the `gmenet` pyfunc (components/serving/gmenet.py): no pickle."""

import mlflow

from components.serving.gmenet import GMENetPyfunc

mlflow.models.set_model(GMENetPyfunc())
