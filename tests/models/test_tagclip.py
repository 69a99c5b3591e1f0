"""TagCLIP / ZegCLIP: structure at ViT-B/16 size, frozen CLIP, prompted forward, inference
formulas, pseudo-labels and losses (docs/methods/tagclip.md §2-§5)."""

import math

import pytest
import torch
import torch.nn.functional as F

from vocaseg.clip.model import CLIP, CLIPConfig
from vocaseg.errors import ConfigError
from vocaseg.models.base import TrainSpec
from vocaseg.models.registry import create_model
from vocaseg.text.vocab import Vocabulary

TINY = dict(pos_grid=4, head_ffn=64, num_prompts=3, window=64, stride=48, short_side=64)


def tiny(name, clip_config, **overrides):
    torch.manual_seed(0)
    return create_model(name, clip=CLIP(clip_config).eval(), **{**TINY, **overrides})


def unit(rows, dim=32, seed=0):
    return F.normalize(
        torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def test_vit_b16_structure_and_dimensions():
    config = CLIPConfig(
        embed_dim=512, image_size=224, vision_layers=12, vision_width=768, vision_patch_size=16,
        text_width=512, text_layers=1,
    )  # fmt: skip
    model = create_model("tagclip", clip=CLIP(config))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["clip.visual.positional_embedding"] == (1025, 768)
    assert shapes["vpt.shallow"] == (1, 10, 768)
    assert shapes["vpt.deep"] == (11, 10, 768)
    assert shapes["vpt.proj.weight"] == (768, 768)
    assert model.vpt.norm.eps == 1e-6
    assert shapes["head.descriptor.proj.weight"] == (512, 1024)
    assert shapes["head.trusty_token"] == (1, 512)
    assert shapes["head.trusty_learner.attn.in_proj_weight"] == (1536, 512)
    assert shapes["head.trusty_learner.attn.out_proj.weight"] == (512, 512)
    assert model.head.trusty_learner.attn.num_heads == 8
    for i in range(3):
        for part in "qkv":
            assert shapes[f"head.blocks.{i}.cross_attn.{part}.weight"] == (512, 512)
        assert shapes[f"head.blocks.{i}.ffn.fc1.weight"] == (2048, 512)
        assert shapes[f"head.blocks.{i}.ffn.fc2.weight"] == (512, 2048)
    assert "head.blocks.3.cross_attn.q.weight" not in shapes
    bound = math.sqrt(6 / (3 * 16 * 16 + 768))
    assert bound == pytest.approx(0.0625, abs=1e-4)
    assert model.vpt.deep.abs().max() <= bound
    assert model.head.trusty_token.abs().max() <= math.sqrt(6 / 513) + 1e-6
    assert (model.head.descriptor.proj.bias == 0).all()
    pre = model.preprocess
    assert (pre.short_side, pre.max_long_side, pre.window, pre.stride) == (512, None, 512, 426)
    assert pre.mean == (123.675, 116.28, 103.53)
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 96), unit(4, 512))
    assert out.shape == (1, 5 - 1, 4, 6)


def test_zegclip_preset(tiny_vit_config):
    model = tiny("zegclip", tiny_vit_config)
    cfg = model.config
    assert (cfg.trusty_token, cfg.trusty_learner, cfg.mask_weight) == (False, False, 100.0)
    assert cfg.trusty_weighting == "none" and cfg.head_init == "torch_default_cloned"
    assert model.head.trusty_token is None and model.head.trusty_learner is None
    blocks = model.head.blocks
    assert torch.equal(blocks[0].cross_attn.q.weight, blocks[2].cross_attn.q.weight)


def test_only_prompts_and_head_learn(tiny_vit_config):
    model = tiny("tagclip", tiny_vit_config).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("vpt.", "head.")) for n in trainable)
    assert not any(n.startswith("clip.") for n in trainable)
    last = "head.blocks.2."
    assert {n for n in trainable if n.startswith(last)} == {
        f"{last}cross_attn.{p}.{t}" for p in "qk" for t in ("weight", "bias")
    }
    model(torch.randn(2, 3, 64, 64), model.head.append_trusty(unit(3))).sum().backward()
    for name, param in model.named_parameters():
        if name in trainable:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


