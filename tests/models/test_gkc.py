"""GKC's model (vocaseg.models.gkc): semantic inference against an independent computation,
the backbone's norms and initialisation, the COCO name mapping, the two-stage baseline's crops
and classification, the parameter count at RN50 size and configuration errors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from cli_helpers import run_cli
from gkc_helpers import TINY, tiny_gkc
from vocaseg.errors import CheckpointError, ConfigError
from vocaseg.models.gkc_two_stage import crop_class_probs, masked_crops, proposal_boxes
from vocaseg.models.layers.resnet_backbone import FrozenBatchNorm2d
from vocaseg.models.registry import create_model
from vocaseg.text.vocab import Vocabulary

VOCAB = Vocabulary.from_names(["cat", "sofa", "floor"])


def test_forward_is_the_query_weighted_sum_of_mask_probabilities():
    model = tiny_gkc()
    images = torch.randn(2, 3, 64, 96)
    text = model.encode_vocabulary(VOCAB)
    with torch.no_grad():
        scores = model(images, text)
        final = model.predictions(images)[-1]
        embedding = model.embed_proj[-1](final["class_feature"])  # ReLU then Linear
        bank = torch.cat([text, model.non_object_embedding])
        cosine = F.normalize(embedding, dim=-1) @ F.normalize(bank, dim=-1).T
        probs = (model.logit_scale.exp() * cosine).softmax(-1)[..., :-1]  # [B, Q, K]
        masks = final["mask_logits"].sigmoid()
        expected = (probs[..., None, None] * masks[:, :, None]).sum(1)  # [B, K, h, w]
    assert scores.shape == (2, 3, 16, 24)
    assert torch.allclose(scores, expected, atol=1e-6)
    # linear in the masks: upsampling the scores = scoring the upsampled mask probabilities
    up = F.interpolate(scores, size=(64, 96), mode="bilinear", align_corners=False)
    up_masks = F.interpolate(masks, size=(64, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(up, torch.einsum("bqk,bqhw->bkhw", probs, up_masks), atol=1e-5)


def test_upsample_logits_applies_the_sigmoid_after_upsampling():
    model = tiny_gkc(upsample_logits=True)
    images = torch.randn(1, 3, 64, 64)
    text = model.encode_vocabulary(VOCAB)
    with torch.no_grad():
        scores = model(images, text)
        final = model.predictions(images)[-1]
        probs = model.class_logits(final["class_feature"], text).softmax(-1)[..., :-1]
        logits = F.interpolate(final["mask_logits"], size=(64, 64), mode="bilinear")
        expected = torch.einsum("bqk,bqhw->bkhw", probs, logits.sigmoid())
    assert scores.shape == (1, 3, 64, 64)
    assert torch.allclose(scores, expected, atol=1e-6)


def test_training_build_starts_from_the_teacher_with_frozen_batchnorm():
    model = tiny_gkc(training=True)
    teacher = dict(model.teacher.named_parameters())
    for name, param in model.backbone.named_parameters():  # convs only: norms are buffers
        assert torch.equal(param, teacher[name]) and param.requires_grad, name
    assert not hasattr(model.backbone, "attnpool")
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(norms) == 3 + 4 * 3 + 4  # stem, 4 blocks x 3, 4 shortcuts
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    stem = model.backbone.bn1
    assert torch.equal(stem.running_var, model.teacher.bn1.running_var)
    model.train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.backbone.forward_features(torch.randn(2, 3, 64, 64))
    for key, value in model.backbone.state_dict().items():  # no statistics move in train mode
        assert torch.equal(value, before[key]), key


def test_bn_train_keeps_batchnorm_that_learns_batch_statistics():
    model = tiny_gkc(training=True, backbone_norm="bn_train").train()
    assert isinstance(model.backbone.bn1, torch.nn.BatchNorm2d)
    before = model.backbone.bn1.running_mean.clone()
    model.backbone.forward_features(torch.randn(2, 3, 64, 64) + 3)
    assert not torch.equal(model.backbone.bn1.running_mean, before)


def test_inference_build_has_no_teacher_and_a_backbone_of_the_same_shape():
    inference, training = tiny_gkc(), tiny_gkc(training=True)
    assert not hasattr(inference, "teacher") and inference.clip.visual is None
    shapes = {k: v.shape for k, v in inference.saved_state_dict().items()}
    assert shapes == {k: v.shape for k, v in training.saved_state_dict().items()}


def test_random_resnet_backbone_sees_the_image():
    model = tiny_gkc()
    features = model.backbone.forward_features(torch.randn(2, 3, 64, 64))
    assert all(f.std() > 0 for f in features.values())  # a dead stem would give all zeros


def test_coco_panoptic_names_are_encoded_as_trained():
    model = tiny_gkc()
    raw = model.encode_vocabulary(Vocabulary.from_names(["wall-other-merged", "floor-wood"]))
    processed = model.encode_vocabulary(Vocabulary.from_names(["wall", "floor wood"]))
    assert torch.equal(raw, processed)
    model.update_settings(coco_names="verbatim")
    verbatim = model.encode_vocabulary(Vocabulary.from_names(["wall-other-merged", "floor-wood"]))
    assert not torch.equal(raw, verbatim)


def test_a_vit_clip_or_a_bad_setting_is_refused_in_one_line():
    vit = {**TINY["clip"], "vision_layers": 2, "vision_patch_size": 16, "vision_width": 64}
    with pytest.raises(ConfigError, match="needs a CLIP ResNet"):
        create_model("gkc", {**TINY, "clip": vit})
    with pytest.raises(ConfigError, match="grounding"):
        create_model("gkc", TINY, grounding="sometimes")
    with pytest.raises(ConfigError, match="region_dropout"):
        create_model("gkc", TINY, region_dropout=1.5)


# ----- two-stage baseline ---------------------------------------------------------------------


def test_proposal_boxes_cover_the_mask_and_empty_masks_take_the_image():
    logits = torch.full((2, 8, 10), -5.0)
    logits[0, 2:5, 3:9] = 5.0
    boxes = proposal_boxes(logits)
    assert torch.allclose(boxes[0], torch.tensor([3 / 10, 2 / 8, 9 / 10, 5 / 8]))
    assert torch.allclose(boxes[1], torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_masked_crop_is_the_box_resampled_with_grey_outside_the_mask():
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    pixels = torch.rand(1, 3, 16, 16) * 255
    images = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    logits = torch.full((1, 2, 16, 16), -5.0)
    logits[0, 0, 4:12, 8:16] = 5.0  # an 8 x 8 box, right half, rows 4..11
    logits[0, 1, 4:12, 8:16] = 5.0
    logits[0, 1, 4:8, 8:12] = -5.0  # its top-left quadrant lies outside the mask
    crops = masked_crops(images, logits, mean, std, size=8)  # box resampled at scale 1
    clip_mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(3, 1, 1)
    clip_std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(3, 1, 1)
    back = crops * clip_std + clip_mean  # [2, 3, 8, 8] on the 0-1 scale
    region = pixels[0, :, 4:12, 8:16] / 255
    inner = (slice(None), slice(2, 6), slice(2, 6))  # away from bicubic's border taps
    assert torch.allclose(back[0][inner], region[inner], atol=1e-4)
    assert torch.allclose(back[1, :, :3, :3], torch.full((3, 3, 3), 128 / 255), atol=1e-4)
    assert torch.allclose(back[1, :, 5:, 5:], region[:, 5:, 5:], atol=2e-2)


def test_crop_classification_is_clip_softmax_over_the_text():
    model = tiny_gkc(two_stage=True)
    crops = torch.randn(3, 3, 32, 32)
    text = model.encode_vocabulary(VOCAB)
    with torch.no_grad():
        probs = crop_class_probs(model.clip.visual, crops, text, model.clip.logit_scale)
        image = F.normalize(model.clip.encode_image(crops), dim=-1)
        expected = (model.clip.logit_scale.exp() * image @ F.normalize(text, dim=-1).T).softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-6)


def test_two_stage_scores_weight_crop_probabilities_by_objectness():
    model = tiny_gkc(two_stage=True, two_stage_size=32)
    assert model.clip.visual is not None  # the image tower is an inference tower here
    images = torch.randn(1, 3, 64, 64)
    text = model.encode_vocabulary(VOCAB)
    with torch.no_grad():
        scores = model(images, text)
        final = model.predictions(images)[-1]
        objectness = 1 - model.class_logits(final["class_feature"], text).softmax(-1)[..., -1:]
        crops = masked_crops(
            images, final["mask_logits"], model.preprocess.mean, model.preprocess.std, 32
        )
        clip_probs = crop_class_probs(model.clip.visual, crops, text, model.clip.logit_scale)
        probs = clip_probs.view(1, -1, 3) * objectness
        expected = torch.einsum("bqk,bqhw->bkhw", probs, final["mask_logits"].sigmoid())
    assert torch.allclose(scores, expected, atol=1e-6)


# ----- size at RN50 ---------------------------------------------------------------------------


def _linear(i: int, o: int) -> int:
    return i * o + o


def test_rn50_parts_have_the_parameter_counts_of_the_spec_shapes():
    model = create_model("gkc")  # random RN50 weights, built for inference: no teacher
    bn_affine = 2 * sum(m.weight.numel() for m in model.backbone.modules()
                        if isinstance(m, FrozenBatchNorm2d))  # fmt: skip

    def params(module) -> int:
        return sum(p.numel() for p in module.parameters())

    # CLIP RN50 without the attention pool: convs plus BatchNorm affine (frozen: buffers here)
    assert params(model.backbone) + bn_affine == 23_527_264
    assert params(model.sem_seg_head.pixel_decoder) == 6_035_904
    assert params(model.sem_seg_head.predictor) == 14_524_416
    projection = _linear(256, 1024)  # embed_proj / kd_proj of one prediction point
    assert [params(p) for p in model.embed_proj] == [projection] * 10
    assert [params(p) for p in model.kd_proj] == [projection] * 10
    inference = (
        params(model.backbone) + bn_affine + params(model.sem_seg_head)
        + projection + 1024 + 1  # final embed_proj, no-object embedding, logit scale
    )  # fmt: skip
    assert inference == 44_351_777
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
    assert trainable == inference - bn_affine + 9 * projection + 10 * projection + 1


def test_print_model_shows_the_trainable_student(capsys):
    code, out, _ = run_cli(capsys, "train", "configs/gkc_r50_coco_panoptic.yaml", "--print-model")
    assert code == 0
    rows = dict(re.findall(r"^(\w+)\s+[\d,]+\s+([\d,]+)$", out, flags=re.M))
    counts = {k: int(v.replace(",", "")) for k, v in rows.items()}
    assert counts["clip"] == 0 and counts["teacher"] == 0  # frozen text tower and teacher
    assert counts["backbone"] == 23_527_264 - 53_248  # BatchNorm affine frozen as buffers
    assert counts["total"] == 49_298_722


def test_a_trained_folder_runs_the_two_stage_baseline(tmp_path, monkeypatch):
    # The folder refers to its CLIP weights; two_stage needs the image tower at inference, which
    # is rebuilt from the reference, while the text tower's hash is still checked.
    from vocaseg.models.folder import load_model, save_model
    from vocaseg.models.registry import get_entry
    from vocaseg.models.towers import load_clip

    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "cache"))
    tiny = get_entry("gkc").tiny
    torch.manual_seed(0)
    full, _ = load_clip("random", tiny["clip"])
    torch.save(full.state_dict(), tmp_path / "clip.pt")
    model = create_model("gkc", tiny, pretrained=str(tmp_path / "clip.pt"))
    save_model(model, tmp_path / "folder")
    loaded = load_model(tmp_path / "folder", two_stage=True)
    assert loaded.config.two_stage and loaded.clip.visual is not None
    save_model(model, tmp_path / "contained", self_contained=True)
    with pytest.raises(CheckpointError, match="without CLIP's image tower"):
        load_model(tmp_path / "contained", two_stage=True)
