"""Pre-computed ZeroSeg teacher targets (Chen et al., ICCV 2023, §4.1: the CLIP features of the
multi-scale views are computed once): a resumable, sharded writer and a memory-mapped reader.

Layout of a cache folder::

    manifest.json              what was built and how (see below)
    shards/shard_00000.npy     float16 [N_shard, V, D], rows in image order
    shards/shard_00000.json    that shard's unreadable images (written just before the .npy)

Image i (in sorted relative-path order) is row i % shard_size of shard i // shard_size. Every
file is written to a temporary name and renamed, so an interrupted build leaves whole shards
only; a rerun skips them. Processes split the shards round-robin by (rank, world_size); whichever
finishes last writes the completed manifest. The manifest records the teacher (its name and the
SHA-256 of its tensors, ``vocaseg.hashing.tensors_sha256``; only the hash is compared), the view
set, the student preprocessing, the image list (path -> [shard, row] and its SHA-256), dtype and
counts. A cache built with another teacher or view set is refused with one
line, by the writer (no mixing) and by the reader.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vocaseg.data.image_folder import paths_sha256
from vocaseg.data.teacher_views import MultiScaleCropTeacher
from vocaseg.errors import DatasetError
from vocaseg.io import atomic_path, write_json

FORMAT = "vocaseg-teacher-cache"
VERSION = 1
MANIFEST = "manifest.json"
DTYPE = "float16"


class CacheSource(Protocol):
    """What the writer needs from an image source (``ImageFolderSource`` provides it)."""

    paths: list[str]

    def teacher_input(self, index: int, crop_source: str) -> torch.Tensor: ...

    def crop_record(self) -> dict[str, Any]: ...


def shard_path(root: Path, shard: int, suffix: str = ".npy") -> Path:
    return root / "shards" / f"shard_{shard:05d}{suffix}"


def _plan(source: CacheSource, teacher: MultiScaleCropTeacher, shard_size: int) -> dict[str, Any]:
    """The manifest fields fixed before anything is computed."""
    paths = list(source.paths)
    return {
        "format": FORMAT,
        "version": VERSION,
        "complete": False,
        "teacher": {"name": teacher.name, "sha256": teacher.sha256},
        "views": teacher.spec.record(),
        "preprocess": source.crop_record(),
        "dtype": DTYPE,
        "shard_size": shard_size,
        "num_images": len(paths),
        "num_shards": math.ceil(len(paths) / shard_size),
        "images_sha256": paths_sha256(paths),
        "images": {p: [i // shard_size, i % shard_size] for i, p in enumerate(paths)},
    }


def _describe(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value.get('name')} (sha256 {str(value['sha256'])[:12]})"
    return json.dumps(value)


def _same(key: str, built: Any, wanted: Any) -> bool:
    """Teachers are the same when their weights are (the name is only how the run called them)."""
    if key == "teacher" and isinstance(built, dict) and isinstance(wanted, dict):
        return built.get("sha256") == wanted.get("sha256")
    return built == wanted


def _mismatch(root: Path, built: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """One-line reason why the cache at ``root`` does not fit ``wanted``, or None."""
    checks = [("teacher", "teacher"), ("views", "view set"), ("preprocess", "student crop")]
    for key, what in checks:
        if key not in wanted or _same(key, built.get(key), wanted[key]):
            continue
        have, want = built.get(key), wanted[key]
        if isinstance(have, dict) and isinstance(want, dict) and key != "teacher":
            field = next(k for k in [*have, *want] if have.get(k) != want.get(k))
            have, want = {field: have.get(field)}, {field: want.get(field)}
        return (
            f"teacher cache {root} was built with {what} {_describe(have)}, but this run uses "
            f"{_describe(want)}; build a new cache in another folder (or point at one built with "
            "these settings)"
        )
    if "shard_size" in wanted and built.get("shard_size") != wanted["shard_size"]:
        return (
            f"teacher cache {root} was built with shard size {built.get('shard_size')}, but this "
            f"run uses {wanted['shard_size']}; pass the same shard size or use another folder"
        )
    if "images_sha256" in wanted and built.get("images_sha256") != wanted["images_sha256"]:
        return (
            f"teacher cache {root} was built from another image list ({built.get('num_images')} "
            f"images; this folder has {wanted.get('num_images')}); build a new cache for it"
        )
    return None


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(
            f"cannot read {path}: {err}; delete the cache folder and rebuild"
        ) from None
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a vocaseg teacher-cache manifest; pick an empty folder")
    return manifest


def is_complete(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a finished cache (its manifest says so); False for none at all."""
    manifest = _read_manifest(Path(root))
    return bool(manifest and manifest.get("complete"))


