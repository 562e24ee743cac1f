"""The service's own settings (listening, workers, admin key, polling), taken once from the one Settings."""

from __future__ import annotations

from dataclasses import dataclass

from rag.settings import Settings


@dataclass(frozen=True)
class ServiceConfig:
    host: str
    port: int
    workers: int
    admin_api_key: str | None  # None disables POST /admin/reload
    reload_poll_seconds: float  # 0 disables the CURRENT poller
    client_timeout: float  # seconds for a request's headers, and again for its body


def service_config(settings: Settings) -> ServiceConfig:
    return ServiceConfig(host=settings.host, port=settings.port, workers=settings.workers,
                         admin_api_key=settings.admin_api_key, reload_poll_seconds=settings.reload_poll_seconds,
                         client_timeout=settings.client_timeout)
