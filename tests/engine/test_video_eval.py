"""Video evaluation on a tiny generated VSPW layout with the nearest-colour stub (tests/eval_stub.py):
mIoU from one matrix over all frames and VC8/VC16 checked against hand computations of
docs/datasets.md §5.4."""

import numpy as np
import pytest
from PIL import Image

from data.layouts import save_image, write_video
from eval_stub import ColourStub, StubConfig, nearest_colour_labels
from vocaseg.data import load_dataset
from vocaseg.data.synthetic import class_colour
from vocaseg.engine.evaluator import evaluate, format_summary
from vocaseg.engine.video_eval import shard_videos
from vocaseg.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")

C, IGNORE = 124, 255
VIDEOS = {"v_long": 19, "v_mid": 11, "v_short": 8}  # VC16 windows 3 + 0 + 0; VC8 11 + 3 + 0
MASKS = "VSPW_480p/data/{video}/mask"
ORIGIN = "VSPW_480p/data/{video}/origin"


def raw_mask(t: int, seed: int) -> np.ndarray:
    """[12, 16] raw VSPW values: 'others' (0) with a 0/255 flicker, a static class 3 band with a
    class 10 block moving right every other frame, a class 124 band and a void (255) band."""
    mask = np.zeros((12, 16), dtype=np.uint8)
    mask[0:4, 12:] = 255 if t % 2 else 0
    mask[4:8] = 3
    start = (seed + t // 2) % 12
    mask[4:8, start : start + 4] = 10
    mask[8:10] = 124
    mask[10:12] = 255
    return mask


def frame_image(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each class painted in its stub colour (others/void in class 0's), plus noise that makes
    some predictions flicker."""
    ids = np.where((mask == 0) | (mask == 255), 0, mask.astype(np.int64) - 1)
    colours = np.stack([class_colour(i) for i in range(C)])
    image = colours[ids] + rng.normal(0, 4, size=(*mask.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vspw")
    masks = {v: [raw_mask(t, seed) for t in range(n)] for seed, (v, n) in enumerate(VIDEOS.items())}
    write_video(root, ORIGIN, MASKS, "VSPW_480p/val.txt", masks)
    rng = np.random.default_rng(0)
    for video, frames in masks.items():
        for t, mask in enumerate(frames):
            path = root / ORIGIN.format(video=video) / f"{t:05d}.jpg"
            save_image(path, frame_image(mask, rng))  # replaces write_video's random pixels
    return root


def hand_frames(root, video):
    """(predictions, raw GT) of every frame, read and predicted independently of the evaluator."""
    preds, gts = [], []
    for t in range(VIDEOS[video]):
        image = np.asarray(Image.open(root / ORIGIN.format(video=video) / f"{t:05d}.jpg"))
        preds.append(nearest_colour_labels(image.astype(np.float64), C))
        gts.append(np.asarray(Image.open(root / MASKS.format(video=video) / f"{t:05d}.png")))
    return preds, gts


def decode(raw):
    return np.where((raw == 0) | (raw == 255), IGNORE, raw.astype(np.int64) - 1)


def window_scores(preds, gts, n):
    """VC_perclip.py by hand: window starts 0..T-n-1, G = stable GT, P = stable prediction."""
    scores = []
    for s in range(len(gts) - n):
        stable_gt = np.all([gts[s + j] == gts[s] for j in range(n)], axis=0)
        stable_pred = np.all([preds[s + j] == preds[s] for j in range(n)], axis=0)
        scores.append((stable_gt & stable_pred).sum() / stable_gt.sum())
    return scores


def hand_vc(root, videos, n, gt_view=lambda raw: raw):
    scores = []
    for video in videos:
        preds, gts = hand_frames(root, video)
        scores += window_scores(preds, [gt_view(g) for g in gts], n)
    return 100 * np.mean(scores), len(scores)


def hand_matrix(root, videos):
    matrix = np.zeros((C, C), dtype=np.int64)
    for video in videos:
        for pred, raw in zip(*hand_frames(root, video)):
            gt = decode(raw)
            keep = gt != IGNORE
            np.add.at(matrix, (gt[keep], pred[keep]), 1)
    return matrix


@pytest.fixture(scope="module")
def result(root):
    return evaluate(ColourStub(StubConfig()), load_dataset("vspw", root=root), progress=False)


def test_matrix_over_all_frames_matches_hand_count(root, result):
    matrix = hand_matrix(root, VIDEOS)
    np.testing.assert_array_equal(result.confusion, matrix)
    tp, gt = np.diag(matrix), matrix.sum(1)
    union = gt + matrix.sum(0) - tp
    present = gt > 0  # detectron2 semantics: GT-present classes only
    assert present.sum() == 3  # classes 2, 9, 123
    assert result.summary["mIoU"] == pytest.approx(100 * np.mean(tp[present] / union[present]))
    assert result.evaluated == sum(VIDEOS.values())


def test_vc8_vc16_match_hand_computation(root, result):
    vc8, windows8 = hand_vc(root, VIDEOS, 8)
    vc16, windows16 = hand_vc(root, VIDEOS, 16)
    assert (windows8, windows16) == (11 + 3, 3)  # last window and videos with T <= n skipped
    for summary in result.summaries.values():  # VC is the same under both semantics
        assert summary["VC8"] == pytest.approx(vc8)
        assert summary["VC16"] == pytest.approx(vc16)
    assert 0 < vc16 < 100 and 0 < vc8 < 100  # the noise makes some predictions flicker
    record = result.record
    assert record["video"] is True and (record["videos"], record["frames"]) == (3, 38)
    assert record["vc_gt"] == "raw" and record["vc_windows"] == {"VC8": 14, "VC16": 3}
    table = format_summary(result)
    assert "VC8" in table and "VC16" in table and "evaluated 38 frames of 3 videos" in table


def test_batches_across_videos_change_nothing(root, result):
    batched = evaluate(
        ColourStub(StubConfig()), load_dataset("vspw", root=root), batch_size=4, progress=False
    )
    np.testing.assert_array_equal(batched.confusion, result.confusion)
    assert batched.summary == pytest.approx(result.summary)


def test_limit_counts_videos(root):
    out = evaluate(
        ColourStub(StubConfig()), load_dataset("vspw", root=root), limit=2, progress=False
    )
    assert (out.record["videos"], out.record["frames"], out.evaluated) == (2, 30, 30)
    np.testing.assert_array_equal(out.confusion, hand_matrix(root, ["v_long", "v_mid"]))
    assert out.summary["VC8"] == pytest.approx(hand_vc(root, ["v_long", "v_mid"], 8)[0])


def test_mapped_gt_treats_others_and_void_alike(root):
    mapped = evaluate(
        ColourStub(StubConfig()), load_dataset("vspw", root=root), vc_gt="mapped", progress=False
    )
    vc8, _ = hand_vc(root, VIDEOS, 8, gt_view=decode)
    assert mapped.summary["VC8"] == pytest.approx(vc8) and mapped.record["vc_gt"] == "mapped"
    assert mapped.summary["VC8"] != pytest.approx(hand_vc(root, VIDEOS, 8)[0])


def test_skipped_frame_breaks_windows(root, tmp_path):
    import shutil

    copy = tmp_path / "vspw"
    shutil.copytree(root, copy)
    (copy / ORIGIN.format(video="v_long") / "00005.jpg").write_bytes(b"not a jpeg")
    out = evaluate(
        ColourStub(StubConfig()),
        load_dataset("vspw", root=copy),
        on_error="skip",
        progress=False,
    )
    assert out.evaluated == 37 and [s["index"] for s in out.skipped] == [5]
    preds, gts = hand_frames(root, "v_long")
    # v_long splits into frames 0-4 (no window) and 6-18 (13 frames: 5 windows of 8)
    scores = window_scores(preds[6:], gts[6:], 8)
    scores += window_scores(*hand_frames(root, "v_mid"), 8)
    assert out.record["vc_windows"]["VC8"] == len(scores) == 8
    assert out.summary["VC8"] == pytest.approx(100 * np.mean(scores))
    assert out.record["vc_windows"]["VC16"] == 0 and np.isnan(out.summary["VC16"])


def test_shards_are_whole_balanced_videos():
    videos = {"a": [0, 1, 2, 3, 4], "b": [5, 6], "c": [7, 8, 9], "d": [10]}
    shards = [shard_videos(videos, None, rank, 2) for rank in range(2)]
    assert shards[0] == (["a", "d"], [0, 1, 2, 3, 4, 10], 11)
    assert shards[1] == (["b", "c"], [5, 6, 7, 8, 9], 11)
    assert shard_videos(videos, 2, 1, 2) == (["b"], [5, 6], 7)
    assert [shard_videos(videos, None, r, 3)[0] for r in range(3)] == [["a"], ["c"], ["b", "d"]]


def test_raw_gt_needs_label_files(root):
    class NoFiles:
        """A video reader that serves decoded frames but lists no label files."""

        def __init__(self, data):
            self.data = data
            self.class_names, self.classes = data.class_names, data.classes
            self.ignore_index, self.videos = data.ignore_index, data.videos

        def __len__(self):
            return len(self.data)

        def __getitem__(self, index):
            return self.data[index]

    data = NoFiles(load_dataset("vspw", root=root))
    with pytest.raises(UserError, match="vc_gt='mapped'"):
        evaluate(ColourStub(StubConfig()), data, progress=False)
    out = evaluate(ColourStub(StubConfig()), data, limit=1, vc_gt="mapped", progress=False)
    assert out.record["vc_windows"]["VC8"] == 11


def _distributed_worker(rank, world, port, root, queue):
    import warnings

    import torch.distributed as dist

    warnings.filterwarnings("ignore", ".*the benchmark has")
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        out = evaluate(ColourStub(StubConfig()), load_dataset("vspw", root=root), progress=False)
        queue.put((rank, out.confusion, out.summary, out.record["vc_windows"], out.evaluated))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two interpreters (~6-20 s)
def test_two_processes_take_whole_videos(root, result):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_distributed_worker, args=(r, 2, port, str(root), queue))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    outputs = sorted((queue.get(timeout=120) for _ in procs), key=lambda o: o[0])
    for p in procs:
        p.join(timeout=60)
    for _, confusion, summary, windows, evaluated in outputs:  # every rank holds the totals
        np.testing.assert_array_equal(confusion, result.confusion)
        assert summary == pytest.approx(result.summary)
        assert windows == result.record["vc_windows"] and evaluated == 38
