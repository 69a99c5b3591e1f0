"""Teacher cache: cached targets equal online ones; a build interrupted mid-shard resumes without
recomputing finished shards and never leaves a corrupt shard; processes split the shards; a cache
built with another teacher or view set is refused with one line."""

import json
import pickle

import numpy as np
import pytest
import torch

from vocaseg.data import teacher_cache
from vocaseg.data.image_folder import ImageFolderSource
from vocaseg.data.synthetic import make_image_folder
from vocaseg.data.teacher_cache import (
    TeacherCache,
    build_teacher_cache,
    shard_path,
)
from vocaseg.data.teacher_views import MultiScaleCropTeacher, ViewSpec
from vocaseg.errors import DatasetError
from vocaseg.hashing import tensors_sha256

SPEC = ViewSpec(size=16)
SHA = "a" * 64


class CountingTeacher:
    """A cheap deterministic teacher [N, 3, s, s] -> [N, 6] that counts the images it embeds
    (views / 30) and can fail once it has seen ``fail_after`` images."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.weight = torch.linspace(-1, 1, 18).view(3, 6)
        self.views = 0
        self.fail_after = fail_after

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.views += len(x)
        if self.fail_after is not None and self.views > self.fail_after * SPEC.num_views:
            raise RuntimeError("simulated crash")
        return x.mean(dim=(2, 3)) @ self.weight

    @property
    def images(self) -> int:
        return self.views // SPEC.num_views


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "images", 7, sizes=((40, 48), (48, 40)), layout="flat")


def _build(root, folder, teacher, spec=SPEC, sha=SHA, **kwargs):
    source = ImageFolderSource(folder, size=32)
    wrapped = MultiScaleCropTeacher(teacher, spec, name="toy", sha256=sha, chunk=64)
    options = {"shard_size": 3, "batch_size": 2, "progress": False, **kwargs}
    return build_teacher_cache(root, source, wrapped, **options)


@pytest.mark.parametrize("crop_source", ["student", "native"])
def test_cached_targets_equal_online_targets(tmp_path, folder, tiny_vit_clip, crop_source):
    spec = ViewSpec(size=32, crop_source=crop_source)
    sha = tensors_sha256(tiny_vit_clip.visual.state_dict())
    report = _build(tmp_path / "cache", folder, tiny_vit_clip.encode_image, spec=spec, sha=sha)
    assert report.complete and report.images_computed == 7
    cache = TeacherCache(tmp_path / "cache", {"name": "toy", "sha256": sha}, spec.record())
    online = MultiScaleCropTeacher(tiny_vit_clip.encode_image, spec, "toy", sha)
    source = ImageFolderSource(folder, size=32, teacher_crop=crop_source)
    samples = [source.sample(i, np.random.default_rng(0)) for i in (0, 4, 6)]
    expected = online([s["teacher_image"] for s in samples])  # the training-step path
    cached = cache.batch([s["index"] for s in samples])
    assert cached.shape == (3, 30, 32)
    torch.testing.assert_close(cached, expected.half().float(), atol=2e-3, rtol=2e-3)


def test_manifest_records_what_was_built(tmp_path, folder):
    _build(tmp_path / "cache", folder, CountingTeacher())
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["dtype"] == "float16" and manifest["dim"] == 6
    assert manifest["teacher"] == {"name": "toy", "sha256": SHA}
    assert (
        manifest["views"]["grids"] == [1, 2, 3, 4] and manifest["views"]["crop_source"] == "student"
    )
    assert manifest["preprocess"]["size"] == 32 and "bicubic" in manifest["views"]["resize"]
    assert manifest["images"]["img_00004.jpg"] == [1, 1]
    assert manifest["counts"] == {
        "images": 7, "embedded": 7, "unreadable": 0, "shards": 3, "teacher_forwards": 210
    }  # fmt: skip
    shard = np.load(shard_path(tmp_path / "cache", 2))
    assert shard.shape == (1, 30, 6) and shard.dtype == np.float16


def test_interrupted_build_resumes_without_recomputing_finished_shards(tmp_path, folder):
    root = tmp_path / "cache"
    crashing = CountingTeacher(fail_after=4)  # shard 0 (3 images) done, dies inside shard 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        _build(root, folder, crashing)
    assert shard_path(root, 0).is_file() and not shard_path(root, 1).exists()
    assert not [p.name for p in (root / "shards").iterdir() if p.name.startswith(".")]
    with pytest.raises(DatasetError, match=r"incomplete \(1 of 3 shards\)"):
        TeacherCache(root)
    first_shard = np.load(shard_path(root, 0))

    resumed = CountingTeacher()
    report = _build(root, folder, resumed)
    assert resumed.images == 4  # shards 1 and 2 only
    assert (report.shards_written, report.shards_skipped, report.complete) == (2, 1, True)
    assert np.array_equal(np.load(shard_path(root, 0)), first_shard)

    clean = tmp_path / "clean"
    _build(clean, folder, CountingTeacher())
    for index in range(7):
        assert np.array_equal(TeacherCache(root)[index], TeacherCache(clean)[index])


def test_crash_while_writing_never_leaves_a_corrupt_shard(tmp_path, folder, monkeypatch):
    root = tmp_path / "cache"
    real_save = np.save

    def dying_save(path, array):
        with open(path, "wb") as handle:
            handle.write(b"\x93NUMPY partial")  # half a file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(teacher_cache.np, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        _build(root, folder, CountingTeacher())
    assert list((root / "shards").glob("*.npy")) == []  # neither a shard nor a temporary
    monkeypatch.setattr(teacher_cache.np, "save", real_save)

    # A killed writer's leftover temporary (atomic_path naming) is ignored and cleaned up.
    stale = root / "shards" / ".shard_00000.npy.x1y2.tmp.npy"
    stale.write_bytes(b"garbage")
    counting = CountingTeacher()
    assert _build(root, folder, counting).complete
    assert counting.images == 7 and not stale.exists()
    assert TeacherCache(root)[6].shape == (30, 6)


def test_work_is_split_across_processes(tmp_path, folder):
    root = tmp_path / "cache"
    first, second = CountingTeacher(), CountingTeacher()
    report0 = _build(root, folder, first, rank=0, world_size=2)  # shards 0 and 2
    assert not report0.complete and first.images == 4
    with pytest.raises(DatasetError, match="incomplete"):
        TeacherCache(root)
    report1 = _build(root, folder, second, rank=1, world_size=2)  # shard 1, then finalises
    assert report1.complete and second.images == 3
    assert len(TeacherCache(root)) == 7


def test_other_teacher_or_view_set_is_refused_in_one_line(tmp_path, folder):
    root = tmp_path / "cache"
    _build(root, folder, CountingTeacher())
    with pytest.raises(DatasetError, match="built with teacher toy \\(sha256 aaaa") as err:
        TeacherCache(root, teacher={"name": "toy", "sha256": "b" * 64}, views=SPEC.record())
    assert "\n" not in str(err.value)
    other_views = ViewSpec(grids=(1, 2, 3), size=16).record()
    with pytest.raises(DatasetError, match="view set") as err:
        TeacherCache(root, teacher={"name": "toy", "sha256": SHA}, views=other_views)
    assert "\n" not in str(err.value) and '{"grids": [1, 2, 3, 4]}' in str(err.value)
    native = ViewSpec(size=16, crop_source="native").record()
    with pytest.raises(DatasetError, match="crop_source"):
        TeacherCache(root, views=native)
    # The writer refuses to add to it too, before embedding anything.
    counting = CountingTeacher()
    with pytest.raises(DatasetError, match="built with teacher"):
        _build(root, folder, counting, sha="c" * 64)
    assert counting.views == 0
    TeacherCache(root, teacher={"name": "toy", "sha256": SHA}, views=SPEC.record())  # fits
    # The same weights under another name (a file path instead of a known name) fit as well.
    TeacherCache(root, teacher={"name": "/weights/toy.pt", "sha256": SHA}, views=SPEC.record())


def test_unreadable_images_are_listed_and_refused(tmp_path, folder):
    """Image 2 is broken, and so is all of shard 1 (images 3-5); decoding runs in a worker."""
    broken = ["img_00002.jpg", "img_00003.png", "img_00004.jpg", "img_00005.png"]
    for name in broken:
        (folder / name).write_bytes(b"broken")
    root = tmp_path / "cache"
    report = _build(root, folder, CountingTeacher(), num_workers=1)
    assert report.unreadable == broken and "4 unreadable skipped" in report.summary()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["unreadable"] == broken and manifest["counts"]["embedded"] == 3
    cache = TeacherCache(root)
    for index in (2, 3, 5):
        with pytest.raises(DatasetError, match="unreadable when teacher cache"):
            cache[index]
    assert np.isfinite(cache[1]).all() and np.isfinite(cache[6]).all()


def test_reader_is_cheap_to_pickle_and_maps_lazily(tmp_path, folder):
    root = tmp_path / "cache"
    _build(root, folder, CountingTeacher())
    cache = TeacherCache(root, max_open=1)
    assert cache._maps == {}
    first = cache[0]
    cache[4]  # a second shard evicts the first (max_open=1)
    assert list(cache._maps) == [1]
    payload = pickle.dumps(cache)
    assert len(payload) < 2000
    clone = pickle.loads(payload)
    assert clone._maps == {} and np.array_equal(clone[0], first)
    assert clone.index_of("img_00005.png") == 5
    source = ImageFolderSource(folder, size=32)
    clone.check_images(source.paths)
    with pytest.raises(DatasetError, match="another image list \\(7 images; this folder has 6\\)"):
        clone.check_images(source.paths[:-1])
