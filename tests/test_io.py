"""Atomic writes: the target appears only when the write completes; a failure keeps the old file."""

import json

import pytest

from vocaseg.io import atomic_open, atomic_path, write_json


def test_write_json_round_trip(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1, "name": "café"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1, "name": "café"}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of the new cont")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "weights.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"\x00\x01")
        assert not target.exists()
    assert target.read_bytes() == b"\x00\x01"


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "out.json", {})
    finally:
        os.umask(mask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
