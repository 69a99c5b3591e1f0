"""Download known CLIP weights on first use and find them in the cache afterwards.

docs/clip-weights.md §4 (hub repos and file names, the OpenAI archive URLs whose path holds the
file's SHA-256) and §5 (cache and offline behaviour). Files land in ``cache_dir``, else
``$VOCASEG_CACHE``, else ``~/.cache/vocaseg``, as ``<owner>--<repo>/<file>`` (hub) or
``openai/<file>`` (OpenAI archives). Hashes are checked after download, before the file gets its
final name.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from vocaseg.errors import CheckpointError, UserError, WeightsNotFoundError
from vocaseg.hashing import file_sha256
from vocaseg.io import atomic_path

if TYPE_CHECKING:
    from vocaseg.clip.weights import KnownWeights

CHUNK = 1 << 20


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where downloaded weights live: ``cache_dir``, ``$VOCASEG_CACHE`` or ``~/.cache/vocaseg``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("VOCASEG_CACHE"):
        return Path(os.environ["VOCASEG_CACHE"]).expanduser()
    return Path.home() / ".cache" / "vocaseg"


def candidate_paths(entry: KnownWeights, root: Path) -> list[Path]:
    """Every cache location for ``entry``, in order of preference."""
    hub_dir = root / entry.repo.replace("/", "--")
    paths = [hub_dir / name for name in entry.filenames]
    if entry.openai_url:
        paths.append(root / "openai" / entry.openai_url.rsplit("/", 1)[1])
    return paths


def find_cached(entry: KnownWeights, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The first cached file for ``entry``, or None."""
    return next((p for p in candidate_paths(entry, cache_root(cache_dir)) if p.is_file()), None)


def fetch(entry: KnownWeights, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of ``entry``'s weights: the cached file, else downloaded now (hub first, then the
    OpenAI archive). Raises ``WeightsNotFoundError`` naming the weights, the places looked at and
    how to provide them when nothing can be had (e.g. offline)."""
    root = cache_root(cache_dir)
    cached = find_cached(entry, root)
    if cached is not None:
        return cached
    failures: list[str] = []
    if _offline():
        raise _not_found(entry, root, ["offline mode is set ($HF_HUB_OFFLINE or $VOCASEG_OFFLINE)"])
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        if not entry.openai_url:
            raise UserError(
                f"downloading {entry.name} needs huggingface_hub; "
                'run: pip install "vocaseg[hub]" (or pass --weights PATH)'
            ) from None
        failures.append('huggingface_hub is not installed (pip install "vocaseg[hub]")')
    else:
        from huggingface_hub import constants

        if not _reachable(constants.ENDPOINT):
            failures.append(f"{constants.ENDPOINT} is unreachable (offline?)")
        elif (path := _first_hub_file(entry, root, failures)) is not None:
            return path
    if entry.openai_url:
        if not _reachable(entry.openai_url):
            failures.append(f"{entry.openai_url} is unreachable (offline?)")
            raise _not_found(entry, root, failures)
        try:
            return _from_url(entry.openai_url, entry.openai_sha256, root / "openai")
        except CheckpointError:
            raise
        except Exception as err:
            failures.append(f"{entry.openai_url}: {type(err).__name__}: {err}")
    raise _not_found(entry, root, failures)


def _first_hub_file(entry: KnownWeights, root: Path, failures: list[str]) -> Path | None:
    """Download the first of ``entry``'s hub files that exists; appends the failures met."""
    for name in entry.filenames:
        try:
            return _from_hub(entry, name, root)
        except CheckpointError:
            raise
        except Exception as err:  # missing file, HTTP errors: try the next source
            failures.append(f"{entry.repo}/{name}: {type(err).__name__}")
    return None


def _reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url``'s host accepts a connection: a quick probe, so that an offline machine gets
    its one-line answer at once instead of after the HTTP clients' retries. Behind a proxy the
    probe cannot tell, so it answers True."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _offline() -> bool:
    """True when the user asked for no network (read at call time, unlike huggingface_hub)."""
    flags = (
        os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "VOCASEG_OFFLINE")
    )
    return any(flag not in ("", "0", "false", "no") for flag in flags)


LOCAL_WEIGHTS_HINT = "pass a local checkpoint with --weights PATH"


def _not_found(entry: KnownWeights, root: Path, failures: list[str]) -> WeightsNotFoundError:
    looked = ", ".join(str(p) for p in candidate_paths(entry, root))
    return WeightsNotFoundError(
        f"weights {entry.name!r} are not cached and could not be downloaded. Fix: run "
        f"'vocaseg download {entry.name}' on a connected machine and copy the cache folder "
        f"(or set $VOCASEG_CACHE), or {LOCAL_WEIGHTS_HINT}. Tried: {'; '.join(failures)}; "
        f"looked in: {looked}"
    )


def _verify(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(
            f"{what}: SHA-256 {actual} does not match the expected {expected}; the download is "
            "corrupt or the file changed upstream; delete it and download again"
        )


def _from_hub(entry: KnownWeights, filename: str, root: Path) -> Path:
    from huggingface_hub import hf_hub_download

    folder = entry.repo.replace("/", "--")
    target = root / folder / filename
    # download into a staging folder, verify, then rename: the cache never holds a bad file
    staged = Path(
        hf_hub_download(
            entry.repo, filename, revision=entry.revision, local_dir=root / ".staging" / folder
        )
    )
    try:
        _verify(staged, entry.sha256, f"{entry.repo}/{filename}")
    except CheckpointError:
        staged.unlink(missing_ok=True)
        raise
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target)
    return target


def _from_url(url: str, sha256: str | None, folder: Path) -> Path:
    target = folder / url.rsplit("/", 1)[1]
    digest = hashlib.sha256()
    with (
        atomic_path(target) as tmp,
        urllib.request.urlopen(url, timeout=30) as response,
        open(tmp, "wb") as out,
    ):
        total = int(response.headers.get("Content-Length", 0)) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if sha256 is not None and digest.hexdigest() != sha256:
            raise CheckpointError(
                f"{url}: SHA-256 {digest.hexdigest()} does not match {sha256}; "
                "the download is corrupt; try again"
            )
    return target
