"""The HTTP service: JSON and Server-Sent-Events answers, the chat page, article pages, hot reload.

`create_app(settings)` builds the FastAPI app (nothing is built at import time). The engine (model and
index) loads once per process, in a background thread started by the app's lifespan, so `/healthz`
answers at once while `/readyz` and `/ask` say 503 until it is loaded. A new index generation (its
`CURRENT` changed, or `POST /admin/reload`) is opened beside the running engine, sharing its model, and
swapped in atomically; the old engine closes when the last request using it finishes.

Run it with `serve(settings)` (`rag serve`), or with uvicorn's factory: `uvicorn --factory
rag.service:app_from_env` (settings from `RAG_*` variables).

Modules, in the order a request meets them: launcher (uvicorn, worker processes) -> app (the routes) ->
limits (body size) -> schemas (request models) -> holder (the swappable engine) -> streaming (SSE) /
pages (HTML) -> owners (the query log: answers recorded after they are sent, feedback, the report); errors
renders every failure as one JSON shape; config holds the service's own settings.
"""

from rag.service.app import create_app
from rag.service.launcher import app_from_env, serve

__all__ = ["app_from_env", "create_app", "serve"]