def test_grad_checkpointing_gives_the_same_gradients(tiny_vit_config):
    grads = []
    for checkpointing in (False, True):
        model = tiny("tagclip", tiny_vit_config, dropout=0.0, grad_checkpointing=checkpointing)
        model.train()
        model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
              model.head.append_trusty(unit(3))).pow(2).mean().backward()  # fmt: skip
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_prompted_encoder_matches_hand_computation(tiny_vit_config):
    model = tiny("tagclip", tiny_vit_config, dropout=0.0).eval()
    visual, vpt = model.clip.visual, model.vpt
    images = torch.randn(1, 3, 32, 48)  # 2x3 grid, pos table 4x4 -> 2x3
    pos = visual.positional_embedding[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(2, 3), mode="bilinear", align_corners=False)
    pos = pos.flatten(2).transpose(1, 2)[0]  # [6, D]
    patches = visual.conv1(images).flatten(2).transpose(1, 2)[0]  # [6, D]
    cls = 2 * visual.class_embedding + visual.positional_embedding[0]
    x = visual.ln_pre(torch.cat([cls[None], patches + pos]))  # [7, D]
    x = torch.cat([x[:1], vpt.proj(vpt.shallow[0]), x[1:]])
    x = visual.transformer.resblocks[0](x[None])[0]
    x = torch.cat([x[:1], vpt.proj(vpt.deep[0]), x[4:]])
    x = visual.transformer.resblocks[1](x[None])[0]
    x = visual.ln_post(vpt.norm(x)) @ visual.proj
    with torch.no_grad():
        g, dense = vpt.encode(visual, images)
        assert torch.allclose(g[0], F.normalize(x[0], dim=0), atol=1e-5)
        expected = F.normalize(x[4:], dim=-1).t().reshape(-1, 2, 3)
        assert torch.allclose(dense[0], expected, atol=1e-5)


def _fixed_logits():
    # Three classes (0, 1 seen; 2 unseen) plus the trusty channel, 1x2 pixels.
    return torch.tensor([[[[1.0, -1.0]], [[0.5, 2.0]], [[0.0, 1.5]], [[-0.5, 0.8]]]])


@pytest.mark.parametrize("mode", ["both", "seen", "unseen", "none"])
def test_window_output_calibration_and_weighting(tiny_vit_config, mode):
    model = tiny("tagclip", tiny_vit_config, trusty_weighting=mode)
    vocab = Vocabulary.from_names(["a", "b", "c"], seen=[0, 1])
    logits = _fixed_logits()
    p = logits.sigmoid()
    w = p[:, 3:]
    expected = p[:, :3].clone()
    expected[:, :2] -= 0.1
    if mode in ("both", "seen"):
        expected[:, :2] *= 1 - w
    if mode in ("both", "unseen"):
        expected[:, 2:] *= w
    assert torch.allclose(model.window_output(logits, vocab, model.background), expected)


def test_window_output_paper_target_and_settings(tiny_vit_config):
    vocab = Vocabulary.from_names(["a", "b", "c"], seen=[0, 1])
    p = _fixed_logits().sigmoid()
    paper = tiny("tagclip", tiny_vit_config, trusty_target="seen")
    expected = p[:, :3].clone()
    expected[:, :2] = (expected[:, :2] - 0.1) * p[:, 3:]  # w = 1 - σ(M_A)
    expected[:, 2:] *= 1 - p[:, 3:]
    assert torch.allclose(paper.window_output(_fixed_logits(), vocab, paper.background), expected)
    transductive = tiny("tagclip", tiny_vit_config, setting="transductive", trusty_weighting="none")
    assert torch.allclose(
        transductive.window_output(_fixed_logits(), vocab, transductive.background), p[:, :3]
    )
    # Without a seen set: plain sigmoids, no calibration, no weighting.
    open_vocab = Vocabulary.from_names(["a", "b", "c"])
    assert torch.allclose(
        paper.window_output(_fixed_logits()[:, :3], open_vocab, paper.background), p[:, :3]
    )


def _trainable(tiny_vit_config, vocab, **overrides):
    model = tiny("tagclip", tiny_vit_config, **overrides)
    texts = {names[0]: unit(1, seed=i)[0] for i, names in enumerate(vocab.classes)}
    received = []

    def fake_encode(vocabulary):
        received.append(vocabulary.class_names)
        return torch.stack([texts[n] for n in vocabulary.class_names])

    model.encode_vocabulary = fake_encode
    model.prepare_training(TrainSpec(vocab, zero_shot=model.config.setting))
    return model, received


