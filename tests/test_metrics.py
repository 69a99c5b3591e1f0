"""vocaseg.metrics against independent per-class loops (docs/datasets.md §5)."""

import math

import numpy as np
import pytest
import torch

from vocaseg import metrics


def loop_confusion(pred, gt, num_classes, ignore):
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g != ignore:
            cm[g, p] += 1
    return cm


def loop_miou(pred, gt, num_classes, ignore, semantics):
    """Straightforward per-class IoU from masks, independent of the confusion matrix."""
    keep = gt != ignore
    ious = []
    for c in range(num_classes):
        in_gt = (gt == c) & keep
        in_pred = (pred == c) & keep
        union = (in_gt | in_pred).sum()
        counts = in_gt.sum() > 0 if semantics == "detectron2" else union > 0
        ious.append((in_gt & in_pred).sum() / union if counts else float("nan"))
    return np.array(ious)


def random_case(rng, num_classes, shape=(37, 29), absent=()):
    gt = rng.integers(0, num_classes, size=shape)
    for c in absent:
        gt[gt == c] = 0
    gt[rng.random(shape) < 0.1] = 255
    pred = rng.integers(0, num_classes, size=shape)
    return pred, gt


@pytest.mark.parametrize("num_classes", [2, 7, 21, 847])
def test_confusion_matrix_matches_loop(num_classes):
    rng = np.random.default_rng(num_classes)
    pred, gt = random_case(rng, num_classes)
    expected = loop_confusion(pred, gt, num_classes, 255)
    got = metrics.confusion_matrix(pred, gt, num_classes)
    assert isinstance(got, np.ndarray) and got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    got_t = metrics.confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), num_classes)
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.int64
    np.testing.assert_array_equal(got_t.numpy(), expected)


def test_confusion_matrix_rejects_out_of_range_predictions():
    gt = np.zeros((4, 4), dtype=np.int64)
    pred = gt.copy()
    pred[1, 1] = 5
    with pytest.raises(ValueError, match="prediction value 5"):
        metrics.confusion_matrix(pred, gt, 5)
    gt[0, 0] = 9
    with pytest.raises(ValueError, match="GT value 9"):
        metrics.confusion_matrix(np.zeros_like(gt), gt, 5)
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((3, 2), int), 5)


def test_ignored_gt_drops_any_prediction():
    gt = np.full((3, 3), 255)
    pred = np.full((3, 3), 99)  # out of range, but every pixel is ignored
    assert metrics.confusion_matrix(pred, gt, 4).sum() == 0


@pytest.mark.parametrize("semantics", ["detectron2", "mmseg"])
@pytest.mark.parametrize("num_classes", [3, 12, 150])
def test_summary_matches_per_class_loop(semantics, num_classes):
    rng = np.random.default_rng(7 + num_classes)
    acc = metrics.ConfusionMatrix(num_classes)
    preds, gts = [], []
    for _ in range(3):
        # Classes 1 and 2 never occur in GT but are predicted: the semantics differ on them.
        pred, gt = random_case(rng, num_classes, absent=(1, 2) if num_classes > 3 else (1,))
        acc.update(pred, gt)
        preds.append(pred)
        gts.append(gt)
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    summary = acc.summarize(semantics=semantics)
    iou = loop_miou(pred, gt, num_classes, 255, semantics)
    np.testing.assert_allclose(summary["IoU"], 100 * iou, equal_nan=True)
    assert summary["mIoU"] == pytest.approx(100 * np.nanmean(iou))
    keep = gt != 255
    assert summary["pAcc"] == pytest.approx(100 * (pred[keep] == gt[keep]).mean())
    accs = [(pred[(gt == c)] == c).mean() for c in range(num_classes) if (gt == c).any()]
    assert summary["mAcc"] == pytest.approx(100 * np.mean(accs))
    freq = np.array([(gt == c).sum() for c in range(num_classes)]) / keep.sum()
    fw = sum(
        freq[c] * iou_c
        for c, iou_c in enumerate(loop_miou(pred, gt, num_classes, 255, "detectron2"))
        if freq[c] > 0
    )
    assert summary["fwIoU"] == pytest.approx(100 * fw)
    assert summary["semantics"] == semantics
    assert acc.count == 3


def test_absent_predicted_class_scores_zero_only_under_mmseg():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 2], [1, 1]])
    cm = metrics.confusion_matrix(pred, gt, 3)
    d2 = metrics.summarize(cm, semantics="detectron2")
    mm = metrics.summarize(cm, semantics="mmseg")
    assert math.isnan(d2["IoU"][2]) and mm["IoU"][2] == 0.0
    assert d2["mIoU"] == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert mm["mIoU"] == pytest.approx(100 * (0.5 + 1.0 + 0.0) / 3)
    assert d2["mAcc"] == mm["mAcc"] and d2["fwIoU"] == mm["fwIoU"]


def test_seen_unseen_and_harmonic_mean():
    rng = np.random.default_rng(0)
    pred, gt = random_case(rng, 6)
    cm = metrics.confusion_matrix(pred, gt, 6)
    out = metrics.summarize(cm, class_names=list("abcdef"), seen=[0, 2, 4], semantics="mmseg")
    iou = np.array(out["IoU"])
    seen, unseen = np.nanmean(iou[[0, 2, 4]]), np.nanmean(iou[[1, 3, 5]])
    assert out["mIoU_seen"] == pytest.approx(seen)
    assert out["mIoU_unseen"] == pytest.approx(unseen)
    assert out["hIoU"] == pytest.approx(2 / (1 / seen + 1 / unseen))
    assert out["class_names"] == list("abcdef")
    assert metrics.harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(metrics.harmonic_mean(50.0, float("nan")))
    with pytest.raises(ValueError, match="semantics"):
        metrics.summarize(cm, semantics="coco")


def test_confusion_accumulator_all_reduce_is_noop_without_distributed():
    acc = metrics.ConfusionMatrix(3)
    acc.update(np.array([0, 1]), np.array([0, 2]))
    before = acc.matrix.clone()
    acc.all_reduce()
    assert torch.equal(acc.matrix, before) and acc.count == 1


def test_video_consistency_hand_made():
    gt_a = np.array([[1, 1], [2, 2]])
    gt_b = np.array([[1, 1], [2, 3]])  # pixel (1, 1) changes class in frame 2
    pred_a = np.array([[1, 1], [2, 2]])
    pred_b = np.array([[1, 0], [2, 2]])  # pixel (0, 1) flickers in frame 3
    gts = [gt_a, gt_a, gt_b, gt_a, gt_a]
    preds = [pred_a, pred_a, pred_a, pred_b, pred_a]
    # n = 2: windows s = 0..2 (the last full window, s = 3, is skipped as in the reference).
    # s=0: G = 4 pixels, P = 4 -> 1; s=1: G = 3 (pixel (1,1) changes), P all -> 1;
    # s=2: G = 3, P excludes (0,1) -> 2/3.
    total, count = metrics.video_consistency(preds, gts, n=2)
    assert count == 3
    assert total == pytest.approx(1 + 1 + 2 / 3)
    # A video with T <= n contributes no windows.
    assert metrics.video_consistency(preds[:2], gts[:2], n=2) == (0.0, 0)
    vc = metrics.VideoConsistency(n=2)
    vc.update(preds, gts)
    vc.update(preds[:2], gts[:2])
    vc.all_reduce()  # no-op without torch.distributed
    assert vc.count == 3 and vc.value == pytest.approx(100 * (8 / 3) / 3)
