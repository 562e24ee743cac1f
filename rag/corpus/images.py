"""An article's front matter `image` -> the image file in the Jekyll site folder, read safely for the service.

Only local files are served: a site path (`/assets/images/a.png`), a path relative to the site folder
(`assets/a.png`), or a URL of the article's own site (`https://blog.example/assets/a.png`), each resolved
inside the site folder and never outside it. Images elsewhere are not fetched. A file is served only when it
is small enough and its first bytes say it is a PNG, JPEG, GIF or WebP image (never SVG, which can carry
script).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

MAX_IMAGE_BYTES = 2 * 1024 * 1024  # blog header images (OGP cards) are a few hundred kB

# first bytes -> media type
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True)
class Image:
    data: bytes
    media_type: str


def site_folder(corpus: Path) -> Path:
    """The Jekyll site folder of a corpus setting: the folder holding `_posts/`, also when given `_posts/` itself."""
    corpus = Path(corpus)
    if not (corpus / "_posts").is_dir() and corpus.name == "_posts":
        return corpus.parent
    return corpus


def media_type(head: bytes) -> str | None:
    """The image type its first bytes declare, or None."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def site_path(reference: str, article_url: str) -> str | None:
    """The path inside the site that `reference` names, or None for an image elsewhere (or no image)."""
    parts = urlsplit(reference.strip())
    if parts.scheme or parts.netloc:
        own = urlsplit(article_url)
        if parts.scheme.lower() not in ("http", "https") or parts.netloc.lower() != own.netloc.lower():
            return None
    path = unquote(parts.path).lstrip("/")
    return path or None


def read_image(reference: str, article_url: str, site: Path, max_bytes: int = MAX_IMAGE_BYTES) -> Image | None:
    """The image `reference` names, read from `site`; None when it is elsewhere, missing, outside the site
    folder (`..`, a link out), over `max_bytes` or not an image."""
    path = site_path(reference, article_url)
    if path is None:
        return None
    root = site.resolve()
    try:
        file = (root / path).resolve()
        if not file.is_relative_to(root) or not file.is_file() or file.stat().st_size > max_bytes:
            return None
        with file.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except (OSError, ValueError):  # unreadable, or a name the file system refuses (a NUL byte)
        return None
    kind = media_type(data[:16])
    return Image(data, kind) if kind and len(data) <= max_bytes else None
