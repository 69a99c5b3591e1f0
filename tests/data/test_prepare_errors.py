"""``datasets prepare`` failures a user can cause: damaged archives, unwritable or full destinations.
Each ends in one ``error:`` line (exit 2) naming the file and the fix, and leaves no extracted copy
behind; a kept copy is reported and reused."""

from __future__ import annotations

import errno
import tarfile
import zipfile

import numpy as np
import pytest
from layouts import label, save_label

import vocaseg.data.prepare.coco as coco_converter
import vocaseg.data.prepare.common as common
import vocaseg.io as vocaseg_io
from cli_helpers import run_cli
from vocaseg.data.prepare import prepare
from vocaseg.errors import DatasetError

pytestmark = pytest.mark.filterwarnings("ignore:.*the benchmark has:UserWarning")


def _stuffthingmaps(tmp_path, count: int = 3):
    folder = tmp_path / "maps"
    for index in range(count):
        values = np.random.default_rng(index).integers(0, 10, (40, 48)).astype(np.uint8)
        save_label(folder / f"val2017/{index:012d}.png", values)
    return folder


def _archive(tmp_path, kind: str):
    folder = _stuffthingmaps(tmp_path)
    path = tmp_path / f"stuffthingmaps_trainval2017.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            for file in sorted(folder.rglob("*.png")):
                archive.write(file, file.relative_to(folder))
    else:
        with tarfile.open(path, "w:gz" if kind in ("tgz", "tar.gz") else "w") as archive:
            archive.add(folder / "val2017", "val2017")
    return path


def _one_line_error(capsys, *argv) -> str:
    code, _, err = run_cli(capsys, *argv)
    lines = [line for line in err.split("\n") if line and "\r" not in line]  # progress bars aside
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("kind", ["zip", "tgz", "tar.gz", "tar"])
@pytest.mark.parametrize("keep", [0.0, 0.2, 0.5])
def test_truncated_archive_is_one_line_and_leaves_nothing(tmp_path, capsys, kind, keep):
    path = _archive(tmp_path, kind)
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    dst = tmp_path / "dst"
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path, "--dst", dst)
    state = "empty" if keep == 0 else "truncated or damaged"
    assert f"{path} is {state} (" in err and "download it again" in err
    assert not (dst / ".extracted").exists()


def test_archive_is_removed_after_success_and_after_a_failed_conversion(tmp_path, capsys):
    path = _archive(tmp_path, "zip")
    dst = tmp_path / "dst"
    code, out, _ = run_cli(capsys, "datasets", "prepare", "coco_stuff", "--src", path, "--dst", dst)
    assert code == 1 and "val2017: 3 (expected 5000)" in out and ".extracted" not in out
    assert sorted(p.name for p in dst.iterdir()) == ["coco_stuff164k"]
    save_label(tmp_path / "bad.png", label([11]))  # an unused COCO id stops the converter
    with zipfile.ZipFile(path, "a") as archive:
        archive.write(tmp_path / "bad.png", "val2017/zzz.png")
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path, "--dst", dst)
    assert "zzz.png is not a stuffthingmap" in err
    assert not (dst / ".extracted").exists()


def test_keep_extracted_reports_and_reuses_the_copy(tmp_path, capsys):
    path = _archive(tmp_path, "tgz")
    dst = tmp_path / "dst"
    argv = ["datasets", "prepare", "coco_stuff", "--src", path, "--dst", dst, "--keep-extracted"]
    _, out, _ = run_cli(capsys, *argv)
    kept = dst / ".extracted/stuffthingmaps_trainval2017"
    assert f"note: extracted copy kept at {kept}" in out and (kept / "val2017").is_dir()
    path.write_bytes(path.read_bytes()[:100])  # the kept copy is used, the archive not re-read
    report = prepare("coco_stuff", path, dst)
    assert report.counts == {"val2017": 3} and not kept.exists()


def test_unwritable_destination_fails_before_any_work(tmp_path, capsys, monkeypatch):
    path = _archive(tmp_path, "zip")
    (tmp_path / "file").write_text("x")
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path,
                          "--dst", tmp_path / "file")  # fmt: skip
    assert f"--dst {tmp_path / 'file'} is a file" in err
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path,
                          "--dst", tmp_path / "file/sub")  # fmt: skip
    assert "cannot write to --dst" in err and "pass a folder you can write to" in err

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(vocaseg_io.tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(common, "_unpack", pytest.fail)  # no work starts
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path,
                          "--dst", tmp_path / "ro")  # fmt: skip
    assert f"cannot write to --dst {tmp_path / 'ro'} (Read-only file system)" in err


def test_disk_full_while_writing_labels_is_one_line(tmp_path, capsys, monkeypatch):
    path = _archive(tmp_path, "zip")
    dst = tmp_path / "dst"

    def full(target, label):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(coco_converter, "write_label", full)
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path, "--dst", dst)
    assert "disk full while writing" in err and "_labelTrainIds.png (No space left" in err
    assert "free space" in err and not (dst / ".extracted").exists()


def test_disk_full_while_extracting_is_one_line(tmp_path, capsys, monkeypatch):
    path = _archive(tmp_path, "zip")

    def full(src, into):
        (into / "part").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common, "_unpack", full)
    dst = tmp_path / "dst"
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", path, "--dst", dst)
    assert "disk full while writing" in err and not (dst / ".extracted").exists()


def test_prepare_option_errors(tmp_path, capsys):
    folder = _stuffthingmaps(tmp_path, 1)
    err = _one_line_error(capsys, "datasets", "prepare", "coco_stuff", "--src", folder,
                          "--dst", tmp_path / "d", "--from", "mat")  # fmt: skip
    assert "--from mat does not apply to coco_stuff" in err
    assert "pc59 (json, mat), pc60 (json, mat), pc459 (mat)" in err
    with pytest.raises(DatasetError, match=r"source .*nope not found"):
        prepare("coco_stuff", tmp_path / "nope", tmp_path / "d")


def test_files_of_a_removed_copy_are_named_inside_the_archive(tmp_path):
    folder = tmp_path / "benchmark_RELEASE/dataset"
    (folder / "cls").mkdir(parents=True)
    (folder / "train.txt").write_text("s1\n")
    (folder / "val.txt").write_text("")
    with tarfile.open(tmp_path / "benchmark.tgz", "w:gz") as archive:
        archive.add(tmp_path / "benchmark_RELEASE", "benchmark_RELEASE")
    voc = tmp_path / "root/VOCdevkit/VOC2012/ImageSets/Segmentation"
    voc.mkdir(parents=True)
    (voc / "train.txt").write_text("")
    (voc / "val.txt").write_text("")
    report = prepare("voc_aug", tmp_path / "benchmark.tgz", tmp_path / "root")
    assert report.missing == ["benchmark.tgz:benchmark_RELEASE/dataset/cls/s1.mat"]
