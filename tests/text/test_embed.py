"""TextEmbedder: parity with a direct full-context computation for every synonym mode, the memory
and disk caches (zero encoder calls on reuse, keys that change with weights and templates), and
errors for bad names and options."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from vocaseg.clip import tokenize
from vocaseg.errors import ConfigError, VocabularyError
from vocaseg.text.embed import TextEmbedder, clear_memory_cache, default_cache_dir, text_weights_id
from vocaseg.text.templates import get_templates
from vocaseg.text.vocab import Vocabulary

VOCAB = Vocabulary.parse("cat, sofa; couch; settee, floor")


@pytest.fixture(autouse=True)
def fresh_memory_cache():
    clear_memory_cache()
    yield
    clear_memory_cache()


def reference(clip, name: str, templates: str) -> torch.Tensor:
    """Independent ensemble: 77-token prompts, normalise each, average, renormalise."""
    prompts = [t.format(name) for t in get_templates(templates)]
    with torch.no_grad():
        feats = F.normalize(clip.encode_text(tokenize(prompts)), dim=-1)
    return F.normalize(feats.mean(dim=0), dim=-1)


def test_mean_mode_matches_direct_computation(tiny_vit_clip, tmp_path):
    embedder = TextEmbedder(tiny_vit_clip, templates="coco15", batch_size=7, cache_dir=tmp_path)
    out = embedder.embed(VOCAB)
    assert out.shape == (3, tiny_vit_clip.config.embed_dim) and out.dtype == torch.float32
    sofa = sum(reference(tiny_vit_clip, n, "coco15") for n in ("sofa", "couch", "settee"))
    cat, floor = (reference(tiny_vit_clip, n, "coco15") for n in ("cat", "floor"))
    expected = torch.stack([cat, F.normalize(sofa, dim=0), floor])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert embedder.texts_encoded == 5 * 15
    assert embedder.encoder_calls == -(-75 // 7)  # ceil: batches of 7


def test_groupvit_aggregation_averages_raw_embeddings(tiny_vit_clip, tmp_path):
    """template_agg="groupvit": mean of the unnormalised template embeddings, then normalised;
    it differs from CLIP's rule and has its own cache entries."""
    prompts = [t.format("cat") for t in get_templates("coco15")]
    with torch.no_grad():
        raw = tiny_vit_clip.encode_text(tokenize(prompts))  # [T, D]
    expected = F.normalize(raw.mean(dim=0), dim=-1)
    groupvit = TextEmbedder(tiny_vit_clip, "coco15", template_agg="groupvit", cache_dir=tmp_path)
    out = groupvit.embed(["cat"])[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    clip_rule = TextEmbedder(tiny_vit_clip, "coco15", cache_dir=tmp_path).embed(["cat"])[0]
    assert not torch.allclose(clip_rule, out, atol=1e-4)
    torch.testing.assert_close(
        clip_rule, reference(tiny_vit_clip, "cat", "coco15"), atol=1e-5, rtol=0
    )
    clear_memory_cache()
    again = TextEmbedder(tiny_vit_clip, "coco15", template_agg="groupvit", cache_dir=tmp_path)
    assert torch.equal(again.embed(["cat"])[0], out) and again.encoder_calls == 0  # from disk
    assert again.settings()["template_agg"] == "groupvit"
    with pytest.raises(ConfigError, match="template_agg"):
        TextEmbedder(tiny_vit_clip, template_agg="max")


def test_first_joined_and_query_modes(tiny_vit_clip):
    def embedder(mode: str) -> TextEmbedder:
        return TextEmbedder(tiny_vit_clip, templates="single", synonym_mode=mode, disk_cache=False)

    first = embedder("first").embed(VOCAB)
    torch.testing.assert_close(
        first[1], reference(tiny_vit_clip, "sofa", "single"), atol=1e-5, rtol=0
    )
    joined = embedder("joined").embed(VOCAB)
    expected = reference(tiny_vit_clip, "sofa, couch, settee", "single")
    torch.testing.assert_close(joined[1], expected, atol=1e-5, rtol=0)
    queries = embedder("max_prob").embed_queries(VOCAB)
    assert queries.shape == (5, tiny_vit_clip.config.embed_dim)
    torch.testing.assert_close(
        queries[2], reference(tiny_vit_clip, "couch", "single"), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match="embed_queries"):
        embedder("max_logit").embed(VOCAB)


def test_second_embed_calls_the_encoder_zero_times(tiny_vit_clip, tmp_path):
    embedder = TextEmbedder(tiny_vit_clip, templates="coco15", cache_dir=tmp_path)
    first = embedder.embed(VOCAB)
    calls = embedder.encoder_calls
    assert calls > 0
    assert torch.equal(embedder.embed(VOCAB), first)
    queries = embedder.embed_queries(VOCAB)  # every name is already cached
    assert torch.equal(embedder.embed_names(["couch", "cat"]), queries[[2, 0]])
    assert embedder.encoder_calls == calls
    # Another embedder in the same process shares the memory cache.
    other = TextEmbedder(tiny_vit_clip, templates="coco15", cache_dir=tmp_path)
    assert torch.equal(other.embed(VOCAB), first) and other.encoder_calls == 0


def test_disk_cache_serves_a_fresh_process(tiny_vit_clip, tmp_path):
    first = TextEmbedder(tiny_vit_clip, templates="coco15", cache_dir=tmp_path).embed(VOCAB)
    files = sorted(tmp_path.rglob("*"))
    assert len([f for f in files if f.suffix == ".safetensors"]) == 5
    assert not [f for f in files if ".tmp" in f.name]  # written atomically, nothing left over
    clear_memory_cache()  # what a new process sees
    fresh = TextEmbedder(tiny_vit_clip, templates="coco15", cache_dir=tmp_path)
    assert torch.equal(fresh.embed(VOCAB), first)
    assert fresh.encoder_calls == 0


def test_corrupt_cache_file_is_re_encoded(tiny_vit_clip, tmp_path):
    first = TextEmbedder(tiny_vit_clip, templates="single", cache_dir=tmp_path).embed(["cat"])
    (path,) = tmp_path.rglob("*.safetensors")
    path.write_bytes(b"not a safetensors file")
    clear_memory_cache()
    embedder = TextEmbedder(tiny_vit_clip, templates="single", cache_dir=tmp_path)
    torch.testing.assert_close(embedder.embed(["cat"]), first)
    assert embedder.encoder_calls == 1


def test_unwritable_cache_warns_and_still_embeds(tiny_vit_clip, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    embedder = TextEmbedder(tiny_vit_clip, templates="single", cache_dir=blocker / "text")
    with pytest.warns(UserWarning, match="not writable.*VOCASEG_CACHE"):
        out = embedder.embed(VOCAB)
    assert out.shape[0] == 3 and embedder.cache_dir is None


def test_cache_key_changes_with_text_weights_and_templates(tiny_vit_clip, tmp_path):
    base = TextEmbedder(tiny_vit_clip, templates="coco15", cache_dir=tmp_path)
    before = base.embed(VOCAB)

    other_templates = TextEmbedder(tiny_vit_clip, templates="single", cache_dir=tmp_path)
    assert not torch.allclose(other_templates.embed(VOCAB), before)
    assert other_templates.encoder_calls > 0

    changed = copy.deepcopy(tiny_vit_clip)
    with torch.no_grad():
        changed.ln_final.bias.add_(0.5)
    retrained = TextEmbedder(changed, templates="coco15", cache_dir=tmp_path)
    assert retrained.weights_id != base.weights_id
    assert not torch.allclose(retrained.embed(VOCAB), before)
    assert retrained.encoder_calls > 0

    vision_only = copy.deepcopy(tiny_vit_clip)
    with torch.no_grad():
        vision_only.visual.ln_post.bias.add_(0.5)
    assert text_weights_id(vision_only) == base.weights_id  # the image tower does not matter


def test_explicit_weights_id_and_settings(tiny_vit_clip):
    embedder = TextEmbedder(
        tiny_vit_clip, templates="voc_single", weights_id="run-7", disk_cache=False
    )
    embedder.embed(VOCAB)
    settings = embedder.settings()
    assert settings["text_weights"] == "run-7" and settings["templates"] == "voc_single"
    assert settings["num_templates"] == 1 and settings["synonym_mode"] == "mean"
    custom = TextEmbedder(tiny_vit_clip, templates=["a photo of a {}"], disk_cache=False)
    assert custom.settings()["templates_sha256"] == settings["templates_sha256"]


def test_embeddings_cached_under_inference_mode_can_enter_autograd(tiny_vit_clip, tmp_path):
    """The Segmenter embeds under inference_mode; a trainer in the same process reuses the rows."""
    with torch.inference_mode():
        TextEmbedder(tiny_vit_clip, templates="single", cache_dir=tmp_path).embed(VOCAB)
    embedder = TextEmbedder(tiny_vit_clip, templates="single", cache_dir=tmp_path)
    text = embedder.embed(VOCAB)
    assert embedder.encoder_calls == 0
    weight = torch.ones(text.shape[1], requires_grad=True)
    (text @ weight).square().sum().backward()  # saves ``text`` for backward
    assert weight.grad is not None


def test_autocast_does_not_change_cached_rows(tiny_vit_clip):
    plain = TextEmbedder(tiny_vit_clip, templates="single", disk_cache=False).embed(VOCAB)
    clear_memory_cache()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = TextEmbedder(tiny_vit_clip, templates="single", disk_cache=False).embed(VOCAB)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, plain, atol=1e-6, rtol=0)


def test_name_too_long_for_the_context_is_named(tiny_vit_clip):
    embedder = TextEmbedder(tiny_vit_clip, templates="single", disk_cache=False)
    long_name = "very " * 80 + "big cat"
    with pytest.raises(VocabularyError, match=r"class name 'very very.*big cat'.*context of 77"):
        embedder.embed(["cat", long_name])
    assert embedder.encoder_calls == 0


def test_bad_options_are_config_errors(tiny_vit_clip):
    with pytest.raises(ConfigError, match=r"synonym_mode 'avg'.*mean, first, joined"):
        TextEmbedder(tiny_vit_clip, synonym_mode="avg")
    with pytest.raises(ConfigError, match="unknown template set"):
        TextEmbedder(tiny_vit_clip, templates="nope")
    with pytest.raises(ConfigError, match="batch_size"):
        TextEmbedder(tiny_vit_clip, batch_size=0)


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text"
