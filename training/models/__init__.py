"""Model definitions; importing the package registers every named constructor."""

from training.models import added_tasks, mantis, teacher  # noqa: F401  (registration side effect)
from training.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
