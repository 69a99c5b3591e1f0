"""The evaluator on synthetic shapes with a nearest-colour stub model (tests/eval_stub.py)."""

import csv
import json

import numpy as np
import pytest

from eval_stub import ColourStub, StubConfig, nearest_colour_labels
from vocaseg import metrics
from vocaseg.data.synthetic import ShapesDataset
from vocaseg.engine.evaluator import evaluate, format_summary, write_results
from vocaseg.errors import DatasetError, UserError


class Broken:
    """Wraps a dataset; the listed indices fail to read, as a truncated file would."""

    def __init__(self, data, bad):
        self.data, self.bad = data, set(bad)
        self.class_names, self.classes = data.class_names, data.classes
        self.ignore_index, self.record = data.ignore_index, data.record

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        if index in self.bad:
            raise DatasetError(f"img_{index}.png is truncated")
        return self.data[index]


@pytest.fixture(scope="module")
def data():
    return ShapesDataset(5, size=40, seed=11)


def expected_matrix(data, indices=None):
    indices = range(len(data)) if indices is None else indices
    total = np.zeros((data.num_classes,) * 2, dtype=np.int64)
    for i in indices:
        item = data[i]
        pred = nearest_colour_labels(item["image"], data.num_classes)
        total += metrics.confusion_matrix(pred, item["label"], data.num_classes)
    return total


def test_matrix_matches_independent_predictions(data):
    result = evaluate(ColourStub(StubConfig()), data, progress=False)
    np.testing.assert_array_equal(result.confusion, expected_matrix(data))
    assert result.evaluated == 5 and result.skipped == []
    assert set(result.summaries) == {"detectron2", "mmseg"} and result.headline == "detectron2"
    assert result.summary["pAcc"] > 90
    assert result.summary["mIoU"] == result.summaries["detectron2"]["mIoU"]


def test_batching_and_sliding_window_do_not_change_results(data):
    base = evaluate(ColourStub(StubConfig()), data, progress=False).confusion
    batched = evaluate(ColourStub(StubConfig()), data, batch_size=3, progress=False).confusion
    windowed = evaluate(ColourStub(StubConfig(window=16)), data, progress=False).confusion
    np.testing.assert_array_equal(batched, base)
    np.testing.assert_array_equal(windowed, base)


def test_limit_seen_and_record(data):
    result = evaluate(
        ColourStub(StubConfig()),
        data,
        limit=2,
        seen=[0, 1, 2],
        semantics=("mmseg",),
        progress=False,
    )
    np.testing.assert_array_equal(result.confusion, expected_matrix(data, range(2)))
    assert result.headline == "mmseg" and "hIoU" in result.summary
    record = result.record
    assert record["limit"] == 2 and record["evaluated"] == 2
    assert record["background"]["id"] == "bg:none" and record["semantics"] == ["mmseg"]
    assert len(record["weights_sha256"]) == 64 and record["preprocess"]["window"] is None
    assert record["dataset"]["id"] == "shapes"


def test_corrupt_sample_stops_by_default(data):
    with pytest.raises(DatasetError, match=r"img_2\.png is truncated.*--on-error skip"):
        evaluate(ColourStub(StubConfig()), Broken(data, [2]), progress=False)


def test_corrupt_sample_skipped_and_counted(data):
    result = evaluate(
        ColourStub(StubConfig()), Broken(data, [1, 3]), on_error="skip", progress=False
    )
    assert result.evaluated == 3
    assert [s["index"] for s in result.skipped] == [1, 3]
    assert "truncated" in result.skipped[0]["reason"]
    np.testing.assert_array_equal(result.confusion, expected_matrix(data, [0, 2, 4]))
    assert "skipped 2" in format_summary(result)


def test_label_values_outside_classes_are_reported(data):
    class BadLabel(Broken):
        def __getitem__(self, index):
            item = self.data[index]
            item["label"][0, 0] = 7
            return item

    with pytest.raises(DatasetError, match="label value 7"):
        evaluate(ColourStub(StubConfig()), BadLabel(data, []), progress=False)


def test_vocabulary_size_must_match(data):
    from vocaseg.text.vocab import Vocabulary

    with pytest.raises(UserError, match="vocabulary has 2 classes"):
        evaluate(ColourStub(StubConfig()), data, Vocabulary.from_names(["a", "b"]), progress=False)


def test_write_results(tmp_path, data):
    result = evaluate(ColourStub(StubConfig()), data, seen=[0, 1, 2], progress=False, save_vis=2)
    out = write_results(result, tmp_path / "out")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["headline"]["mIoU"] == pytest.approx(result.summary["mIoU"])
    assert saved["summaries"]["mmseg"]["hIoU"] == pytest.approx(result.summaries["mmseg"]["hIoU"])
    assert saved["record"]["evaluated"] == 5
    with open(out / "per_class.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == data.class_names
    assert list(rows[0]) == [
        "class_id",
        "name",
        "gt_pixels",
        "pred_pixels",
        "tp",
        "union",
        "iou",
        "acc",
        "valid_detectron2",
        "valid_mmseg",
        "split",
    ]
    cm = result.confusion
    assert int(rows[1]["tp"]) == cm[1, 1] and int(rows[1]["gt_pixels"]) == cm[1].sum()
    assert [r["split"] for r in rows] == ["seen"] * 3 + ["unseen"] * 2
    np.testing.assert_array_equal(np.load(out / "confusion.npz")["confusion"], cm)
    assert len(list((out / "vis").glob("*.png"))) == 2


def _distributed_worker(rank, world, port, queue):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        result = evaluate(
            ColourStub(StubConfig()),
            Broken(ShapesDataset(5, size=40, seed=11), [3]),
            on_error="skip",
            progress=False,
        )
        queue.put((rank, result.confusion, result.evaluated, result.skipped))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two interpreters (~6-20 s)
def test_two_processes_shard_without_padding(data):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_distributed_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    expected = expected_matrix(data, [0, 1, 2, 4])
    for _, confusion, evaluated, skipped in results:
        np.testing.assert_array_equal(confusion, expected)  # every rank holds the reduced matrix
        assert evaluated == 4 and [s["index"] for s in skipped] == [3]
