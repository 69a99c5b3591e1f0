"""The newcomer audit's rows for ``eval``, ``bench``, ``export``, ``convert``, ``datasets``,
weights files and closed pipes as a matrix: each case asserts its exit code, one ``error:`` line on
stderr (none when it succeeds), no traceback, and that every file present before the run (earlier
evaluation results, model folders, a benchmark record, an export, the datasets) is byte-identical
after it."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval_stub  # noqa: F401  (registers the test-only "colour_stub" method)
import vocaseg.io as vocaseg_io
from cli_helpers import run_cli
from data.layouts import label, png_header, save_label, write_voc_mmseg
from test_convert_zegclip import TINY, write_checkpoint
from vocaseg.clip.model import CLIP, CLIPConfig
from vocaseg.data import imageio
from vocaseg.engine import evaluator
from vocaseg.models.folder import save_model
from vocaseg.models.registry import create_model

CUDA = torch.cuda.is_available()
ONNX = importlib.util.find_spec("onnx") is not None
MESSAGE_PREFIXES = ("error: ", "warning: ", "note: ")
PROGRESS = ("eval:", "checking ", "text:")
FAST = ["--set", "short_side=32", "--set", "window=0", "--set", "templates=single"]

pytestmark = pytest.mark.usefixtures("offline_cache", "pixel_limit")


@pytest.fixture
def pixel_limit(monkeypatch):
    """``--max-pixels`` changes a process-wide limit: restore it (and PIL's) after each test."""
    monkeypatch.setattr(imageio, "_max_pixels", imageio._max_pixels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _tiny_clip(config: CLIPConfig) -> CLIP:
    torch.manual_seed(0)
    return CLIP(config).eval()


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """What a user has before the case runs: two trained model folders (runs/A, runs/B), the
    evaluation of runs/A under its default name and one under results/, a benchmark record, an
    export, CLIP files (ViT, ResNet), released checkpoints (plain, pickled, malicious), a tiny
    VOC, and an archive of stuffthingmaps."""
    root = tmp_path_factory.mktemp("earlier")
    stub = create_model("colour_stub")
    for run in ("A", "B"):
        save_model(stub, root / "runs" / run / "final")
    write_voc_mmseg(root / "voc", {"a": label([0, 1, 2]), "b": label([2, 3])})
    torch.save(_tiny_clip(CLIPConfig(**TINY)).state_dict(), root / "clip.pt")
    rn = CLIPConfig(**{**TINY, "image_size": 64, "vision_layers": (1, 1, 1, 1),
                       "vision_width": 16, "vision_patch_size": None, "vision_heads": 8})  # fmt: skip
    torch.save(_tiny_clip(rn).state_dict(), root / "clip_rn.pt")
    write_checkpoint(root / "zeg.pth")
    pickled = torch.load(root / "zeg.pth", weights_only=False)
    pickled["meta"]["best_score"] = np.float64(0.5)  # a numpy object, as mmcv writes
    torch.save(pickled, root / "zeg_numpy.pth")
    torch.save({"meta": {"x": _Payload()}, "state_dict": {}}, root / "evil_zeg.pth")
    torch.save({"x": _Payload()}, root / "evil.pt")
    with open(root / "evil.pkl", "wb") as handle:
        pickle.dump({"x": _Payload()}, handle, protocol=4)
    model = {"clip.ln_final.bias": torch.zeros(32), "head.w": torch.zeros(2)}
    torch.save(
        {"format": "vocaseg-train-checkpoint/1", "method": "tagclip", "model": model},
        root / "ckpt_00000010.pt",
    )
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(root / "photo.png")
    (root / "a_file").write_text("not a folder\n")
    (root / "a_folder").mkdir()
    (root / "a_folder" / "keep.txt").write_text("kept\n")
    maps = root / "maps" / "val2017"
    for index in range(2):
        values = np.random.default_rng(index).integers(0, 10, (16, 24)).astype(np.uint8)
        save_label(maps / f"{index:012d}.png", values)
    with zipfile.ZipFile(root / "stuffthingmaps_trainval2017.zip", "w") as archive:
        for file in sorted(maps.glob("*.png")):
            archive.write(file, f"val2017/{file.name}")
    with tarfile.open(root / "stuffthingmaps_trainval2017.tgz", "w:gz") as archive:
        archive.add(maps, "val2017")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        from vocaseg.cli.main import main

        evaluate = ["eval", "--dataset", "voc20", "--data-root", "voc", "--no-progress"]
        assert main([*evaluate, "--model", "runs/A/final"]) == 0  # eval/voc20-A-final
        assert main([*evaluate, "--model", "colour_stub", "-o", "results"]) == 0
        bench = ["bench", "--weights", "clip.pt", "--size", "32", "--batch-size", "1"]
        assert main([*bench, "--repeats", "1", "--warmup", "0", *FAST, "--json", "bench.json"]) == 0
    finally:
        os.chdir(cwd)
    return root


@dataclass
class Place:
    """The copy of the earlier files a case runs in (also the working folder)."""

    root: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name


@dataclass
class Case:
    """``argv(place)`` after ``prepare(place, monkeypatch)``: exit ``code``; with ``error`` set, one
    ``error:`` line holding ``fragments`` and none of ``absent``; ``out``: stdout fragments."""

    argv: Callable[[Place], list]
    code: int = 2
    fragments: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    out: tuple[str, ...] = ()
    error: bool = True
    prepare: Callable[[Place, pytest.MonkeyPatch], None] | None = None
    check: Callable[[Place, str], None] | None = None
    skip: str | None = None
    marks: list = field(default_factory=list)


def evaluate(*extra) -> Callable[[Place], list]:
    return lambda p: ["eval", "--dataset", "voc20", "--data-root", "voc", "--no-progress", *extra]


def stub_eval(*extra) -> Callable[[Place], list]:
    return evaluate("--model", "colour_stub", *extra)


def bench(*extra) -> Callable[[Place], list]:
    return lambda p: ["bench", "--weights", "clip.pt", "--size", 32, "--batch-size", 1,
                      "--repeats", 1, "--warmup", 0, *FAST, *extra]  # fmt: skip


def export(*extra) -> Callable[[Place], list]:
    return lambda p: ["export", "--weights", "clip.pt", "--classes", "cat, sofa; couch",
                      "--set", "templates=single", *extra]  # fmt: skip


def convert(*extra) -> Callable[[Place], list]:
    return lambda p: ["convert", *extra]


def prepare_coco(src: str, dst: str = "coco", *extra) -> Callable[[Place], list]:
    return lambda p: ["datasets", "prepare", "coco_stuff", "--src", src, "--dst", dst, *extra]


def check_voc(root: str, *extra) -> Callable[[Place], list]:
    return lambda p: ["datasets", "check", "voc20", "--data-root", root, *extra]


def segment_with(weights: str) -> Callable[[Place], list]:
    return lambda p: ["segment", "photo.png", "--classes", "a, b", "--weights", weights,
                      "-o", "seg", *FAST]  # fmt: skip


def read_only(place: Place, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(vocaseg_io.tempfile, "TemporaryFile", refuse)


def disk_full_on_write(place: Place, monkeypatch) -> None:
    def full(result, out):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluator, "write_results", full)


def out_of_range_label(place: Place, monkeypatch) -> None:
    save_label(place / "voc/VOCdevkit/VOC2012/SegmentationClass/b.png", label([2, 77]), True)


def bomb_image(place: Place, monkeypatch) -> None:
    (place / "voc/VOCdevkit/VOC2012/JPEGImages/b.png").write_bytes(png_header(20000, 20000))


def labels_only(place: Place, monkeypatch) -> None:
    save_label(place / "coco/coco_stuff164k/annotations/val2017/x_labelTrainIds.png", label([0]))


def truncate(name: str) -> Callable[[Place, pytest.MonkeyPatch], None]:
    def cut(place: Place, monkeypatch) -> None:
        data = (place / name).read_bytes()
        (place / name).write_bytes(data[: len(data) // 2])

    return cut


def written(*names: str) -> Callable[[Place, str], None]:
    def check(place: Place, err: str) -> None:
        for name in names:
            assert (place / name).is_file(), name

    return check


def not_run(place: Place, err: str) -> None:
    assert not (place / "PWNED").exists(), "the pickled payload ran"


def nothing_extracted(place: Place, err: str) -> None:
    assert not (place / "coco" / ".extracted").exists()


CASES = {
    # 3.4 / 3.7 eval output locations
    "E04-eval-output-is-a-file": Case(
        stub_eval("--output", "a_file"), fragments=("a_file is a file",), absent=("mIoU",)
    ),
    "E04b-eval-output-holds-results": Case(
        stub_eval("--output", "results"), fragments=("already holds evaluation", "--overwrite")
    ),
    "E05-eval-output-read-only": Case(
        stub_eval("--output", "ro"),
        prepare=read_only,
        fragments=("cannot write to output folder ro (Read-only file system)",),
    ),
    "E05b-eval-write-fails-after-the-metrics": Case(
        stub_eval("--output", "full"),
        prepare=disk_full_on_write,
        fragments=("the results above could not be written to full", "No space left"),
        out=("mIoU", "evaluated 2 images"),
    ),
    "eval-default-output-other-model": Case(
        evaluate("--model", "runs/B/final"),
        code=0,
        error=False,
        out=("results: eval/voc20-B-final",),
        check=written("eval/voc20-B-final/metrics.json"),
    ),
    "eval-default-output-same-model-again": Case(
        evaluate("--model", "runs/A/final"),
        code=0,
        error=False,
        out=("results: eval/voc20-A-final-2",),
        check=written("eval/voc20-A-final-2/metrics.json"),
    ),
    "D01-eval-dash-o": Case(
        stub_eval("-o", "new"), code=0, error=False, check=written("new/metrics.json")
    ),
    "D07-eval-background-foo": Case(
        stub_eval("--background", "bg:foo"), fragments=("bg:foo", "bg:none", "bg:threshold")
    ),
    "E01-eval-cuda-without-cuda": Case(
        stub_eval("--device", "cuda"),
        fragments=("CUDA is not available", "--device cpu"),
        skip="needs a machine without CUDA" if CUDA else None,
    ),
    "M12-eval-device-gpu0": Case(stub_eval("--device", "gpu0"), fragments=("'gpu0'", "cuda:N")),
    # 3.7 datasets and eval
    "DS-oor-eval": Case(
        stub_eval("-o", "e"),
        prepare=out_of_range_label,
        fragments=("b.png holds value(s) [77]", "--on-error skip", "--unknown-as-ignore"),
    ),
    "DS-oor-eval-skip": Case(
        stub_eval("-o", "e", "--on-error", "skip"),
        prepare=out_of_range_label,
        code=0,
        error=False,
        out=("evaluated 1 images, skipped 1",),
    ),
    "DS-oor-eval-unknown-as-ignore": Case(
        stub_eval("-o", "e", "--unknown-as-ignore"),
        prepare=out_of_range_label,
        code=0,
        error=False,
        out=("evaluated 2 images, skipped 0",),
    ),
    "DS-oor-check": Case(
        check_voc("voc"),
        prepare=out_of_range_label,
        code=1,
        error=False,
        out=("problem: label", "holds value(s) [77]", "--unknown-as-ignore", "1 problem(s)"),
    ),
    "DS-bomb-eval-skip": Case(
        stub_eval("-o", "e", "--on-error", "skip"),
        prepare=bomb_image,
        code=0,
        error=False,
        out=("evaluated 1 images, skipped 1", "400,000,000 pixels"),
    ),
    "DS-bomb-eval-stop": Case(
        stub_eval("-o", "e"), prepare=bomb_image, fragments=("b.png", "--max-pixels")
    ),
    "DS-bomb-check": Case(
        check_voc("voc"),
        prepare=bomb_image,
        code=1,
        error=False,
        out=("more than the limit", "--max-pixels 400000000", "1 problem(s)"),
    ),
    "check-count-mismatch-is-a-warning": Case(
        check_voc("voc"), code=0, error=False, out=("warning: voc20 val: found 2 samples", "ok")
    ),
    "check-count-mismatch-strict": Case(
        check_voc("voc", "--strict"), fragments=("voc20 val: found 2 samples", "1449")
    ),
    "check-names-images-vs-labels": Case(
        lambda p: ["datasets", "check", "coco_stuff", "--data-root", "coco"],
        prepare=labels_only,
        fragments=("labels found in", "but no images in"),
    ),
    "F04-prepare-without-converter": Case(
        lambda p: ["datasets", "prepare", "voc20", "--src", "x", "--dst", "d"],
        fragments=("no converter for 'voc20'", "coco_stuff"),
    ),
    "F05-prepare-source-missing": Case(
        prepare_coco("nope.zip"), fragments=("source nope.zip not found",)
    ),
    "F06b-prepare-truncated-zip": Case(
        prepare_coco("stuffthingmaps_trainval2017.zip"),
        prepare=truncate("stuffthingmaps_trainval2017.zip"),
        fragments=("is truncated or damaged", "download it again"),
        check=nothing_extracted,
    ),
    "F09-prepare-truncated-tgz": Case(
        prepare_coco("stuffthingmaps_trainval2017.tgz"),
        prepare=truncate("stuffthingmaps_trainval2017.tgz"),
        fragments=("is truncated or damaged", "download it again"),
        check=nothing_extracted,
    ),
    "F08-check-unknown-layout": Case(
        check_voc("voc", "--layout", "foo"), fragments=("no layout 'foo'", "mmseg")
    ),
    "P01-prepare-dst-read-only": Case(
        prepare_coco("stuffthingmaps_trainval2017.zip", "ro"),
        prepare=read_only,
        fragments=("cannot write to --dst ro (Read-only file system)",),
        check=nothing_extracted,
    ),
    "P01b-prepare-dst-is-a-file": Case(
        prepare_coco("stuffthingmaps_trainval2017.zip", "a_file"), fragments=("is a file",)
    ),
    # 3.8 bench
    "BN01-bench-size-0": Case(bench("--size", 0), fragments=("--size must be at least 1",)),
    "BN02-bench-batch-0": Case(bench("--batch-size", 0), fragments=("--batch-size",)),
    "BN03-bench-classes-0": Case(bench("--classes", 0), fragments=("--classes 0",)),
    "BN04-bench-repeats-0": Case(bench("--repeats", 0), fragments=("--repeats",)),
    "BN05-bench-100000-classes": Case(bench("--classes", 100000), fragments=("--classes 100000",)),
    "BN06-bench-json-is-a-folder": Case(
        bench("--json", "a_folder"), fragments=("--json a_folder is a folder",), absent=("wrote",)
    ),
    "BN09-bench-json-read-only": Case(
        bench("--json", "ro/b.json"), prepare=read_only, fragments=("Read-only file system",)
    ),
    # 3.8 export
    "X01-export-size-not-a-multiple": Case(
        export("-o", "x.onnx", "--size", 100, 100), fragments=("multiples of 16", "--size 96 96")
    ),
    "X02-export-size-0": Case(export("-o", "x.onnx", "--size", 0, 0), fragments=("multiples",)),
    "X03-export-output-is-a-folder": Case(
        export("-o", "a_folder"), fragments=("a_folder is a folder", "name a file")
    ),
    "X05-export-old-opset": Case(
        export("-o", "x.onnx", "--opset", 7), fragments=("--opset 7 is too old",)
    ),
    "X11-export-read-only": Case(
        export("-o", "ro/x.onnx"), prepare=read_only, fragments=("Read-only file system",)
    ),
    # 3.5 convert
    "CV02-convert-needs-allow-pickle": Case(
        convert("zegclip", "zeg_numpy.pth", "-o", "m", "--clip", "clip.pt"),
        fragments=("numpy", "which a weights-only load refuses", "retry with --allow-pickle"),
        absent=("\x1b", "WeightsUnpickler"),
    ),
    "CV02b-convert-with-allow-pickle": Case(
        convert("zegclip", "zeg_numpy.pth", "-o", "m", "--clip", "clip.pt", "--allow-pickle"),
        code=0,
        error=False,
        out=("method: zegclip", "wrote m"),
        check=written("m/model.json"),
    ),
    "CV02c-convert-malicious-payload": Case(
        convert("zegclip", "evil_zeg.pth", "-o", "m"),
        fragments=("the Python object posix.system", "--allow-pickle"),
        check=not_run,
    ),
    "CV02d-convert-gkc-needs-allow-pickle": Case(
        convert("gkc", "zeg_numpy.pth", "-o", "m"),
        fragments=("numpy", "retry with --allow-pickle"),
        absent=("\x1b",),
    ),
    "CV03-convert-a-clip-checkpoint": Case(
        convert("zegclip", "clip.pt", "-o", "m"), fragments=("not a ZegCLIP/TagCLIP checkpoint",)
    ),
    "CV04-convert-a-training-checkpoint": Case(
        convert("zegclip", "ckpt_00000010.pt", "-o", "m"),
        fragments=("not a ZegCLIP/TagCLIP checkpoint",),
    ),
    "CV05-convert-onto-a-trained-model": Case(
        convert("zegclip", "zeg.pth", "-o", "runs/A/final", "--clip", "clip.pt"),
        fragments=("runs/A/final already holds a model", "--overwrite"),
    ),
    "CV05b-convert-output-is-a-file": Case(
        convert("zegclip", "zeg.pth", "-o", "a_file"), fragments=("a_file is a file",)
    ),
    "CV06-convert-with-a-resnet-clip": Case(
        convert("zegclip", "zeg.pth", "-o", "m", "--clip", "clip_rn.pt"),
        fragments=("clip_rn.pt is a ResNet CLIP", "ViT"),
        absent=("got 'ViT-B/16'",),
    ),
    "convert-without-clip-hints-clip": Case(
        convert("zegclip", "zeg.pth", "-o", "m"),
        fragments=("wrong shape", "not the default ViT-B/16", "--clip"),
        marks=[pytest.mark.slow],  # builds a ViT-B/16
    ),
    "convert-missing-checkpoint": Case(
        convert("gkc", "nope.pth", "-o", "m"), fragments=("checkpoint not found: nope.pth",)
    ),
    "convert-checkpoint-is-a-folder": Case(
        convert("zegclip", "a_folder", "-o", "m"), fragments=("a_folder is a folder",)
    ),
    # 3.5 weights
    "W06-weights-malicious-pt": Case(
        segment_with("evil.pt"),
        fragments=("evil.pt without unpickling code", "posix.system"),
        absent=("Weights only load failed",),
        check=not_run,
    ),
    "W07-weights-malicious-raw-pickle": Case(
        segment_with("evil.pkl"), fragments=("evil.pkl without unpickling code",), check=not_run
    ),
    "W07b-eval-weights-malicious": Case(
        evaluate("--model", "maskclip", "--weights", "evil.pkl", *FAST),
        fragments=("evil.pkl without unpickling code",),
        check=not_run,
    ),
    "W14-weights-training-checkpoint": Case(
        segment_with("ckpt_00000010.pt"),
        fragments=("holds the weights of a vocaseg model", "--model"),
        absent=("has no 'text_projection'",),
    ),
    "W15-weights-model-folder": Case(
        segment_with("runs/A/final"),
        fragments=("holds a 'colour_stub' model", "--model runs/A/final"),
    ),
}


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def message_lines(err: str) -> list[str]:
    """What a user reads on stderr: lines without the progress bars' carriage-return updates."""
    lines = []
    for line in err.splitlines():
        text = line.split("\r")[-1].strip()
        if text and not text.startswith(PROGRESS):
            lines.append(text)
    return lines


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=case.marks) for name, case in CASES.items()]
)
def test_audit_row(name, earlier, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    if case.skip:
        pytest.skip(case.skip)
    if case.argv(Place(tmp_path))[0] == "export" and not ONNX:
        pytest.skip("export needs the onnx package")
    place = Place(tmp_path / "place")
    shutil.copytree(earlier, place.root)
    monkeypatch.chdir(place.root)
    if case.prepare is not None:
        case.prepare(place, monkeypatch)
    before = snapshot(place.root)

    code, out, err = run_cli(capsys, *case.argv(place))
    monkeypatch.undo()

    assert code == case.code, (code, out, err)
    assert "Traceback" not in out + err
    lines = message_lines(err)
    assert all(line.startswith(MESSAGE_PREFIXES) for line in lines), lines
    assert not any("pickle protocol" in line for line in lines), lines
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == int(case.error), lines
    for fragment in case.fragments:
        assert fragment in errors[0], (fragment, errors[0])
    for fragment in case.absent:
        assert fragment not in (errors[0] if errors else out), (fragment, errors, out)
    for fragment in case.out:
        assert fragment in out, (fragment, out)
    after = snapshot(place.root)
    assert {k: after.get(k) for k in before} == before  # nothing earlier lost or rewritten
    if case.check is not None:
        case.check(place, err)


# ---------------------------------------------------------------------------------------------
# a reader that goes away: vocaseg datasets list | head -1, vocaseg models | head -1


@pytest.mark.parametrize(
    "argv", [["datasets", "list"], ["models"]], ids=["datasets-list", "models"]
)
def test_a_closed_pipe_is_quiet(argv, tmp_path, monkeypatch, capsys):
    """stdout is a pipe whose reader has gone: no BrokenPipeError, exit 0."""
    from vocaseg.cli.main import main

    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w", buffering=1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdout", stdout)
    code = main(argv)
    monkeypatch.undo()
    stdout.close()
    assert code == 0
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("command", ["datasets list", "models"])
def test_piping_into_head(command, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    result = subprocess.run(
        f"{sys.executable} -m vocaseg {command} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert "BrokenPipeError" not in result.stderr and "Traceback" not in result.stderr
