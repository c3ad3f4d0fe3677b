"""kdzoo: knowledge distillation for Keras 3 — a model zoo, patient & consistent
teaching (FunMatch), self distillation, and the recipes that reproduce the papers."""

from kdzoo import callbacks, data, distill, models  # noqa: F401  (registers architectures, layers)
from kdzoo.distill.classical_kd import KnowledgeDistillation
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.self_distill import SelfDistillation
from kdzoo.evaluation import evaluate
from kdzoo.zoo.keras_hub import from_keras_hub
from kdzoo.zoo.plain_keras import to_plain_keras
from kdzoo.zoo.registry import list_models, model_info
from kdzoo.zoo.loader import load

__version__ = "0.1.0"

__all__ = ["load", "list_models", "model_info", "evaluate", "FunMatchDistiller", "KnowledgeDistillation",
           "SelfDistillation",
           "to_plain_keras", "from_keras_hub",
           "callbacks", "data", "distill", "models", "__version__"]