def _shard_ok(root: Path, shard: int, rows: int, views: int) -> bool:
    """Whether the shard file exists with the expected header (a cheap check, no data read)."""
    path = shard_path(root, shard)
    if not path.is_file() or not shard_path(root, shard, ".json").is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return array.dtype == np.float16 and array.ndim == 3 and array.shape[:2] == (rows, views)


def _remove_stale_temporaries(root: Path, shard: int) -> None:
    """Temporary files a killed writer of ``shard`` left behind (``atomic_path`` names)."""
    for suffix in (".npy", ".json"):
        name = shard_path(root, shard, suffix).name
        for stale in (root / "shards").glob(f".{name}.*.tmp{suffix}"):
            stale.unlink(missing_ok=True)


class _TeacherInputs(Dataset):
    """Teacher inputs by image index; an unreadable image comes back as its error text."""

    def __init__(self, source: CacheSource, crop_source: str) -> None:
        self.source, self.crop_source = source, crop_source

    def __len__(self) -> int:
        return len(self.source.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:
        try:
            return index, self.source.teacher_input(index, self.crop_source)
        except DatasetError as err:
            return index, str(err)


class _ShardBuffer:
    """Targets of one shard as they arrive: float16 [rows, V, D] (NaN rows until filled)."""

    def __init__(self, shard: int, rows: range, views: int) -> None:
        self.shard, self.rows, self.views = shard, rows, views
        self.array: np.ndarray | None = None
        self.unreadable: list[str] = []
        self.filled = 0

    def allocate(self, dim: int) -> None:
        if self.array is None:
            self.array = np.full((len(self.rows), self.views, dim), np.nan, dtype=np.float16)

    def add(self, indices: list[int], targets: np.ndarray | None, bad: list[str]) -> None:
        if targets is not None:
            self.allocate(targets.shape[-1])
            self.array[[i - self.rows.start for i in indices]] = targets
        self.unreadable += bad
        self.filled += len(indices) + len(bad)

    @property
    def full(self) -> bool:
        return self.filled == len(self.rows)


@dataclass
class CacheBuildReport:
    """What one call of :func:`build_teacher_cache` did."""

    root: Path
    shards_written: int
    shards_skipped: int
    images_computed: int
    unreadable: list[str]
    complete: bool

    def summary(self) -> str:
        state = "complete" if self.complete else "waiting for other processes' shards"
        line = (
            f"teacher cache {self.root}: {self.shards_written} shards written, "
            f"{self.shards_skipped} already done, {self.images_computed} images embedded, "
            f"{len(self.unreadable)} unreadable skipped ({state})"
        )
        if self.unreadable:
            line += f", e.g. {self.unreadable[0]}"
        return line


def build_teacher_cache(
    root: str | os.PathLike,
    source: CacheSource,
    teacher: MultiScaleCropTeacher,
    shard_size: int = 1024,
    batch_size: int = 32,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> CacheBuildReport:
    """Embed the views of every image of ``source`` with ``teacher`` into a cache at ``root``.

    This process handles shards ``rank, rank + world_size, ...``; finished shards are skipped,
    so rerunning after a crash resumes. ``batch_size`` images are embedded per teacher pass,
    decoded by ``num_workers`` DataLoader workers. Unreadable images get NaN rows and are listed
    in the manifest. Refuses (:class:`DatasetError`) a folder holding another cache.
    """
    root = Path(root)
    plan = _plan(source, teacher, shard_size)
    existing = _read_manifest(root)
    if existing is None:
        write_json(root / MANIFEST, plan)
    else:
        reason = _mismatch(root, existing, plan)
        if reason:
            raise DatasetError(reason)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    views = teacher.spec.num_views
    num_images, num_shards = plan["num_images"], plan["num_shards"]

    def rows(shard: int) -> range:
        return range(shard * shard_size, min((shard + 1) * shard_size, num_images))

    mine = list(range(rank, num_shards, world_size))
    pending = [s for s in mine if not _shard_ok(root, s, len(rows(s)), views)]
    for shard in pending:
        _remove_stale_temporaries(root, shard)
    batches = [  # in shard order, never crossing a shard boundary
        list(rows(s)[i : i + batch_size])
        for s in pending
        for i in range(0, len(rows(s)), batch_size)
    ]
    loader = DataLoader(
        _TeacherInputs(source, teacher.spec.crop_source),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=list,
    )
    bar = tqdm(
        total=sum(len(rows(s)) for s in pending),
        desc=f"teacher cache (rank {rank})" if world_size > 1 else "teacher cache",
        unit="image",
        disable=not progress,
    )
    unreadable: list[str] = []
    computed = 0
    buffer: _ShardBuffer | None = None
    for batch in loader:
        if buffer is None:
            shard = batch[0][0] // shard_size
            buffer = _ShardBuffer(shard, rows(shard), views)
        good = [(i, x.to(device)) for i, x in batch if isinstance(x, torch.Tensor)]
        bad = [source.paths[i] for i, x in batch if not isinstance(x, torch.Tensor)]
        targets = None
        if good:
            images = [x for _, x in good]
            same_size = len({x.shape for x in images}) == 1
            targets = teacher(torch.stack(images) if same_size else images)  # [b, V, D]
            targets = targets.cpu().numpy().astype(np.float16)
            computed += len(good)
        buffer.add([i for i, _ in good], targets, bad)
        bar.update(len(batch))
        if buffer.full:
            if buffer.array is None:  # every image of the shard is unreadable
                buffer.allocate(_known_dim(root, num_shards))
            _write_shard(root, buffer.shard, buffer.array, buffer.unreadable)
            unreadable += buffer.unreadable
            buffer = None
    bar.close()
    complete = _finalize(root, plan, views)
    return CacheBuildReport(
        root, len(pending), len(mine) - len(pending), computed, unreadable, complete
    )


def _known_dim(root: Path, num_shards: int) -> int:
    for shard in range(num_shards):
        if shard_path(root, shard).is_file():
            return int(np.load(shard_path(root, shard), mmap_mode="r").shape[-1])
    raise DatasetError(
        f"cannot build teacher cache {root}: the first shard's images are all unreadable; "
        "remove them from the folder"
    )


def _write_shard(root: Path, shard: int, array: np.ndarray, unreadable: list[str]) -> None:
    """Sidecar first, then the array: the .npy existing marks the shard finished."""
    write_json(shard_path(root, shard, ".json"), {"rows": len(array), "unreadable": unreadable})
    with atomic_path(shard_path(root, shard)) as tmp:
        np.save(tmp, array)


def _finalize(root: Path, plan: dict[str, Any], views: int) -> bool:
    """Write the completed manifest once every shard exists; False while some are missing."""
    shard_size, num_images = plan["shard_size"], plan["num_images"]
    sizes = [min(shard_size, num_images - s * shard_size) for s in range(plan["num_shards"])]
    if not all(_shard_ok(root, s, n, views) for s, n in enumerate(sizes)):
        return False
    unreadable: list[str] = []
    for shard in range(plan["num_shards"]):
        sidecar = json.loads(shard_path(root, shard, ".json").read_text(encoding="utf-8"))
        unreadable += sidecar["unreadable"]
    dim = int(np.load(shard_path(root, 0), mmap_mode="r").shape[-1]) if sizes else 0
    manifest = {
        **plan,
        "complete": True,
        "dim": dim,
        "unreadable": unreadable,
        "counts": {
            "images": num_images,
            "embedded": num_images - len(unreadable),
            "unreadable": len(unreadable),
            "shards": plan["num_shards"],
            "teacher_forwards": (num_images - len(unreadable)) * views,
        },
    }
    write_json(root / MANIFEST, manifest)
    return True


class TeacherCache:
    """Read-only, memory-mapped view of a finished cache: ``cache[i]`` is image i's targets,
    float16 [V, D]; :meth:`batch` gives float32 [B, V, D].

    Pass the run's ``teacher`` ({"name", "sha256"}), ``views`` (``ViewSpec.record()``) and
    optionally ``preprocess`` to have a cache built otherwise refused. Shards are opened on first
    use (at most ``max_open`` at a time); pickling drops the open maps, so DataLoader workers
    receive a few fields and reopen what they touch.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        teacher: dict[str, str] | None = None,
        views: dict[str, Any] | None = None,
        preprocess: dict[str, Any] | None = None,
        max_open: int = 64,
    ) -> None:
        self.root = Path(root)
        manifest = _read_manifest(self.root)
        if manifest is None:
            raise DatasetError(
                f"no teacher cache at {self.root} ({MANIFEST} missing); build it first"
            )
        if not manifest.get("complete"):
            done = sum(shard_path(self.root, s).is_file() for s in range(manifest["num_shards"]))
            raise DatasetError(
                f"teacher cache {self.root} is incomplete ({done} of {manifest['num_shards']} "
                "shards); rerun the cache build with the same arguments to finish it (it resumes)"
            )
        wanted = {"teacher": teacher, "views": views, "preprocess": preprocess}
        reason = _mismatch(self.root, manifest, {k: v for k, v in wanted.items() if v is not None})
        if reason:
            raise DatasetError(reason)
        self.shard_size = int(manifest["shard_size"])
        self.num_images = int(manifest["num_images"])
        self.num_views = int(manifest["views"]["count"])
        self.dim = int(manifest["dim"])
        self.images_sha256 = manifest["images_sha256"]
        self.teacher = manifest["teacher"]
        self.unreadable = frozenset(manifest["unreadable"])
        self.max_open = max_open
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()
        self._index: dict[str, int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": OrderedDict(), "_index": None}

    def __len__(self) -> int:
        return self.num_images

    def check_images(self, paths: Sequence[str]) -> None:
        """Refuse an image list other than the one the cache was built from."""
        built = {"images_sha256": self.images_sha256, "num_images": self.num_images}
        wanted = {"images_sha256": paths_sha256(paths), "num_images": len(paths)}
        reason = _mismatch(self.root, built, wanted)
        if reason:
            raise DatasetError(reason)

    def index_of(self, path: str) -> int:
        """Row index of a relative image path (the manifest's mapping, read on first use)."""
        if self._index is None:
            manifest = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
            self._index = {p: s * self.shard_size + r for p, (s, r) in manifest["images"].items()}
        if path not in self._index:
            raise DatasetError(f"image {path} is not in teacher cache {self.root}; rebuild it")
        return self._index[path]

    def _shard(self, shard: int) -> np.ndarray:
        if shard in self._maps:
            self._maps.move_to_end(shard)
        else:
            self._maps[shard] = np.load(shard_path(self.root, shard), mmap_mode="r")
            if len(self._maps) > self.max_open:
                self._maps.popitem(last=False)
        return self._maps[shard]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.num_images:
            raise IndexError(f"image index {index} outside 0..{self.num_images - 1}")
        shard, row = divmod(index, self.shard_size)
        values = np.array(self._shard(shard)[row])  # copy out of the map: [V, D] float16
        if np.isnan(values[0, 0]):
            raise DatasetError(
                f"image index {index} was unreadable when teacher cache {self.root} was built; "
                "fix or remove the file and rebuild"
            )
        return values

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Targets of ``indices`` as float32 [B, V, D]."""
        return torch.from_numpy(np.stack([self[int(i)] for i in indices])).float()
