"""Data layer: benchmark readers, class lists and converters (docs/datasets.md).

``load_dataset(name, root=None, split="val", layout=None, strict=False, unknown_as_ignore=False)``
returns a sized, indexable dataset of ``{"image", "label", "path"}`` dicts; ``list_datasets()``
names every id it accepts.
"""

from vocaseg.data.classlists import load_class_list
from vocaseg.data.datasets import SegmentationDataset, list_datasets, load_dataset

__all__ = ["SegmentationDataset", "list_datasets", "load_class_list", "load_dataset"]
