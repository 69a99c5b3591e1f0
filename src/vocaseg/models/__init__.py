"""Segmentation methods behind one contract (``base.SegmentationModel``) and a name registry."""

from vocaseg.models.base import Preprocess, SegmentationModel
from vocaseg.models.registry import create_model, list_models, load_model, register_model

__all__ = [
    "Preprocess",
    "SegmentationModel",
    "create_model",
    "list_models",
    "load_model",
    "register_model",
]
