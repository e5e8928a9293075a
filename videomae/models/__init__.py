"""Model classes and their registered factories."""

from videomae.models import factories as _factories  # noqa: F401  (registers the factories)
from videomae.models.classifier import VisionTransformer
from videomae.models.pretrain import PretrainVisionTransformer

__all__ = ["PretrainVisionTransformer", "VisionTransformer"]
