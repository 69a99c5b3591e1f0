"""COCO run-length encoded masks (``{"size": [h, w], "counts": ...}``), decoded without pycocotools.

The format of the COCO API (``cocodataset/cocoapi``, ``maskApi.c``), which the PASCAL in Detail
annotations (``trainval_merged.json``) use: the mask is read in column-major order as alternating
runs of 0s and 1s, starting with 0s. ``counts`` is either the run lengths as a list of integers
(uncompressed RLE) or a string (compressed RLE): each run length is written in 5-bit groups,
least significant first, as characters ``48 + group`` with bit 0x20 set while more groups follow
and bit 0x10 of the last group the sign; from the fourth run on, the value stored is the
difference to the run two places earlier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vocaseg.errors import DatasetError


def string_counts(counts: str) -> np.ndarray:
    """Run lengths [N] (int64) of a compressed RLE counts string."""
    codes = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48  # [C]
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if (codes < 0).any() or (codes > 63).any():
        raise ValueError("characters outside the RLE alphabet")
    last = (codes & 0x20) == 0  # [C] True where a value's final group sits
    if not last[-1]:
        raise ValueError("the counts string ends inside a value")
    starts = np.concatenate(([0], np.flatnonzero(last)[:-1] + 1))  # [N] first group of each value
    group = np.cumsum(np.concatenate(([0], last[:-1].astype(np.int64))))  # [C] value of each char
    shift = 5 * (np.arange(codes.size) - starts[group])  # [C] bit offset of each group
    if shift.max() > 50:
        raise ValueError("a run length with too many digits")
    values = np.add.reduceat((codes & 0x1F) << shift, starts)  # [N]
    ends = np.flatnonzero(last)
    negative = (codes[ends] & 0x10) != 0  # sign bit of the last group
    values[negative] -= np.int64(1) << (shift[ends[negative]] + 5)
    # from index 3 on, value m is a difference to run m - 2: two interleaved cumulative sums
    runs = values.copy()
    runs[3::2] = np.cumsum(values[1::2])[1:]  # odd chain: 1, 3, 5, ...
    runs[4::2] = np.cumsum(values[2::2])[1:]  # even chain from 2: 2, 4, 6, ...
    return runs


def decode_rle(segmentation: Mapping, where: str = "segment") -> np.ndarray:
    """A COCO RLE dict -> bool mask [h, w]; ``where`` names it in errors."""
    try:
        height, width = (int(v) for v in segmentation["size"])
        counts = segmentation["counts"]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(
            f"{where} is not a COCO RLE mask (expected {{'size': [h, w], 'counts': ...}}); "
            "polygons are not supported"
        ) from None
    try:
        if isinstance(counts, str | bytes):
            runs = string_counts(counts.decode("ascii") if isinstance(counts, bytes) else counts)
        elif isinstance(counts, Sequence):
            runs = np.asarray(counts, dtype=np.int64)
        else:
            raise ValueError(f"counts of type {type(counts).__name__}")
    except (ValueError, UnicodeError) as err:
        raise DatasetError(
            f"{where} has unreadable RLE counts ({err}); re-download the file"
        ) from None
    if (runs < 0).any() or runs.sum() != height * width:
        raise DatasetError(
            f"{where}: its RLE runs cover {int(runs.sum())} pixels, not {height}x{width}; "
            "re-download the file"
        )
    values = np.arange(runs.size) % 2 == 1  # [N] runs alternate 0, 1, 0, ...
    flat = np.repeat(values, runs)  # [h * w] in column-major order
    return flat.reshape(width, height).T  # [h, w]
