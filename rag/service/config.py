"""The service's own settings (listening, workers, admin key, polling, origins, the site folder of the images),
taken once from the one Settings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rag.corpus.images import site_folder
from rag.errors import InvalidSetting
from rag.settings import Settings

ORIGIN = re.compile(r"https?://[^/\s?#,*]+")


@dataclass(frozen=True)
class ServiceConfig:
    host: str
    port: int
    workers: int
    admin_api_key: str | None  # None disables POST /admin/reload
    reload_poll_seconds: float  # 0 disables the CURRENT poller
    client_timeout: float  # seconds for a request's headers, and again for its body
    site_folder: Path  # the Jekyll site the articles' images are served from
    allowed_origins: tuple[str, ...] = ()  # browser pages elsewhere that may call the API (CORS)


def allowed_origins(text: str) -> tuple[str, ...]:
    """RAG_ALLOWED_ORIGINS as exact origins; a path, a wildcard or a bare host is refused, never widened."""
    origins = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for origin in origins:
        if not ORIGIN.fullmatch(origin):
            raise InvalidSetting(f"RAG_ALLOWED_ORIGINS: {origin!r} is not an origin (scheme://host[:port], no path)")
    return origins


def service_config(settings: Settings) -> ServiceConfig:
    return ServiceConfig(host=settings.host, port=settings.port, workers=settings.workers,
                         admin_api_key=settings.admin_api_key, reload_poll_seconds=settings.reload_poll_seconds,
                         client_timeout=settings.client_timeout,
                         allowed_origins=allowed_origins(settings.allowed_origins),
                         site_folder=site_folder(settings.corpus))
