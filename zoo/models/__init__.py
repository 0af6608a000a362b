"""Models by name. Importing this package registers every model of the zoo."""
from zoo.models import edge, lenet  # noqa: F401  (imported for their registrations)
from zoo.models.registry import (
    CLASSIFICATION,
    FEATURE_MAP,
    ModelSpec,
    UnknownModelError,
    get_model,
    get_model_spec,
    list_models,
    register_model,
)

__all__ = [
    "CLASSIFICATION",
    "FEATURE_MAP",
    "ModelSpec",
    "UnknownModelError",
    "get_model",
    "get_model_spec",
    "list_models",
    "register_model",
]
