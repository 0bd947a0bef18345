"""Fetch a corpus to a local file atomically (`hope.atomic`: temp file + rename): a failed download leaves nothing
behind."""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hope.atomic import atomic_open
from hope.data.corpus import DataError

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


def fetch(url: str, out: str | Path, timeout: float = 30.0) -> tuple[Path, int, str]:
    """Copy `url` (http(s)://, file:// or a local path) to `out`; returns (path, size in bytes, sha256 hex)."""
    out = Path(out)
    parsed = urllib.parse.urlparse(url)
    local = None
    if parsed.scheme == "file":
        local = Path(urllib.request.url2pathname(parsed.path))
    elif parsed.scheme in ("", "c", "d") or len(parsed.scheme) == 1:  # plain path (also Windows drive letters)
        local = Path(url)
    elif parsed.scheme not in ("http", "https"):
        raise DataError(f"unsupported URL scheme '{parsed.scheme}' in {url} (use http(s)://, file:// or a local path)")
    if local is not None and not local.is_file():
        raise DataError(f"local source not found: {local}")
    digest = hashlib.sha256()
    size = 0
    with atomic_open(out, "wb") as sink:  # a failed download leaves neither a partial file nor a temp file
        if local is not None:
            source = open(local, "rb")
        else:
            try:
                source = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (scheme checked above)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DataError(
                    f"cannot download {url} ({reason}); on an offline machine copy the file by other means and "
                    f"pass it as a local path: --url /path/to/file (or --data /path/to/file)") from None
        expected = None if local is not None else source.headers.get("Content-Length")
        with source:
            try:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            except (OSError, http.client.HTTPException) as exc:
                if local is not None:
                    raise
                raise DataError(f"download of {url} failed after {size} bytes ({exc!r}); nothing written (retry, "
                                f"or pass a local copy: --url /path/to/file)") from None
        # http.client ends a body cut short by a closed connection silently; the header tells the true size.
        if expected is not None and expected.strip().isdigit() and size != int(expected):
            raise DataError(f"download of {url} was cut short ({size} of {int(expected)} bytes); nothing written "
                            f"(retry, or pass a local copy: --url /path/to/file)")
        if size == 0:
            raise DataError(f"{url} is empty; nothing written")
    return out, size, digest.hexdigest()


def ensure_data(path: str | Path, url: str = TINY_SHAKESPEARE_URL) -> Path:
    """`--download`: fetch `url` to `path` unless the file is already there."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0:
        return path
    fetched, size, sha = fetch(url, path)
    print(f"downloaded {url} -> {fetched} ({size} bytes, sha256 {sha})")
    return fetched
