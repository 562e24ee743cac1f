"""Running the service: `serve(settings)` under uvicorn (one process, or N workers that rebuild the app
from `RAG_*` variables through `app_from_env`), and `export_env`, which writes settings for them."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from rag.service.app import create_app
from rag.service.config import service_config
from rag.settings import Settings

APP_FACTORY = "rag.service:app_from_env"


def _log_to_console() -> None:
    """Show the service's own messages (engine loaded, reloads) beside uvicorn's."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")


def app_from_env() -> FastAPI:
    """uvicorn's factory for worker processes: settings from `RAG_*` variables."""
    _log_to_console()
    return create_app(Settings())


def _values(model: BaseModel) -> dict[str, Any]:
    """The fields' values as they are (secrets still wrapped), then any extra keyword arguments."""
    return {**{name: getattr(model, name) for name in type(model).model_fields}, **(model.model_extra or {})}


def _revealed(value: Any) -> Any:
    """`value` as JSON-ready data, secrets in the clear (model_dump and str() would mask them as `**********`)."""
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, BaseModel):
        return {name: _revealed(v) for name, v in _values(value).items()}
    if isinstance(value, dict):
        return {str(k): _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_revealed(v) for v in value]
    return to_jsonable_python(value)  # paths, enums, dates: as pydantic writes them


def env_value(value: Any) -> str:
    """The text of an environment variable that pydantic-settings reads back as `value` (complex ones as JSON)."""
    plain = _revealed(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def export_env(model: BaseModel, prefix: str | None = None) -> None:
    """Put every value of `model` into `<prefix><NAME>` variables (default prefix: the model's env_prefix),
    so that processes started from here read the same settings; a None value removes its variable."""
    prefix = model.model_config.get("env_prefix", "") if prefix is None else prefix
    for name, value in _values(model).items():
        variable = f"{prefix}{name}".upper()
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = env_value(value)


def serve(settings: Settings) -> None:
    """Run the service with uvicorn on the configured host and port; prints the URL first."""
    import uvicorn

    _log_to_console()
    config = service_config(settings)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"jrag: serving http://{shown}:{config.port}/ (index {settings.index}, "
          f"{config.workers} worker{'s' if config.workers > 1 else ''}); Ctrl+C stops", flush=True)
    if config.workers > 1:
        export_env(settings)  # each worker process builds its app from RAG_* variables
        uvicorn.run(APP_FACTORY, factory=True, host=config.host, port=config.port, workers=config.workers,
                    log_level="info")
    else:
        uvicorn.run(create_app(settings), host=config.host, port=config.port, log_level="info")
