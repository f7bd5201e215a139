"""The HTTP service (FastAPI): `create_app(settings)` builds it, `audience serve` runs it.

Importing `audience` never imports this package (it pulls in fastapi); the modules:

- app.py            create_app: routers, auth, CORS, start-up load and hot reload
- holder.py         the served Index, swapped atomically; encoded-answer cache
- routes.py         /recommend, /users, /products, /health, /ready, /metrics
- fast.py           plain GET /recommend answered below FastAPI's routing (the hot path)
- auth.py           API keys (X-API-Key) for the campaign endpoints
- abtest_routes.py  /abtest/size|test|srm|bayes|plan over audience.experiments.abtest / campaign
- models.py         request and response models (the OpenAPI contract)
- openapi.py        the served document: FastAPI's plus the run-time bounds (stored N)
- errors.py         every exception to one JSON error shape, in one place
- observe.py        request ids, Prometheus metrics, JSON logs, body-size bound
"""

from __future__ import annotations

from audience.serving.api.app import create_app

__all__ = ["create_app"]
