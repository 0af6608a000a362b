"""The digit model zoo: convolution operations, layers, models by name, training and evaluation."""
from zoo.models import get_model, get_model_spec, list_models

__all__ = ["get_model", "get_model_spec", "list_models"]
