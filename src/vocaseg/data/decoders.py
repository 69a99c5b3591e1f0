"""Label decoders: on-disk label values -> trainIds 0..C-1 or the in-memory ignore value
(docs/datasets.md §1.4).

Every per-pixel decoder is a lookup table over the on-disk values (256 entries for 8-bit labels,
65,536 for 16-bit ones) built once per dataset. Entries are a trainId, the in-memory ignore value
(255 when C < 255, else 65535) for every on-disk ignore value, or -1 for values that have no
meaning; :func:`apply_lut` turns -1 into an error naming the file and the value (strict values),
or into ignore when ``unknown_as_ignore`` is set. COCO panoptic PNGs need the JSON segments and
are decoded by :func:`decode_coco_panoptic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vocaseg.errors import DatasetError

DECODERS = (
    "identity",
    "reduce_zero",
    "lut",
    "tiff16",
    "coco_panoptic",
    "vspw",
    "vipseg",
)
UNKNOWN = -1


def ignore_value(num_classes: int) -> int:
    """In-memory ignore value: 255 when C < 255, else 65535."""
    return 255 if num_classes < 255 else 65535


def build_lut(
    decoder: str,
    num_classes: int,
    disk_ignore: Sequence[int] = (255,),
    table: Sequence[int] | None = None,
    size: int = 256,
) -> np.ndarray:
    """Lookup table ``[size]`` int64 for a per-pixel decoder (every name in DECODERS but panoptic).

    ``table`` is the explicit mapping for ``"lut"``: entry v is the trainId of on-disk value v, the
    in-memory ignore value, or -1 where v has no meaning (entries past its end are -1 too).
    """
    ignore = ignore_value(num_classes)
    values = np.arange(size, dtype=np.int64)
    lut = np.full(size, UNKNOWN, dtype=np.int64)
    if decoder in ("identity", "tiff16"):
        keep = values < num_classes
        lut[keep] = values[keep]
    elif decoder in ("reduce_zero", "vspw"):
        keep = (values >= 1) & (values <= num_classes)
        lut[keep] = values[keep] - 1
        lut[0] = ignore
    elif decoder == "vipseg":
        # 0 void; v <= C: class v; v > C: thing instance class*100 + k (docs/datasets.md §2.10)
        lut[1 : num_classes + 1] = values[1 : num_classes + 1] - 1
        things = values[num_classes + 1 :] // 100
        lut[num_classes + 1 :] = np.where(things <= num_classes, things - 1, UNKNOWN)
        lut[0] = ignore
        return lut
    elif decoder == "lut":
        if table is None:
            raise ValueError("the 'lut' decoder needs a table")
        table = np.asarray(table, dtype=np.int64)[:size]
        lut[: len(table)] = table
        return lut  # the table already says which values are ignored
    else:
        raise ValueError(f"unknown decoder {decoder!r}; known: {', '.join(DECODERS)}")
    for value in disk_ignore:
        if value < size:
            lut[value] = ignore
    return lut


def apply_lut(
    raw: np.ndarray,
    lut: np.ndarray,
    path: str | Path,
    ignore_index: int,
    unknown_as_ignore: bool = False,
) -> np.ndarray:
    """Decode a raw ``[H, W]`` label with ``lut``; values without a class raise DatasetError."""
    if raw.ndim != 2:
        raise DatasetError(
            f"label {path} has shape {raw.shape}; expected a single-channel index image "
            "(palette PNGs are read as indices; RGB label images need a converter)"
        )
    if raw.size and (int(raw.min()) < 0 or int(raw.max()) >= len(lut)):
        bad = int(raw.max()) if int(raw.max()) >= len(lut) else int(raw.min())
        raise DatasetError(
            f"label {path} holds value {bad}, outside the decoder's 0..{len(lut) - 1}"
        )
    label = lut[raw]
    unknown = label == UNKNOWN
    if unknown.any():
        if not unknown_as_ignore:
            values = np.unique(raw[unknown])[:10].tolist()
            raise DatasetError(
                f"label {path} holds value(s) {values} with no class in this dataset; check the "
                "dataset id and layout, or read them as ignore with --unknown-as-ignore ('vocaseg eval', "
                "'vocaseg datasets check') or unknown_as_ignore=True (load_dataset)"
            )
        label[unknown] = ignore_index
    return label


def decode_coco_panoptic(
    rgb: np.ndarray,
    segments: Sequence[dict],
    category_to_class: dict[int, int],
    path: str | Path,
    unknown_as_ignore: bool = False,
) -> np.ndarray:
    """COCO panoptic PNG ``[H, W, 3]`` + its ``segments_info`` -> semantic trainIds
    (docs/datasets.md §2.5).

    Segment id = R + 256 G + 256^2 B; 0 and ids not in ``segments`` are unlabeled (255); crowd
    segments keep their class, as detectron2's semantic conversion writes them.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DatasetError(f"panoptic label {path} is not an RGB PNG (shape {rgb.shape})")
    rgb = rgb.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]  # [H, W]
    label = np.full(ids.shape, 255, dtype=np.int64)
    for segment in segments:
        category = int(segment["category_id"])
        if category not in category_to_class:
            if unknown_as_ignore:
                continue
            raise DatasetError(
                f"panoptic segment {segment['id']} of {path} has category_id {category}, "
                "which is not a COCO panoptic category"
            )
        label[ids == int(segment["id"])] = category_to_class[category]
    return label
