"""GKC's open-vocabulary video benchmark on a generated VIPSeg layout: frame-level mIoU over the
112 base and 12 novel classes, hIoU and VC8 on class maps, and the val_base / val_novel splits,
against an independent per-frame computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cli_helpers import run_cli
from data.layouts import save_image, write_video
from eval_stub import nearest_colour_labels
from vocaseg import metrics
from vocaseg.data.classlists import load_ids
from vocaseg.data.synthetic import class_colour

C, IGNORE = 124, 255
NOVEL = load_ids("vipseg.unseen")  # 11 pillar, 32 ice, ... (VIPSeg ids - 1)
IMAGES, MASKS = "VIPSeg_720P/images/{video}", "VIPSeg_720P/panomasks/{video}"


def panomask(t: int) -> np.ndarray:
    """uint16 [12, 16] VIPSeg values: void, a novel thing (pillar, instance ids class*100+k),
    base stuff classes, a moving base block."""
    mask = np.zeros((12, 16), dtype=np.uint16)
    mask[0:4] = 12 * 100 + 1 + t % 2  # pillar (class id 12 -> trainId 11), instance flickers
    mask[4:8] = 3  # base class 3 -> trainId 2
    mask[4:8, t % 12 : t % 12 + 4] = 66
    mask[8:12] = 33 if t < 5 else 34  # ice (novel) then grandstand (novel)
    return mask


@pytest.fixture
def root(tmp_path):
    videos = {"a": [panomask(t) for t in range(10)], "b": [panomask(t + 3) for t in range(9)]}
    write_video(tmp_path, IMAGES, MASKS, "VIPSeg_720P/val.txt", videos)
    rng = np.random.default_rng(0)
    for video, frames in videos.items():
        for t, mask in enumerate(frames):
            ids = np.where(mask >= 125, mask // 100, mask).astype(np.int64) - 1
            colours = np.stack([class_colour(i) for i in range(C)])
            image = colours[np.clip(ids, 0, None)] + rng.normal(0, 30, size=(*mask.shape, 3))
            save_image(root_path(tmp_path, video, t), np.clip(image, 0, 255).astype(np.uint8))
    return tmp_path, videos


def root_path(base, video, t):
    return base / IMAGES.format(video=video) / f"{t:05d}.jpg"


def decoded(mask: np.ndarray) -> np.ndarray:
    ids = np.where(mask >= 125, mask // 100, mask).astype(np.int64) - 1
    return np.where(ids < 0, IGNORE, ids)


@pytest.mark.usefixtures("offline_cache")
@pytest.mark.parametrize("split", ["val", "val_base", "val_novel"])
def test_vipseg_seen_unseen_hiou_and_vc(root, tmp_path, capsys, split):
    base, videos = root
    out = tmp_path / f"out_{split}"
    code, _, err = run_cli(
        capsys, "eval", "--model", "colour_stub", "--dataset", "vipseg", "--data-root", base,
        "--split", split, "-o", out, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["record"]["protocol"] == "ov-video"
    seen = [i for i in range(C) if i not in NOVEL]
    cm, preds_by_video, gts_by_video = 0, [], []
    for video, frames in videos.items():
        preds, gts = [], []
        for t, mask in enumerate(frames):
            image = np.asarray(Image.open(root_path(base, video, t))).astype(np.float64)
            pred, gt = nearest_colour_labels(image, C), decoded(mask)
            if split != "val":  # GT restricted to base (or novel) classes, the rest ignored
                keep = np.isin(gt, seen) if split == "val_base" else np.isin(gt, NOVEL)
                gt = np.where(keep, gt, IGNORE)
            cm = cm + np.asarray(metrics.confusion_matrix(pred, gt, C, IGNORE))
            preds.append(pred)
            gts.append(gt)
        preds_by_video.append(preds)
        gts_by_video.append(gts)
    expected = metrics.summarize(cm, seen=seen, semantics="detectron2")
    got = saved["summaries"]["detectron2"]
    for key in ("mIoU", "mIoU_seen", "mIoU_unseen", "hIoU"):
        want = expected[key]
        assert (got[key] is None and np.isnan(want)) or got[key] == pytest.approx(want), key
    vc = metrics.VideoConsistency(8)  # on class maps (VIPSeg's raw values are panoptic ids)
    for preds, gts in zip(preds_by_video, gts_by_video):
        vc.update(preds, gts)
    assert got["VC8"] == pytest.approx(vc.value)
