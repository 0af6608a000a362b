"""One registry of models by name: every command takes these names, nothing else switches on them.

Modelled on torchvision's `register_model` / `get_model` / `list_models`: a builder function is
registered under a name together with what downstream code must know without building it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

CLASSIFICATION = "classification"
FEATURE_MAP = "feature-map"


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message lists the known names."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    task: str  # CLASSIFICATION (digits -> 10 logits) or FEATURE_MAP (image -> filtered image)
    # Fixed (height, width) the model takes, or None when any size works (the edge models).
    input_size: tuple[int, int] | None
    description: str
    default_config: dict[str, Any] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.task == CLASSIFICATION


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    task: str,
    input_size: tuple[int, int] | None,
    description: str,
    **default_config: Any,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, builder, task, input_size, description, dict(default_config))
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        ) from None


def get_model(name: str, **config: Any) -> nn.Module:
    """Build a fresh, randomly initialised model; `config` overrides the registered defaults."""
    spec = get_model_spec(name)
    return spec.builder(**{**spec.default_config, **config})
