"""Known-weights table and first-use download, with the network replaced by local fakes."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import pytest
import torch

from vocaseg.clip import hub, load
from vocaseg.clip.weights import KNOWN_WEIGHTS, canonical_name, download
from vocaseg.errors import CheckpointError, UserError, WeightsNotFoundError

# docs/clip-weights.md §4.2, the hashes embedded in the OpenAI archive URLs
OPENAI_SHA256 = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
    "ViT-B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L/14@336px": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
}


def test_known_table():
    assert len(KNOWN_WEIGHTS) == 12
    for entry in KNOWN_WEIGHTS.values():
        assert entry.repo.count("/") == 1 and entry.filenames and entry.revision
        assert entry.config.activation == entry.activation
    openai = {n: e.openai_sha256 for n, e in KNOWN_WEIGHTS.items() if e.openai_url}
    assert openai == OPENAI_SHA256
    for name, sha in OPENAI_SHA256.items():
        assert KNOWN_WEIGHTS[name].openai_url.split("/")[-2] == sha
        assert KNOWN_WEIGHTS[name].activation == "quick_gelu"
    laion = [e for e in KNOWN_WEIGHTS.values() if not e.openai_url]
    assert len(laion) == 3 and all(e.activation == "gelu" for e in laion)
    assert canonical_name("ViT-L-14-336") == "ViT-L/14@336px"
    assert canonical_name("vit-b-32:laion2b_s34b_b79k") == "ViT-B-32:laion2b_s34b_b79k"


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VOCASEG_CACHE", str(tmp_path / "env"))
    assert hub.cache_root() == tmp_path / "env"
    assert hub.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("VOCASEG_CACHE")
    assert hub.cache_root().parts[-2:] == (".cache", "vocaseg")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Replace ``hf_hub_download`` with a copy of a local checkpoint; counts calls."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub, "_reachable", lambda url, timeout=5.0: True)
    calls = []

    def fake_download(repo, filename, revision, local_dir):
        calls.append((repo, filename, revision))
        if filename not in fake_download.files:
            raise FileNotFoundError(filename)
        target = local_dir / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fake_download.files[filename])
        return str(target)

    fake_download.files = {}
    fake_download.calls = calls
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return fake_download


def test_download_once_then_cached(tmp_path, fake_hub, tiny_vit_clip):
    torch.save(tiny_vit_clip.state_dict(), tmp_path / "w.bin")
    fake_hub.files["open_clip_pytorch_model.bin"] = (tmp_path / "w.bin").read_bytes()
    cache = tmp_path / "cache"
    model = load("ViT-B-16:laion2b_s34b_b88k", cache_dir=cache)
    assert model.config.activation == "gelu"
    # safetensors tried first, then the .bin
    assert [c[1] for c in fake_hub.calls] == list(
        KNOWN_WEIGHTS["ViT-B-16:laion2b_s34b_b88k"].filenames
    )
    path = cache / "laion--CLIP-ViT-B-16-laion2B-s34B-b88K" / "open_clip_pytorch_model.bin"
    assert path.is_file()
    assert download("vit-b-16:laion2b-s34b-b88k", cache_dir=cache) == path
    assert len(fake_hub.calls) == 2  # the second call found the cache


def test_hash_mismatch_leaves_nothing(tmp_path, fake_hub, monkeypatch):
    entry = KNOWN_WEIGHTS["ViT-B-16:laion2b_s34b_b88k"]
    monkeypatch.setitem(
        KNOWN_WEIGHTS, entry.name, type(entry)(**{**entry.__dict__, "sha256": "0" * 64})
    )
    fake_hub.files["open_clip_model.safetensors"] = b"corrupt"
    with pytest.raises(CheckpointError, match="SHA-256"):
        download(entry.name, cache_dir=tmp_path)
    assert hub.find_cached(entry, tmp_path) is None
    assert not list(tmp_path.rglob("open_clip_model.safetensors"))


def test_offline_raises_weights_not_found(tmp_path, fake_hub, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(WeightsNotFoundError) as info:
        load("ViT-B/16", cache_dir=tmp_path)
    message = str(info.value)
    assert "'ViT-B/16'" in message and str(tmp_path) in message
    assert "vocaseg download ViT-B/16" in message and "--weights PATH" in message


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "VOCASEG_OFFLINE"])
def test_offline_flag_skips_the_network(tmp_path, monkeypatch, variable):
    def network(*args, **kwargs):
        raise AssertionError("the network was used in offline mode")

    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(urllib.request, "urlopen", network)
    monkeypatch.setattr(hub, "_from_hub", network)
    with pytest.raises(WeightsNotFoundError, match="offline mode is set"):
        load("ViT-B/16", cache_dir=tmp_path)


def test_unreachable_hosts_fail_at_once_without_retries(tmp_path, monkeypatch):
    def network(*args, **kwargs):
        raise AssertionError("no download may be tried when the hosts are unreachable")

    pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(hub, "_reachable", lambda url, timeout=5.0: False)
    monkeypatch.setattr(hub, "_from_hub", network)
    monkeypatch.setattr(urllib.request, "urlopen", network)
    with pytest.raises(WeightsNotFoundError, match="unreachable"):
        load("RN50", cache_dir=tmp_path)


def test_reachable_probe(monkeypatch):
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    assert not hub._reachable("https://no-such-host.invalid/x", timeout=1)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub._reachable("https://no-such-host.invalid/x", timeout=1)  # the proxy decides


def test_openai_archive_fallback_checks_hash(tmp_path, fake_hub, monkeypatch):
    class Response:
        def __init__(self):
            self.headers = {"Content-Length": "5"}
            self.data = [b"bytes", b""]

        def read(self, n):
            return self.data.pop(0)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response())
    with pytest.raises(CheckpointError, match="does not match"):
        download("RN50", cache_dir=tmp_path)
    assert not list((tmp_path / "openai").glob("*"))


def test_missing_hub_client_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(UserError, match=r'pip install "vocaseg\[hub\]"'):
        download("ViT-L-14:laion2b_s32b_b82k", cache_dir=tmp_path)
