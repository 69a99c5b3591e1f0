"""The method contract, checked the same way for every registered method (docs/contract.md).

Each shipped method runs in the tiny configuration of its registry entry (``tiny``) on random
weights: dense prediction at odd sizes, whole image vs windows, the Segmenter end to end, the same
settings keys, frozen parts, save -> load (self-contained and by reference), ONNX parity, and one
training step through its own pipeline when it is trained. A method added to the registry is
covered here by itself; a new training pipeline adds one entry to ``SYNTHETIC_DATA``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vocaseg.data.pipelines import PipelineContext, get_pipeline
from vocaseg.data.synthetic import (
    make_coco_panoptic_dataset,
    make_image_folder,
    make_shapes_dataset,
)
from vocaseg.engine.train_config import parse_train_config
from vocaseg.inference.predict import predict_scores
from vocaseg.inference.segmenter import Segmenter
from vocaseg.models.base import INFERENCE_KEYS
from vocaseg.models.folder import load_model, save_model
from vocaseg.models.registry import builtin_models, create_model, get_entry
from vocaseg.text.vocab import Vocabulary

METHODS = builtin_models()
VOCAB = Vocabulary.from_names(["cat", "sofa; couch", "floor"])  # 3 classes, 4 queries


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))


def tiny(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, get_entry(name).tiny, pretrained=False, **overrides)


def scores(model, images: torch.Tensor, vocabulary: Vocabulary = VOCAB) -> torch.Tensor:
    vocabulary = model.background.prepare(vocabulary)
    with torch.no_grad():
        return predict_scores(model, images, model.text_for(vocabulary), vocabulary)


def test_every_shipped_method_is_covered():
    assert {"maskclip", "tagclip", "zegclip"} <= set(METHODS)
    for name in METHODS:
        assert get_entry(name).tiny, f"{name} has no tiny configuration for the contract tests"


@pytest.mark.parametrize("name", METHODS)
def test_dense_prediction_at_odd_sizes(name):
    model = tiny(name)
    assert model.name == name
    images = torch.rand(2, 3, 37, 53) * 255
    out = scores(model, images)
    assert out.shape == (2, len(VOCAB), 37, 53)  # classes, not queries: finalize reduced them
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", METHODS)
def test_window_covering_the_image_equals_whole_image(name):
    model = tiny(name)
    images = torch.rand(1, 3, 40, 56) * 255
    model.update_settings(short_side=0, window=0)
    whole = scores(model, images)
    model.update_settings(window=64, stride=32)
    windowed = scores(model, images)
    assert torch.allclose(whole, windowed, atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_takes_the_shared_settings(name):
    model = tiny(name)
    config = model.config_dict()
    assert set(config) >= INFERENCE_KEYS
    model.update_settings(short_side=48, window=0, pad="bottom_right", prob_thd=0.3)
    assert model.preprocess.short_side == 48 and model.preprocess.window is None
    assert model.preprocess.pad == "bottom_right" and model.background.id == "bg:threshold"
    out = scores(model, torch.rand(1, 3, 30, 41) * 255)
    assert out.shape == (1, len(VOCAB) + 1, 30, 41)  # a "background" class was added


@pytest.mark.parametrize("name", METHODS)
def test_segmenter_end_to_end(name):
    segmenter = Segmenter(tiny(name))
    segmenter.set_vocabulary("cat, sofa; couch, floor")
    image = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    result = segmenter(image)
    assert result.label.shape == (33, 47) and result.scores.shape == (3, 33, 47)
    assert result.class_names == ["cat", "sofa", "floor"]
    assert result.areas.sum() == pytest.approx(1.0)
    assert np.array_equal(result.label, result.scores.argmax(0).numpy())


@pytest.mark.parametrize("name", METHODS)
def test_frozen_parts_stay_frozen(name):
    model = tiny(name, training=True).train()
    for module_name in model.frozen_modules + model.training_only_modules:
        module = model.get_submodule(module_name)
        assert not module.training, module_name
        assert not any(p.requires_grad for p in module.parameters()), module_name
    saved = model.saved_state_dict()
    dropped = tuple(f"{m}." for m in model.frozen_modules + model.training_only_modules)
    assert not any(key.startswith(dropped) for key in saved)
    inference = tiny(name)
    for module_name in model.training_only_modules:
        assert not _has(inference, module_name), f"{module_name} built for inference"


def _has(model, name: str) -> bool:
    try:
        return model.get_submodule(name) is not None
    except AttributeError:
        return False


def _whole_clip_state(model) -> dict:
    """A whole CLIP checkpoint holding the model's frozen towers (a method may keep only the text
    tower at inference; the image tower is then random, as the reference never reads it)."""
    from vocaseg.clip import CLIPConfig, build

    whole = build(CLIPConfig.from_dict(model.clip_source["architecture"]))
    whole.load_state_dict(model.clip.state_dict(), strict=False)
    return whole.state_dict()


@pytest.mark.parametrize("name", METHODS)
def test_save_load_self_contained_and_by_reference(name, tmp_path):
    images = torch.rand(1, 3, 36, 44) * 255
    model = tiny(name)
    save_model(model, tmp_path / "random")  # random CLIP: saved self-contained
    assert torch.equal(scores(model, images), scores(load_model(tmp_path / "random"), images))

    clip_file = tmp_path / "clip.pt"
    torch.save(_whole_clip_state(model), clip_file)
    referring = create_model(name, model.config_dict(), pretrained=str(clip_file))
    referring.load_state_dict(model.state_dict(), strict=False)  # the same trained parts
    save_model(referring, tmp_path / "ref")
    folder_bytes = (tmp_path / "ref" / "model.safetensors").stat().st_size
    assert folder_bytes < (tmp_path / "random" / "model.safetensors").stat().st_size
    loaded = load_model(tmp_path / "ref")
    assert loaded.clip_source["weights"] == str(clip_file.resolve())
    assert torch.equal(scores(referring, images), scores(loaded, images))


@pytest.mark.parametrize("name", METHODS)
def test_onnx_export_matches_pytorch(name, tmp_path):
    if not get_entry(name).exportable:
        pytest.skip(f"{name} declares no ONNX export")
    ort = pytest.importorskip("onnxruntime")
    from vocaseg.export import default_size, export_onnx

    model = tiny(name)
    size = default_size(model)
    export_onnx(model, VOCAB, tmp_path / "m.onnx", size=size)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    text = np.load(tmp_path / "m.text.npy")
    images = torch.randn(2, 3, *size)
    (got,) = session.run(None, {"images": images.numpy(), "text": text})
    with torch.no_grad():
        want = model(images, torch.from_numpy(text))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)


def _semantic_data(root: Path) -> dict:
    make_shapes_dataset(root, num_images=4, size=64, seed=0)
    return {"dataset": "folder", "root": str(root), "split": "train", "zero_shot": {}}


def _panoptic_data(root: Path) -> dict:
    make_coco_panoptic_dataset(root, num_images=2, size=64, seed=0)
    return {"dataset": "coco_panoptic", "root": str(root), "split": "train"}


def _image_folder_data(root: Path) -> dict:
    make_image_folder(root, num_images=4, sizes=((40, 48), (48, 40)), seed=0)
    return {"root": str(root)}


#: Training pipeline -> writer of a tiny synthetic dataset it reads (returns the data: section).
SYNTHETIC_DATA: dict[str, Callable[[Path], dict]] = {
    "semantic": _semantic_data,
    "gkc_panoptic": _panoptic_data,
    "image_folder": _image_folder_data,
}


@pytest.mark.parametrize("name", [m for m in METHODS if get_entry(m).trained])
def test_one_training_step_through_the_methods_pipeline(name, tmp_path):
    entry = get_entry(name)
    data = SYNTHETIC_DATA[entry.pipeline](tmp_path / "data")
    sections = entry.tiny_train
    cfg = parse_train_config(
        {
            "model": {"name": name, **entry.tiny, **sections.get("model", {})},
            "run": {"clip_weights": "random", "output": str(tmp_path / "run")},
            "schedule": {"iterations": 1},
            "data": {"batch_size": 2, **data, **sections.get("data", {})},
        }
    )
    torch.manual_seed(0)
    model = create_model(name, cfg.model_options, pretrained=False, training=True)
    train_data = get_pipeline(entry.pipeline).build(cfg, model, PipelineContext())
    model.prepare_training(train_data.spec)
    model.train()
    rng = np.random.default_rng(0)
    batch = train_data.collate([train_data.source.sample(i, rng) for i in range(2)])
    count = model.count_targets(batch)
    if count is not None:
        batch["num_targets"] = torch.tensor(max(count, 1.0))
    losses = model.loss(batch, model.forward_train(batch))
    assert losses["loss"].dtype == torch.float32 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    for module_name in model.frozen_modules + model.training_only_modules:
        assert all(p.grad is None for p in model.get_submodule(module_name).parameters())
