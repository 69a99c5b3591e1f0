"""GKC's training objective (vocaseg.models.gkc_loss and GKC.loss): distillation rows in the final
point's target order, padded vocabulary columns, the teacher's instance cap, images without
segments, and every term falling on a batch the model can fit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gkc_helpers import panoptic_root, pipeline_batch, tiny_gkc, train_config
from vocaseg.losses.tgkd import tgkd_loss
from vocaseg.models.gkc_loss import GKCCriterion, PointOutput, Targets, matched_rows


class FixedMatcher:
    """Returns the given matches whatever the costs."""

    def __init__(self, matches):
        self.matches = matches

    def __call__(self, *args, **kwargs):
        return self.matches


def test_matched_rows_follow_the_distilled_targets_order():
    matches = (torch.tensor([1, 4, 6]), torch.tensor([2, 0, 1]))  # query 1 -> target 2, ...
    queries, keep = matched_rows(matches, torch.tensor([0, 2]), num_targets=3)
    assert queries.tolist() == [4, 1] and keep.tolist() == [0, 1]
    unmatched = (torch.tensor([3]), torch.tensor([1]))  # fewer queries than targets
    queries, keep = matched_rows(unmatched, torch.tensor([0, 1]), num_targets=2)
    assert queries.tolist() == [3] and keep.tolist() == [1]


def test_distillation_uses_each_points_own_matches_in_target_order():
    torch.manual_seed(0)
    student = torch.randn(1, 5, 8)
    teacher, text = torch.randn(3, 8), torch.randn(3, 8)
    matches = [(torch.tensor([0, 2, 4]), torch.tensor([2, 0, 1]))]
    criterion = GKCCriterion(FixedMatcher(matches), 64, 3.0, 0.75, 0.1, 0.0, "released")
    targets = Targets(
        labels=[torch.tensor([0, 1, 1])],
        syn_labels=[torch.tensor([0, 1, 2])],
        masks=[torch.rand(3, 16, 16) > 0.5],
        kd_index=[torch.tensor([0, 1, 2])],
        teacher=[teacher],
        kd_text=[text],
    )
    point = PointOutput(torch.randn(1, 5, 3), None, torch.randn(1, 5, 8, 8), student)
    scale = torch.tensor(1.3)
    losses = criterion(point, targets, torch.tensor(3.0), scale)
    rows = student[0, [2, 4, 0]]  # the queries matched to targets 0, 1, 2
    assert torch.allclose(losses["kd"], tgkd_loss([rows], [teacher], [text], scale))
    assert set(losses) == {"mask", "dice", "plain", "kd"}


def _model_and_batch(tmp_path, **model):
    root = panoptic_root(tmp_path / "data", images=2)
    cfg = train_config(root, tmp_path / "run", model=model)
    net = tiny_gkc(training=True, **model).train()
    return net, pipeline_batch(cfg, net)


def test_padded_vocabulary_columns_take_no_probability(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    batch["vocabulary"][0] = [*batch["vocabulary"][0], "an appended synonym"]
    outputs = model.forward_train(batch)
    class_text = model.embedder.embed_names(model._class_names)
    syn_text, own = model._vocabulary_text(batch["vocabulary"])
    point = model._project(outputs["points"][-1], -1, class_text, syn_text, own)
    widths = [len(v) for v in batch["vocabulary"]]  # 134 and 133 names
    assert point.syn_logits.shape[-1] == max(widths) + 1  # + no-object
    assert torch.isneginf(point.syn_logits[1, :, widths[1] : max(widths)]).all()
    assert torch.isfinite(point.syn_logits[0]).all()
    assert torch.isfinite(point.syn_logits[1, :, -1]).all()  # no-object stays scored
    # column c of image 0 scores the name its vocabulary holds there
    embedding = F.normalize(model.embed_proj[-1](outputs["points"][-1]["class_feature"]), dim=-1)
    name_row = model.embedder.embed_names([batch["vocabulary"][0][-1]])[0]
    expected = model.logit_scale.exp() * embedding[0] @ name_row
    assert torch.allclose(point.syn_logits[0, :, widths[0] - 1], expected, atol=1e-5)


def test_teacher_runs_on_at_most_kd_max_instances_kept_per_image(tmp_path):
    model, batch = _model_and_batch(tmp_path, kd_max_instances=3)
    counts = [len(labels) for labels in batch["labels"]]
    assert sum(counts) > 3
    torch.manual_seed(1)
    index, rows = model._teacher_targets(batch)
    assert sum(len(i) for i in index) == 3
    for image, (chosen, count) in enumerate(zip(index, counts)):
        assert ((chosen >= 0) & (chosen < count)).all()
        if len(chosen):
            with torch.no_grad():
                expected = model.teacher(batch["teacher_crops"][image][chosen])
            assert torch.allclose(rows[image], F.normalize(expected, dim=-1), atol=1e-6)


def test_an_image_without_segments_trains_as_all_no_object(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    for key in ("labels", "syn_labels"):
        batch[key][1] = batch[key][1][:0]
    batch["masks"][1] = batch["masks"][1][:0]
    batch["teacher_crops"][1] = batch["teacher_crops"][1][:0]
    losses = model.loss(batch, model.forward_train(batch))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    batch = {**batch, **{k: [v[1]] * 2 for k, v in batch.items() if isinstance(v, list)}}
    batch["image"] = batch["image"][[1, 1]]
    losses = model.loss(batch, model.forward_train(batch))  # no target in the whole batch
    assert losses["loss_mask"] == 0 and losses["loss_kd"] == 0 and losses["loss_plain"] > 0


def test_every_term_falls_on_a_batch_the_model_can_fit(tmp_path):
    model, batch = _model_and_batch(tmp_path)
    assert model.count_targets(batch) == sum(len(x) for x in batch["labels"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    history = []
    for _ in range(30):
        losses = model.loss(batch, model.forward_train(batch))
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert set(history[0]) == {
        "loss",
        "loss_mask",
        "loss_dice",
        "loss_plain",
        "loss_syn",
        "loss_kd",
    }
    for term in history[0]:
        first = sum(h[term] for h in history[:3]) / 3
        last = sum(h[term] for h in history[-3:]) / 3
        assert last < 0.8 * first, term


def test_parameters_no_loss_reads_are_not_trained(tmp_path):
    for settings in ({}, {"kd_weight": 0.0}, {"kd_form": "paper"}):
        model, batch = _model_and_batch(tmp_path / str(len(settings)) / str(settings), **settings)
        model.loss(batch, model.forward_train(batch))["loss"].backward()
        for name, param in model.named_parameters():
            if param.requires_grad:  # what DDP reduces must take part in every step's graph
                assert param.grad is not None, (settings, name)