def test_inductive_training_never_queries_unseen_names(tiny_vit_config):
    vocab = Vocabulary.from_names(["cat", "dog", "cow", "sheep"], seen=[0, 2])
    model, received = _trainable(tiny_vit_config, vocab)
    assert received == [["cat", "cow"]]
    label = torch.full((1, 64, 64), 255)
    label[:, :32] = 1  # seen position 1 = cow
    full = torch.full((1, 64, 64), 255)
    full[:, :32], full[:, 32:] = 2, 3  # cow, then unseen sheep
    batch = {"image": torch.randn(1, 3, 64, 64), "label": label, "label_full": full}
    out = model.forward_train(batch)
    assert out["logits"].shape == (1, 3, 64, 64)  # two seen queries + τ
    target = model._trusty_target(batch, torch.device("cpu"))
    assert torch.equal(target[0, 0], (full == 3)[0].float())
    with pytest.raises(ConfigError, match="label_full"):
        model.loss({"image": batch["image"], "label": label}, out)


def test_pseudo_labels_relabel_only_unseen_pixels(tiny_vit_config):
    vocab = Vocabulary.from_names(["a", "b", "c", "d"], seen=[0, 1])
    model, received = _trainable(tiny_vit_config, vocab, setting="transductive", trusty_token=False)
    assert received == [["a", "b", "c", "d"]]
    label = torch.tensor([[[0, 1, 2, 3, 255, 2]]])
    logits = torch.zeros(1, 4, 1, 6)
    logits[0, 3, 0, 2] = 5.0  # pixel 2 (GT c) looks like d
    logits[0, 2, 0, 3] = 5.0  # pixel 3 (GT d) looks like c
    logits[0, 0, 0, :] = 9.0  # a seen class scores highest everywhere: never chosen
    pseudo = model.pseudo_label(logits, label)
    assert pseudo.tolist() == [[[0, 1, 3, 2, 255, 2]]]


def test_training_loss_falls(tiny_vit_config):
    vocab = Vocabulary.from_names(["left", "right", "other"], seen=[0, 1])
    model, _ = _trainable(tiny_vit_config, vocab, dropout=0.0)
    model.train()
    label = torch.full((2, 64, 64), 255)
    label[:, :, :32], label[:, :, 32:] = 0, 1
    full = label.clone()
    full[:, :16] = 2
    image = torch.randn(2, 3, 64, 64) * 0.1
    image[:, 0, :, :32] += 1.0  # the "left" class is red
    batch = {"image": image, "label": label, "label_full": full}
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    history = []
    for _ in range(30):
        losses = model.loss(batch, model.forward_train(batch))
        optim.zero_grad()
        losses["loss"].backward()
        optim.step()
        history.append(losses["loss"].item())
    assert set(losses) == {"loss", "loss_focal", "loss_dice", "loss_trusty"}
    assert history[-1] < 0.25 * history[0]


def test_prompt_dropout_masks_differ_per_image(tiny_vit_config):
    # Reference VPT: Dropout(proj(prompts).expand(B, ...)), so each image draws its own mask.
    model = tiny("tagclip", tiny_vit_config, dropout=0.5).train()
    image = torch.randn(1, 3, 32, 32)
    torch.manual_seed(0)
    g, dense = model.vpt.encode(model.clip.visual, image.expand(2, -1, -1, -1))
    assert not torch.allclose(g[0], g[1])
    assert not torch.allclose(dense[0], dense[1])


def test_folder_and_checkpoint_hold_well_under_a_quarter_of_the_model():
    # ViT-B/16 size on the meta device (no memory): the frozen CLIP is referenced, not copied.
    with torch.device("meta"):
        clip = CLIP(CLIPConfig(512, 224, 12, 768, 16, 512, 12))
        model = create_model("tagclip", clip=clip)
    nbytes = lambda state: sum(t.numel() * t.element_size() for t in state.values())
    full = nbytes(model.state_dict())
    saved = nbytes(model.saved_state_dict())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    checkpoint = saved + 2 * trainable  # + AdamW's two moments per trainable parameter
    assert full > 600e6 and saved < 0.1 * full and checkpoint < 0.25 * full
    assert not any(k.startswith("clip.") for k in model.saved_state_dict())
