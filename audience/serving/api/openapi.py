"""The OpenAPI document as served: FastAPI's, with the bounds known only at run time.

FastAPI builds the document from the routes and models once and caches it. Two bounds
are not known then: the stored N of the model being served (it changes when a hot
reload brings a model trained with another N) and AUDIENCE_MAX_BATCH. The models mark
where they go (`models.bound`); `install` serves a copy with the marks filled in, made
again whenever the stored N changes, so a client generated from /openapi.json knows the
limits the server enforces.

The copy also spells a fixed-length tuple of one type (the Bayes posteriors, a pair of
numbers) as `items` with minItems = maxItems: pydantic's `prefixItems` is valid OpenAPI
3.1, but tools that read schemas the 3.0 way (schemathesis among them) reject it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from audience.serving.api.holder import IndexHolder
from audience.serving.api.models import BOUND


def install(app: FastAPI, holder: IndexHolder, max_batch: int) -> None:
    """Make `app.openapi()` (what /openapi.json and /docs serve) state the run-time bounds."""
    built = app.openapi  # FastAPI's: the document without them, built once
    served: dict[int | None, dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        loaded = holder.loaded
        stored_n = None if loaded is None else loaded.index.n
        document = served.get(stored_n)
        if document is None:
            document = copy.deepcopy(built())
            _fill(document, {"stored_n": stored_n, "max_batch": max_batch})
            served.clear()  # the previous model's document
            served[stored_n] = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _fill(node: Any, bounds: Mapping[str, int | None]) -> None:
    """Replace each `BOUND` mark below `node` by its keywords; flatten one-type tuples."""
    if isinstance(node, list):
        for item in node:
            _fill(item, bounds)
        return
    if not isinstance(node, dict):
        return
    marks = node.pop(BOUND, None)
    if marks:
        # On a nullable value the bound belongs to the non-null branch.
        branches = [b for b in node.get("anyOf", [node]) if b.get("type") != "null"]
        for keyword, value in marks.items():
            number = bounds[value] if isinstance(value, str) else value
            if number is not None:  # the stored N before a model is loaded
                for branch in branches:
                    branch[keyword] = number
    items: list[Any] = node.get("prefixItems") or []
    same = bool(items) and all(item == items[0] for item in items)
    if same and node.get("minItems") == node.get("maxItems") == len(items):
        node["items"] = node.pop("prefixItems")[0]
    for value in node.values():
        _fill(value, bounds)
