"""Segmentation methods behind one contract (``base.SegmentationModel``), a name registry, model
folders and the resolver the commands share."""

from vocaseg.models.base import InferenceConfig, Preprocess, SegmentationModel, TrainSpec
from vocaseg.models.folder import load_model, save_model
from vocaseg.models.registry import create_model, list_models, register_model
from vocaseg.models.resolve import resolve_model

__all__ = [
    "InferenceConfig",
    "Preprocess",
    "SegmentationModel",
    "TrainSpec",
    "create_model",
    "list_models",
    "load_model",
    "register_model",
    "resolve_model",
    "save_model",
]
