"""Serving: a verified artifact in memory, answering who to contact about a product.

`index` loads an artifact and answers each product's audience (own list, look-alike,
category, cold start) as a slice of precomputed tables; `api/` serves it over HTTP
(FastAPI) and `ui` to merchants (Gradio). Only `api/` and `ui` import a web framework.
Imports `data` and `experiments`.
"""
