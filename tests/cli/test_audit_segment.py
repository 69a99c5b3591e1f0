"""The newcomer audit's ``vocaseg segment`` cases as a test matrix (one case per row that was not
"ok": inputs, vocabulary, options, output locations, and the findings about segment), each
checking the exit code, a single ``error:`` line, no traceback, and that an earlier complete set
in the output folder is still there, byte for byte. Then: --skip-existing, the atomic set
(a failure or Ctrl-C between files), a full disk, naming, and video input through the CLI."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vocaseg.io as vocaseg_io
from cli_helpers import run_cli
from vocaseg.data import imageio
from vocaseg.inference import image_outputs

FAST = ["--set", "short_side=48", "--set", "window=0", "--set", "templates=single"]
EARLIER = {"earlier_label.png": b"label", "earlier_overlay.png": b"overlay", "earlier.json": b"{}"}
MESSAGE_PREFIXES = ("error: ", "note: ", "warning: ", "interrupted: ")

pytestmark = pytest.mark.usefixtures("offline_cache", "pixel_limit")


@pytest.fixture
def pixel_limit(monkeypatch):
    """``--max-pixels`` changes a process-wide limit: restore it (and PIL's) after each test."""
    monkeypatch.setattr(imageio, "_max_pixels", imageio._max_pixels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


# ---------------------------------------------------------------------------------------------
# inputs as a user has them


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int, pixels: bool = True) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` (a few kB of zeros), or only its header."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = b""
    if pixels:
        row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
        packer = zlib.compressobj(9)
        body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    idat = _png_chunk(b"IDAT", body) if pixels else b""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + idat + _png_chunk(b"IEND", b"")


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass
class Scene:
    """Input files for the cases, under ``root``; ``out`` holds an earlier complete set."""

    root: Path
    out: Path
    weights: Path
    files: dict[str, Path] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Path:
        return self.files[name]

    def base(self) -> list[Any]:
        return ["--weights", self.weights, "-o", self.out, *FAST]


@pytest.fixture
def scene(tmp_path, tiny_clip_file) -> Scene:
    root = tmp_path / "in"
    root.mkdir()
    scene = Scene(root, tmp_path / "out", tiny_clip_file)
    scene.out.mkdir()
    for name, content in EARLIER.items():
        (scene.out / name).write_bytes(content)

    def put(name: str, content: bytes | np.ndarray) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, np.ndarray):
            Image.fromarray(content).save(path)
        else:
            path.write_bytes(content)
        scene.files[name] = path
        return path

    good = _jpeg_bytes(_noise(48, 64, 0))
    put("good.jpg", good)
    put("good2.png", _noise(40, 56, 1))
    put("corrupt.jpg", good[: len(good) // 3])
    garbage = bytearray(good)
    garbage[len(good) // 2 : len(good) // 2 + 200] = _noise(1, 200, 2)[0, :, 0].tobytes()
    put("garbage.jpg", bytes(garbage))
    put("zero.png", b"")
    put("text.png", b"just some text, not an image\n")
    put("bomb.png", bomb_png(20000, 20000))
    put("bomb_header.png", bomb_png(20000, 20000, pixels=False))
    put("mixed/a_good.png", _noise(40, 56, 3))
    put("mixed/b_bomb.png", bomb_png(20000, 20000))
    put("mixed/c_good.png", _noise(40, 56, 4))
    put("d1/x.jpg", _noise(32, 40, 5))
    put("d2/x.jpg", _noise(36, 40, 6))
    put("nested/sub/n.png", _noise(32, 32, 7))
    (root / "emptydir").mkdir()
    scene.files["emptydir"] = root / "emptydir"
    scene.files["nested"] = root / "nested"
    scene.files["mixed"] = root / "mixed"
    put("classes_dir/keep.txt", b"x")
    scene.files["classes_dir"] = root / "classes_dir"
    put("empty_classes.txt", b"# nothing here\n\n")
    put("bom_classes.txt", "\ufeffcat\ndog\n".encode())
    put("latin_classes.txt", "caf\xe9\ndog\n".encode("latin-1"))
    put("comma_classes.txt", b"cat, dog\nfloor\n")
    put("a_file", b"not a folder")
    return scene


def message_lines(err: str) -> list[str]:
    """What a user reads on stderr: lines without the progress bars' carriage-return updates."""
    lines = []
    for line in err.splitlines():
        text = line.split("\r")[-1].strip()
        if text and not text.startswith("segment:"):
            lines.append(text)
    return lines


def assert_clean(code: int, out: str, err: str, rc: int, fragments: tuple[str, ...] = ()) -> None:
    """Exit code ``rc``; no traceback; every line a message; one error line naming the problem
    (with its fragments) when ``rc`` is not 0, none when it is."""
    assert code == rc, (code, out, err)
    assert "Traceback" not in out + err and "Error:" not in out + err.replace("error:", ""), err
    lines = message_lines(err)
    assert all(line.startswith(MESSAGE_PREFIXES) for line in lines), lines
    errors = [line for line in lines if line.startswith(("error: ", "interrupted: "))]
    assert len(errors) == (rc != 0), lines
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def assert_earlier_kept(out: Path) -> None:
    """The earlier complete set is untouched and no temporary file is left behind."""
    for name, content in EARLIER.items():
        assert (out / name).read_bytes() == content, name
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name]


def outputs(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - set(EARLIER)


def image_set(*names: str) -> set[str]:
    return {f"{n}{s}" for n in names for s in ("_label.png", "_overlay.png", ".json")}


# ---------------------------------------------------------------------------------------------
# the matrix

Check = Callable[[Scene, str, str], None]


@dataclass(frozen=True)
class Case:
    """An audit row: the arguments after ``segment`` (from the scene), the exit code, text the
    error line must hold, and a check of what was written."""

    id: str
    argv: Callable[[Scene], list[Any]]
    rc: int
    fragments: tuple[str, ...] = ()
    check: Check | None = None
    classes: bool = True  # add --classes "cat, dog" unless the case sets the vocabulary


def _written(*names: str) -> Check:
    def check(scene: Scene, out: str, err: str) -> None:
        assert outputs(scene.out) == image_set(*names)

    return check


def _nothing_written(scene: Scene, out: str, err: str) -> None:
    assert outputs(scene.out) == set()


def _two_x(scene: Scene, out: str, err: str) -> None:
    assert outputs(scene.out) == image_set("x", "x_2")
    assert json.loads((scene.out / "x.json").read_text())["image"] == str(scene["d1/x.jpg"])
    assert json.loads((scene.out / "x_2.json").read_text())["image"] == str(scene["d2/x.jpg"])


def _once(scene: Scene, out: str, err: str) -> None:
    assert outputs(scene.out) == image_set("good")
    assert "segmented 1 image into" in out
    notes = [line for line in message_lines(err) if line.startswith("note: ")]
    assert len(notes) == 1 and "good.jpg (2 times)" in notes[0], notes


def _classes(*names: str, background: bool = False) -> Check:
    def check(scene: Scene, out: str, err: str) -> None:
        record = json.loads((scene.out / "good.json").read_text())
        assert [c["name"] for c in record["classes"]] == list(names)
        assert sum(c["area"] for c in record["classes"]) == pytest.approx(1.0)
        assert record["added_classes"] == (["background"] if background else [])

    return check


def _one_class_warning(scene: Scene, out: str, err: str) -> None:
    _classes("cat")(scene, out, err)
    warnings = [line for line in message_lines(err) if line.startswith("warning: ")]
    assert len(warnings) == 1 and "every pixel" in warnings[0]


def _good(scene: Scene) -> list[Any]:
    return [scene["good.jpg"]]


LONG_NAME = " ".join(["word"] * 200)

CASES = [
    # 3.1 images and inputs
    Case("B01-missing-file", lambda s: [s.root / "nope.jpg"], 2, ("nope.jpg", "not found")),
    Case("B02-empty-folder", lambda s: [s["emptydir"]], 2, ("emptydir", "holds no image")),
    Case("B03-truncated-jpeg", lambda s: [s["corrupt.jpg"]], 2, ("corrupt.jpg", "truncated")),
    Case("B04-garbage-bytes", lambda s: [s["garbage.jpg"]], 2, ("garbage.jpg", "damaged")),
    Case("B05-zero-bytes", lambda s: [s["zero.png"]], 2, ("zero.png", "empty file")),
    Case("B08-text-as-png", lambda s: [s["text.png"]], 2, ("text.png", "not an image")),
    Case(
        "B09-bomb",
        lambda s: [s["bomb.png"]],
        2,
        ("bomb.png", "400,000,000 pixels", "--max-pixels 400000000"),
    ),
    Case("B10-bomb-header", lambda s: [s["bomb_header.png"]], 2, ("bomb_header.png", "limit")),
    Case(
        "B13-good-bomb-good",
        lambda s: [s["mixed"], "--batch-size", "4"],
        1,
        ("1 of 3 images failed, 2 written", "b_bomb.png", "--max-pixels"),
        _written("a_good", "c_good"),
    ),
    Case("B14-same-stem", lambda s: [s["d1/x.jpg"], s["d2/x.jpg"]], 0, (), _two_x),
    Case("B15-same-file-twice", lambda s: [s["good.jpg"], s["good.jpg"]], 0, (), _once),
    Case("S04-stdin", lambda s: ["-"], 2, ("standard input", "save it to a file")),
    Case(
        "S05-url",
        lambda s: ["https://example.com/cat.jpg"],
        2,
        ("https://example.com/cat.jpg", "download it"),
    ),
    Case("S07-only-sub-folders", lambda s: [s["nested"]], 2, ("sub-folders hold 1", "--recursive")),
    # 3.2 vocabulary
    Case("V01-empty", lambda s: [*_good(s), "--classes", ""], 2, ("empty",), classes=False),
    Case(
        "V02-separators",
        lambda s: [*_good(s), "--classes", " , ; ,"],
        2,
        ("empty name",),
        classes=False,
    ),
    Case(
        "V03-duplicate",
        lambda s: [*_good(s), "--classes", "cat, cat, dog"],
        2,
        ("twice",),
        classes=False,
    ),
    Case(
        "V04-duplicate-synonym",
        lambda s: [*_good(s), "--classes", "cat; kitty, dog; kitty"],
        2,
        ("kitty",),
        classes=False,
    ),
    Case("V05-case", lambda s: [*_good(s), "--classes", "Cat, cat"], 2, ("twice",), classes=False),
    Case(
        "V06-one-class",
        lambda s: [*_good(s), "--classes", "cat"],
        0,
        (),
        _one_class_warning,
        classes=False,
    ),
    Case(
        "V07-non-latin",
        lambda s: [*_good(s), "--classes", "猫, собака, 🐱 emoji, café"],
        0,
        (),
        _classes("猫", "собака", "🐱 emoji", "café"),
        classes=False,
    ),
    Case(
        "V08-long-name",
        lambda s: [*_good(s), "--classes", f"cat, {LONG_NAME}"],
        2,
        ("tokens", "shorten the name"),
        classes=False,
    ),
    Case(
        "V09-classes-file-missing",
        lambda s: [*_good(s), "--classes-file", s.root / "nope.txt"],
        2,
        ("nope.txt", "not found"),
        classes=False,
    ),
    Case(
        "V10-classes-file-folder",
        lambda s: [*_good(s), "--classes-file", s["classes_dir"]],
        2,
        ("classes_dir", "is a folder"),
        classes=False,
    ),
    Case(
        "V11-classes-file-empty",
        lambda s: [*_good(s), "--classes-file", s["empty_classes.txt"]],
        2,
        ("names no classes",),
        classes=False,
    ),
    Case(
        "V12-both-vocabulary-options",
        lambda s: [*_good(s), "--classes", "a, b", "--classes-file", s["bom_classes.txt"]],
        2,
        ("not allowed with",),
        classes=False,
    ),
    Case("V13-no-vocabulary", lambda s: _good(s), 2, ("required",), classes=False),
    Case(
        "V-classes-file-comma-line",
        lambda s: [*_good(s), "--classes-file", s["comma_classes.txt"]],
        0,
        (),
        _classes("cat, dog", "floor"),
        classes=False,
    ),
    Case(
        "V-classes-file-bom",
        lambda s: [*_good(s), "--classes-file", s["bom_classes.txt"]],
        0,
        (),
        _classes("cat", "dog"),
        classes=False,
    ),
    Case(
        "V-classes-file-latin1",
        lambda s: [*_good(s), "--classes-file", s["latin_classes.txt"]],
        2,
        ("UTF-8",),
        classes=False,
    ),
    # 3.3 options and settings
    Case("M01-unknown-model", lambda s: [*_good(s), "--model", "maskclp"], 2, ("unknown model",)),
    Case("M02-unknown-key", lambda s: [*_good(s), "--set", "shortside=448"], 2, ("shortside",)),
    Case("M03-not-a-number", lambda s: [*_good(s), "--set", "short_side=big"], 2, ("integer",)),
    Case("M04-no-value", lambda s: [*_good(s), "--set", "short_side"], 2, ("short_side",)),
    Case("M05-negative-size", lambda s: [*_good(s), "--set", "short_side=-5"], 2, ("short_side",)),
    Case(
        "M07-fractional-size", lambda s: [*_good(s), "--set", "short_side=448.5"], 2, ("integer",)
    ),
    Case("M08-bad-choice", lambda s: [*_good(s), "--set", "attn=foo"], 2, ("foo",)),
    Case("M09-batch-negative", lambda s: [*_good(s), "--batch-size", "-1"], 2, ("--batch-size",)),
    Case("M10-batch-zero", lambda s: [*_good(s), "--batch-size", "0"], 2, ("--batch-size",)),
    Case("M12-device-gpu0", lambda s: [*_good(s), "--device", "gpu0"], 2, ("gpu0",)),
    Case("M13-alpha-5", lambda s: [*_good(s), "--alpha", "5"], 2, ("--alpha", "0 to 1")),
    Case("M13-alpha-negative", lambda s: [*_good(s), "--alpha", "-0.1"], 2, ("--alpha",)),
    Case("M13-alpha-nan", lambda s: [*_good(s), "--alpha", "nan"], 2, ("--alpha",)),
    Case("M16-untrained-method", lambda s: [*_good(s), "--model", "tagclip"], 2, ("trained",)),
    Case(
        "M-prob-thd-adds-background",
        lambda s: [*_good(s), "--set", "prob_thd=0.2"],
        0,
        (),
        _classes("cat", "dog", "background", background=True),
    ),
    Case("M-max-pixels-zero", lambda s: [*_good(s), "--max-pixels", "0"], 2, ("--max-pixels",)),
    Case(
        "M-max-pixels-allows-bomb-size",
        lambda s: [s["bomb_header.png"], "--max-pixels", "400000000"],
        2,
        ("bomb_header.png", "truncated"),
    ),
    Case("M-every-zero", lambda s: [*_good(s), "--every", "0"], 2, ("--every",)),
    Case("M-end-before-start", lambda s: [*_good(s), "--start", "2", "--end", "1"], 2, ("--end",)),
    Case(
        "M-video-and-recursive",
        lambda s: [s["nested"], "--video", "--recursive"],
        2,
        ("--video", "--recursive"),
    ),
    # 3.4 output locations
    Case(
        "O01-output-is-a-file",
        lambda s: [*_good(s), "-o", s["a_file"]],
        2,
        ("a_file", "is a file"),
    ),
    Case(
        "O02-output-below-a-file",
        lambda s: [*_good(s), "-o", s["a_file"] / "sub"],
        2,
        ("output folder", "Not a directory"),
    ),
]
if Path("/proc/self").is_dir():
    CASES.append(
        Case("O03-output-in-proc", lambda s: [*_good(s), "-o", "/proc/x"], 2, ("/proc/x",))
    )
if not torch.cuda.is_available():
    CASES.append(Case("M11-no-cuda", lambda s: [*_good(s), "--device", "cuda"], 2, ("CUDA",)))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_audit_case(case: Case, scene: Scene, capsys):
    vocabulary = ["--classes", "cat, dog"] if case.classes else []
    argv = [*case.argv(scene), *vocabulary]
    # the case's options come last and win (its -o keeps the earlier set out of its way)
    code, out, err = run_cli(capsys, "segment", *scene.base(), *argv)
    assert_clean(code, out, err, case.rc, case.fragments)
    assert_earlier_kept(scene.out)
    if case.check is not None:
        case.check(scene, out, err)
    elif case.rc:
        assert outputs(scene.out) == set()


def test_read_only_output_folder_is_one_line(scene, capsys, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(vocaseg_io.tempfile, "TemporaryFile", read_only)
    code, out, err = run_cli(capsys, "segment", *_good(scene), "--classes", "a, b", *scene.base())
    assert_clean(code, out, err, 2, ("cannot write to output folder", "Read-only file system"))
    assert_earlier_kept(scene.out)


# ---------------------------------------------------------------------------------------------
# folders, names, skip-existing


def test_recursive_mirrors_sub_folders_and_skips_the_output_folder(scene, capsys):
    out = scene.root / "nested" / "results"  # inside the tree it reads
    argv = [scene["nested"], "--recursive", "--classes", "a, b", "--weights", scene.weights]
    code, stdout, err = run_cli(capsys, "segment", *argv, "-o", out, *FAST)
    assert_clean(code, stdout, err, 0)
    assert outputs(out) == image_set("sub/n")
    code, stdout, err = run_cli(capsys, "segment", *argv, "-o", out, *FAST)  # not its own outputs
    assert_clean(code, stdout, err, 0)
    assert "segmented 1 image" in stdout and outputs(out) == image_set("sub/n")


def test_output_names_are_stable_and_unique():
    from vocaseg.cli.segment_inputs import output_names

    names = output_names([Path(p) for p in ("x", "x", "x_2", "X", "s/x")])
    assert [n.as_posix() for n in names] == ["x", "x_3", "x_2", "X_4", "s/x"]


def test_skip_existing_continues_a_folder(scene, capsys):
    folder = scene["mixed"]
    (folder / "b_bomb.png").unlink()
    argv = ["segment", folder, "--classes", "a, b", *scene.base()]
    code, out, err = run_cli(capsys, *argv)
    assert_clean(code, out, err, 0)
    first = {name: (scene.out / name).stat().st_mtime_ns for name in image_set("a_good")}
    (scene.out / "c_good.json").unlink()  # an incomplete set: redone
    Image.fromarray(_noise(40, 56, 9)).save(folder / "d_new.png")
    code, out, err = run_cli(capsys, *argv, "--skip-existing")
    assert_clean(code, out, err, 0)
    assert "segmented 2 images" in out and "1 input skipped" in out
    assert outputs(scene.out) == image_set("a_good", "c_good", "d_new")
    assert {n: (scene.out / n).stat().st_mtime_ns for n in first} == first  # not rewritten
    code, out, err = run_cli(capsys, *argv, "--skip-existing")
    assert_clean(code, out, err, 0)
    assert out.startswith("nothing to do: every input (3) has complete outputs")


def test_outputs_in_the_input_folder_are_not_inputs_next_time(scene, capsys):
    folder = scene["d1/x.jpg"].parent
    argv = ["segment", folder, "--classes", "a, b", "--weights", scene.weights, "-o", folder, *FAST]
    assert_clean(*run_cli(capsys, *argv), 0)
    code, out, err = run_cli(capsys, *argv, "--skip-existing")
    assert_clean(code, out, err, 0)
    assert out.startswith("nothing to do: every input (1) has complete outputs")
    assert any(
        "2 files in -o written by an earlier run left out" in line for line in message_lines(err)
    )
    assert sorted(p.name for p in folder.iterdir()) == ["x.jpg", *sorted(image_set("x"))]


# ---------------------------------------------------------------------------------------------
# the set is published whole; write errors and interrupts


def _fail_on_second_overlay(monkeypatch, error: BaseException) -> None:
    """Make the overlay writer fail for the second image (after its label PNG is written)."""
    real = image_outputs.overlay
    calls = []

    def overlay(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(image_outputs, "overlay", overlay)


@pytest.mark.parametrize(
    ("error", "rc", "fragments"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device"),
            3,
            ("disk full", "ENOSPC", "mounted at"),
        ),
        (OSError(errno.EIO, "Input/output error"), 3, ("Input/output error", "EIO")),
        (KeyboardInterrupt(), 130, ("interrupted", "--skip-existing")),
    ],
    ids=["disk-full", "io-error", "ctrl-c"],
)
def test_a_failure_between_files_leaves_whole_sets_only(
    scene, capsys, monkeypatch, error, rc, fragments
):
    folder = scene["mixed"]
    (folder / "b_bomb.png").unlink()
    Image.fromarray(_noise(40, 56, 10)).save(folder / "d_more.png")
    _fail_on_second_overlay(monkeypatch, error)
    code, out, err = run_cli(
        capsys, "segment", folder, "--classes", "a, b", "--batch-size", "1", *scene.base()
    )
    assert_clean(code, out, err, rc, (*fragments, "1 image written"))
    assert_earlier_kept(scene.out)
    assert outputs(scene.out) == image_set("a_good")  # nothing of c_good, d_more not started


def test_disk_full_names_the_path_and_keeps_the_older_set(scene, capsys, monkeypatch):
    argv = ["segment", *_good(scene), "--classes", "a, b", *scene.base()]
    assert run_cli(capsys, *argv)[0] == 0
    before = {name: (scene.out / name).read_bytes() for name in image_set("good")}

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    code, out, err = run_cli(capsys, *argv)
    assert_clean(code, out, err, 3, ("good_*", "No space left on device", "0 images written"))
    assert {name: (scene.out / name).read_bytes() for name in image_set("good")} == before


def test_a_failed_rename_leaves_no_part_of_the_set(scene, capsys, monkeypatch):
    argv = ["segment", *_good(scene), "--classes", "a, b", *scene.base()]
    assert run_cli(capsys, *argv)[0] == 0
    real = os.replace

    def replace(source, target):
        if str(target).endswith("good_overlay.png"):  # after the label was renamed
            raise OSError(errno.EIO, "Input/output error", str(target))
        return real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    code, out, err = run_cli(capsys, *argv)
    assert_clean(code, out, err, 3, ("good_overlay.png", "EIO"))
    assert outputs(scene.out) == set()  # the older set lost its JSON first, then the rest
    assert_earlier_kept(scene.out)


@pytest.mark.skipif(sys.platform == "win32", reason="os.kill(SIGINT) ends the process on Windows")
def test_ctrl_c_during_the_renames_waits_for_the_whole_set(scene, capsys, monkeypatch):
    """A real SIGINT arriving between the label's and the overlay's rename is held until the
    JSON is published: the set is complete and counted, the next image is not started."""
    folder = scene["mixed"]
    (folder / "b_bomb.png").unlink()
    real = os.replace

    def replace(source, target):
        result = real(source, target)
        if str(target).endswith("a_good_label.png"):
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(os, "replace", replace)
    code, out, err = run_cli(
        capsys, "segment", folder, "--classes", "a, b", "--batch-size", "1", *scene.base()
    )
    assert_clean(code, out, err, 130, ("interrupted: 1 image written",))
    assert outputs(scene.out) == image_set("a_good")
    assert_earlier_kept(scene.out)


# ---------------------------------------------------------------------------------------------
# video through the command line

av_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("av") is None, reason="needs PyAV (vocaseg[video])"
)


@av_missing
def test_video_and_images_in_one_call(scene, capsys):
    from inference.video_helpers import CLASSES, decode, moving_square, write_video
    from vocaseg.inference.segmenter import Segmenter
    from vocaseg.inference.video_write import read_label_archive

    clip = write_video(scene.root / "clip.mp4", moving_square(9, 48, 64), rate=10, audio=True)
    code, out, err = run_cli(
        capsys,
        "segment",
        clip,
        *_good(scene),
        "--classes",
        "cat, sofa; couch, floor",
        "--batch-size",
        "4",
        *scene.base(),
    )
    assert_clean(code, out, err, 0)
    assert "segmented 1 image and 1 video" in out
    assert any(line.startswith("note: ") and "audio" in line for line in message_lines(err))
    assert outputs(scene.out) == image_set("good") | {
        "clip_overlay.mp4",
        "clip_labels.zip",
        "clip.json",
    }
    frames = decode(scene.out / "clip_overlay.mp4")
    assert len(frames) == 9 and frames[0].shape == (48, 64, 3)
    with __import__("av").open(str(scene.out / "clip_overlay.mp4")) as container:
        assert container.streams.video[0].average_rate == 10
    labels = read_label_archive(scene.out / "clip_labels.zip")
    segmenter = Segmenter.from_pretrained(
        "maskclip", weights=scene.weights, short_side=48, window=0, templates="single"
    )  # as the command line builds it (an OpenAI state dict implies 64-wide heads)
    segmenter.set_vocabulary(CLASSES)
    assert len(labels) == 9
    for label, frame in zip(labels, decode(clip)):
        assert np.array_equal(label, segmenter(frame).label)
    record = json.loads((scene.out / "clip.json").read_text())
    assert record["frame_count"] == 9 and record["fps"] == 10 and record["model"] == "maskclip"
    assert record["background"]["id"] == "bg:none" and record["settings"]["short_side"] == 48
    for entry in record["frames"]:
        assert sum(entry["areas"]) == pytest.approx(1.0)


@av_missing
def test_video_options_gif_and_frame_folder(scene, capsys):
    from inference.video_helpers import moving_square

    frames = moving_square(8, 32, 48)
    gif = scene.root / "anim.gif"
    Image.fromarray(frames[0]).save(
        gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]], duration=100
    )
    folder = scene.root / "frames"
    folder.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"f{index}.png")
    code, out, err = run_cli(
        capsys, "segment", gif, folder, "--video", "--every", "2", "--start", "0.2",
        "--fps", "10", "--classes", "a, b", *scene.base(),
    )  # fmt: skip
    assert_clean(code, out, err, 0)
    assert "segmented 2 videos" in out
    for name, count in (("anim", 6), ("frames", 6)):
        record = json.loads((scene.out / f"{name}.json").read_text())
        assert record["frame_count"] == count and record["every"] == 2
        assert [f["segmented"] for f in record["frames"]] == [True, False] * 3


@av_missing
@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"not a video at all", ("fake.mp4", "not a video file")),
        (None, ("fake.mp4", "no video stream")),
    ],
    ids=["not-a-video", "audio-only"],
)
def test_bad_videos_are_one_line(scene, capsys, content, fragments):
    fake = scene.root / "fake.mp4"
    if content is None:  # an mp4 with only an audio stream
        av = pytest.importorskip("av")
        with av.open(str(fake), "w") as container:
            sound = container.add_stream("aac", rate=8000, layout="mono")
            chunk = av.AudioFrame.from_ndarray(
                np.zeros((1, 8000), np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate = 8000
            for packet in [*sound.encode(chunk), *sound.encode()]:
                container.mux(packet)
    else:
        fake.write_bytes(content)
    code, out, err = run_cli(capsys, "segment", fake, "--classes", "a, b", *scene.base())
    assert_clean(code, out, err, 2, fragments)
    code, out, err = run_cli(
        capsys, "segment", fake, *_good(scene), "--classes", "a, b", *scene.base()
    )
    assert_clean(code, out, err, 1, ("1 of 2 inputs failed", *fragments))
    assert outputs(scene.out) == image_set("good")


@av_missing
def test_disk_full_while_writing_a_video_is_exit_3_and_leaves_no_file(scene, capsys, monkeypatch):
    from inference.video_helpers import moving_square, write_video
    from vocaseg.inference import video_write

    clip = write_video(scene.root / "clip.mp4", moving_square(6, 32, 48))
    real = video_write.OverlayVideoWriter.write
    calls = []

    def write(self, rgb):
        calls.append(1)
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rgb)

    monkeypatch.setattr(video_write.OverlayVideoWriter, "write", write)
    code, out, err = run_cli(
        capsys, "segment", *_good(scene), clip, "--classes", "a, b", *scene.base()
    )
    assert_clean(code, out, err, 3, ("clip_overlay.mp4", "disk full", "1 image written"))
    assert outputs(scene.out) == image_set("good")  # nothing of the video
    assert_earlier_kept(scene.out)


def test_missing_video_extra(scene, capsys, monkeypatch):
    """Videos alone: one line before the model loads (exit 2). Beside images: the images are
    written and each video is a failure naming the file and the fix (exit 1)."""
    import builtins

    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    clip = scene.root / "clip.mp4"
    clip.write_bytes(b"\0" * 64)
    code, out, err = run_cli(
        capsys, "segment", clip, "--classes", "a, b", "--weights", scene.root / "nothing.pt",
        "-o", scene.out,
    )  # fmt: skip
    assert_clean(code, out, err, 2, ("pip install 'vocaseg[video]'",))
    code, out, err = run_cli(
        capsys, "segment", clip, *_good(scene), "--classes", "a, b", *scene.base()
    )
    assert_clean(code, out, err, 1, ("1 of 2 inputs failed", "clip.mp4", "vocaseg[video]"))
    assert outputs(scene.out) == image_set("good")
    assert_earlier_kept(scene.out)


# ---------------------------------------------------------------------------------------------
# the whole record, and a pipe closed by its reader


def test_the_json_records_model_weights_clip_background_and_settings(scene, capsys):
    code, out, err = run_cli(
        capsys, "segment", *_good(scene), "--classes", "cat, sofa; couch",
        "--background", "bg:threshold,prob_thd=0.3", *scene.base(),
    )  # fmt: skip
    assert_clean(code, out, err, 0)
    record = json.loads((scene.out / "good.json").read_text())
    assert record["model"] == "maskclip" and record["weights"] == str(scene.weights)
    assert record["clip"]["weights"] == str(scene.weights) and len(record["clip"]["sha256"]) == 64
    assert record["background"] == {
        "id": "bg:threshold",
        "prob_thd": 0.3,
        "area_thd": 0.0,
        "names": None,
    }
    assert record["settings"] == {
        "short_side": 48, "window": 0, "templates": "single", "background": "bg:threshold",
        "prob_thd": 0.3,
    }  # fmt: skip
    assert [c["names"] for c in record["classes"]] == [["cat"], ["sofa", "couch"], ["background"]]
    assert record["added_classes"] == ["background"] and record["background_class"] == 2
    assert (record["height"], record["width"]) == (48, 64)


@pytest.mark.slow
@pytest.mark.parametrize("streams", ["stdout", "stdout-and-stderr"])
def test_piping_into_head_keeps_working_quietly(scene, streams):
    """``vocaseg segment ... | head`` (and ``2>&1 | head``): the reader is gone before the
    progress bars and the summary are written; the run still writes everything, exits 0, and
    prints no BrokenPipeError."""
    command = [sys.executable, "-m", "vocaseg", "segment", *_good(scene), scene["good2.png"]]
    command += ["--classes", "a, b", *scene.base()]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    reader = subprocess.Popen(["head", "-c", "0"], stdin=subprocess.PIPE)
    reader.wait()  # gone: every write to the pipe fails
    stderr = reader.stdin if streams == "stdout-and-stderr" else subprocess.PIPE
    writer = subprocess.run(
        [str(part) for part in command],
        stdout=reader.stdin,
        stderr=stderr,
        text=True,
        env=env,
        timeout=300,
    )
    reader.stdin.close()
    assert writer.returncode == 0, writer.stderr
    assert "BrokenPipeError" not in (writer.stderr or "") and "Traceback" not in (
        writer.stderr or ""
    )
    assert outputs(scene.out) == image_set("good", "good2")


def test_eval_takes_max_pixels_through_the_shared_option(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["eval", "--model", "maskclip", "--dataset", "voc20", "--data-root", tmp_path / "none"]
    code, out, err = run_cli(capsys, *argv, "--max-pixels", "0")
    assert_clean(code, out, err, 2, ("--max-pixels", "positive whole number"))
    code, out, err = run_cli(capsys, *argv, "--max-pixels", "400000000")
    assert code == 2 and "Traceback" not in err  # no data there, but the limit is in force
    assert imageio.get_max_pixels() == 400_000_000
