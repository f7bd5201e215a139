"""The HTTP service: every endpoint's answer and error shape, auth, bounds, hot swap, serve.

Runs on the tiny trained log of tests/serving/test_index.py (users ann, bob, cat, dan;
products p1-p3 with interactions, p8 listed only), published into a temporary artifact root.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import polars as pl
import pytest
from fastapi.testclient import TestClient

from audience import artifact
from audience.data.schema import DEFAULT_EVENT_WEIGHTS
from audience.errors import ArtifactError
from audience.model.codes import coded
from audience.model.train import train
from audience.serving.api import create_app
from audience.serving.api.auth import ApiKeys
from audience.serving.api.fast import FastRecommend
from audience.serving.api.holder import IndexHolder, answer_dict
from audience.serving.api.models import LIKE_PATTERN, Recommendation, UserScore
from audience.serving.api.observe import MAX_QUERY_STRING
from audience.serving.index import Index
from audience.settings import Settings
from tests.model.test_audiences import EVENTS
from tests.serving.test_index import CATALOG

KEY = "test-key-1"


def publish(root: Path, n: int = 10) -> str:
    trained = train(
        coded(EVENTS, CATALOG, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, model="seed"
    )
    folder = artifact.publish(root, trained.tables, trained.model, {"config": {"n": n}})
    return folder.name


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("artifacts")
    publish(path)
    return path


def settings(root: Path, **changes: Any) -> Settings:
    base: dict[str, Any] = {"artifact": root, "reload_seconds": 0, "api_keys": frozenset()}
    return Settings(**(base | changes))


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    yield path, fd
    os.close(fd)


def client_for(config: Settings, log_fd: int | None = None) -> TestClient:
    fd = log_fd if log_fd is not None else os.open(os.devnull, os.O_WRONLY)
    return TestClient(create_app(config, signals=False, log_fd=fd))


@pytest.fixture
def client(root: Path) -> Iterator[TestClient]:
    with client_for(settings(root)) as c:
        yield c


@pytest.fixture
def keyed(root: Path) -> Iterator[TestClient]:
    with client_for(settings(root, api_keys=frozenset({KEY, "other"}))) as c:
        yield c


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def users(body: dict[str, Any]) -> list[str]:
    return [m["user_id"] for m in body["audience"]]


# --- /recommend ---------------------------------------------------------------------------


def test_recommend_is_the_indexes_answer_in_the_documented_shape(
    client: TestClient, root: Path
) -> None:
    response = client.get("/recommend/p2")
    assert response.status_code == 200
    body = response.json()
    Recommendation.model_validate(body)
    assert body["strategy"] == "personalized"
    assert users(body) == ["dan", "cat"]
    assert [m["rank"] for m in body["audience"]] == [1, 2]
    expected = answer_dict(Index.open(root).recommend("p2", 10))
    assert body == orjson.loads(orjson.dumps(expected))


def test_n_truncates_and_repeats_come_from_the_cache(client: TestClient) -> None:
    first = client.get("/recommend/p1?n=1")
    assert len(first.json()["audience"]) == 1
    assert client.get("/recommend/p1?n=1").content == first.content


@pytest.mark.parametrize("n", ["0", "11", "-3", "1000000"])
def test_n_outside_1_to_stored_n_is_a_422_naming_the_limit(client: TestClient, n: str) -> None:
    error = error_of(client.get(f"/recommend/p1?n={n}"), 422)
    assert error["field"] == "n" and error["code"] == "invalid_parameter"
    assert "between 1 and 10" in error["message"] and n in error["message"]


def test_n_not_a_number_names_the_parameter(client: TestClient) -> None:
    error = error_of(client.get("/recommend/p1?n=ten"), 422)
    assert error["field"] == "n" and "integer" in error["message"]


def test_unknown_products_get_a_strategy_not_an_error(client: TestClient) -> None:
    lookalike = client.get("/recommend/new-phone?like=p2,nope").json()
    assert lookalike["strategy"] == "lookalike"
    assert users(lookalike) == ["dan", "cat"]
    assert lookalike["notes"] == ["unknown similar products ignored: ['nope']"]
    assert client.get("/recommend/p8?n=3").json()["strategy"] == "category"
    assert client.get("/recommend/new-book?category=Books").json()["strategy"] == "category"
    cold = client.get("/recommend/never-seen?n=2").json()
    assert cold["strategy"] == "cold_start" and len(cold["audience"]) == 2


def test_product_id_and_like_are_bounded(client: TestClient) -> None:
    assert error_of(client.get("/recommend/" + "x" * 129), 422)["field"] == "product_id"
    many = ",".join(f"p{i}" for i in range(21))
    assert error_of(client.get(f"/recommend/p1?like={many}"), 422)["field"] == "like"
    assert error_of(client.get("/recommend/p1?like=" + "y" * 129), 422)["field"] == "like"
    assert error_of(client.get("/recommend/p1?like=" + "y" * 5000), 422)["field"] == "like"
    error = error_of(client.get("/recommend/p1?like=" + "y" * (MAX_QUERY_STRING + 1)), 414)
    assert error["code"] == "query_too_long"


def test_like_is_read_as_its_pattern_says(client: TestClient) -> None:
    """At most 20 comma-separated parts of at most 128 characters (LIKE_PATTERN); spaces
    around an id are dropped and empty parts skipped."""
    pattern = re.compile(LIKE_PATTERN)
    longest = ",".join(["z" * 128] * 20)
    for like in ("p2, ,nope ", ",,p2", longest, " " * 128):
        assert pattern.search(like)
        assert client.get("/recommend/new", params={"like": like}).status_code == 200, like
    spaced = client.get("/recommend/new", params={"like": " p2 ,,"}).json()
    assert spaced["strategy"] == "lookalike" and spaced["notes"] == []
    for like in (",".join(["p2"] * 21), "p2," + "z" * 129, "," * 20):
        assert not pattern.search(like)
        assert error_of(client.get("/recommend/new", params={"like": like}), 422)["field"] == "like"


def test_the_longest_valid_query_is_under_the_query_bound(client: TestClient) -> None:
    """Every character four UTF-8 bytes, percent-encoded: still a 200, not a 414."""
    like = ",".join(["\U0001f600" * 128] * 20)
    params = {"n": "10", "like": like, "category": "\U0001f600" * 128}
    response = client.get("/recommend/new", params=params)
    assert response.status_code == 200 and len(response.url.query) < MAX_QUERY_STRING
    assert len(response.url.query) > 30_000


@pytest.mark.parametrize(
    "path",
    [
        "/recommend/p1",
        "/recommend/p2?n=2",
        "/recommend/new-phone?like=p2,nope&n=3",
        "/recommend/new-book?category=Books",
        "/recommend/p1?n=3&n=2&other=x",
        "/recommend/p%201",
    ],
)
def test_plain_requests_take_the_fast_path_with_the_routes_answer(root: Path, path: str) -> None:
    """FastRecommend answers these itself, byte for byte as FastAPI's route would."""
    config = settings(root, api_keys=frozenset({KEY}))
    routed_app = create_app(config, signals=False, ui=False)
    routed_app.user_middleware = [
        m for m in routed_app.user_middleware if m.cls is not FastRecommend
    ]
    with client_for(config) as fast_client, TestClient(routed_app) as routed_client:
        fast = fast_client.get(path, headers={"X-API-Key": KEY})
        routed = routed_client.get(path, headers={"X-API-Key": KEY})
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.headers["x-request-id"]


@pytest.mark.parametrize(
    ("path", "key", "answered"),
    [
        ("/recommend/p1?n=2&like=p2", KEY, True),
        ("/recommend/p1", None, False),
        ("/recommend/p1", "guess", False),
        ("/recommend/p1?n=0", KEY, False),
        ("/recommend/p1?n=ten", KEY, False),
        ("/recommend/p1?n=", KEY, False),
        ("/recommend/", KEY, False),
        ("/recommend/p1/x", KEY, False),
    ],
)
def test_the_fast_path_answers_plain_requests_and_hands_on_the_rest(
    root: Path, path: str, key: str | None, answered: bool
) -> None:
    """No key, a bad n or an odd path: FastRecommend hands the request to FastAPI."""
    handed: list[str] = []
    sent: list[dict[str, Any]] = []

    async def fastapi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        handed.append(scope["path"])

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    holder = IndexHolder(root)
    holder.load()
    layer = FastRecommend(fastapi, holder, ApiKeys(frozenset({KEY})))
    url = httpx.URL(path)
    headers = [] if key is None else [(b"x-api-key", key.encode())]
    scope = {"type": "http", "method": "GET", "path": url.path, "query_string": url.query}
    asyncio.run(layer(scope | {"headers": headers}, None, send))  # type: ignore[arg-type]
    assert handed == ([] if answered else [url.path])
    assert [m.get("status") for m in sent] == ([200, None] if answered else [])


# --- /recommend/batch -------------------------------------------------------------------


def test_batch_answers_in_order_from_one_version(client: TestClient) -> None:
    items = [{"product_id": "p2", "n": 1}, {"product_id": "zzz"}, {"product_id": "p1"}]
    body = client.post("/recommend/batch", json={"items": items}).json()
    assert [r["product_id"] for r in body["results"]] == ["p2", "zzz", "p1"]
    assert [r["strategy"] for r in body["results"]] == [
        "personalized",
        "cold_start",
        "personalized",
    ]
    assert body["results"][0] == client.get("/recommend/p2?n=1").json()
    assert body["model_version"] == body["results"][0]["model_version"]


def test_batch_size_items_and_body_are_bounded(root: Path) -> None:
    with client_for(settings(root, max_batch=2, max_body_bytes=2048)) as small:
        three = {"items": [{"product_id": f"p{i}"} for i in range(3)]}
        error = error_of(small.post("/recommend/batch", json=three), 422)
        assert error["field"] == "items" and "at most 2" in error["message"]
        bad_n = {"items": [{"product_id": "p1"}, {"product_id": "p2", "n": 99}]}
        assert error_of(small.post("/recommend/batch", json=bad_n), 422)["field"] == "items.1.n"
        huge = {"items": [{"product_id": "p" * 100}] * 30}
        error = error_of(small.post("/recommend/batch", json=huge), 413)
        assert error["code"] == "body_too_large"
        chunked = small.post("/recommend/batch", content=iter([b"{" + b" " * 3000 + b"}"]))
        assert error_of(chunked, 413)["code"] == "body_too_large"
        empty = error_of(small.post("/recommend/batch", json={"items": []}), 422)
        assert empty["field"] == "items"
        extra = {"items": [{"product_id": "p1", "colour": "red"}]}
        assert (
            error_of(small.post("/recommend/batch", json=extra), 422)["field"] == "items.0.colour"
        )


# --- /users, /products ------------------------------------------------------------------


def test_user_score_components_and_rank(client: TestClient) -> None:
    body = client.get("/users/dan").json()
    UserScore.model_validate(body)
    assert body["user_id"] == "dan" and body["users"] == 4 and 1 <= body["rank"] <= 4
    assert body["score"] == pytest.approx(sum(body["components"].values()))
    assert "interactions" in body["features"]


def test_unknown_user_is_a_404(client: TestClient) -> None:
    error = error_of(client.get("/users/nobody"), 404)
    assert error["code"] == "unknown_user" and error["field"] == "user_id"
    assert "nobody" in error["message"]


def test_product_search_and_sample(client: TestClient) -> None:
    found = client.get("/products?query=novel").json()
    assert [p["product_id"] for p in found["products"]] == ["p8"]
    assert found["products"][0]["category"] == "Books"
    assert len(client.get("/products?limit=2").json()["products"]) == 2
    sample = client.get("/products/sample?n=5").json()["product_ids"]
    assert sorted(sample) == ["p1", "p2", "p3"]
    assert error_of(client.get("/products?limit=101"), 422)["field"] == "limit"
    assert error_of(client.get("/products?query=" + "q" * 101), 422)["field"] == "query"


# --- operations -------------------------------------------------------------------------


def test_health_ready_and_unknown_routes(client: TestClient, root: Path) -> None:
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["stored_n"] == 10
    assert ready["model_version"] == (root / "current").read_text().strip()
    assert ready["age_seconds"] >= 0 and ready["last_reload_error"] is None
    assert error_of(client.get("/nowhere"), 404)["code"] == "not_found"
    assert error_of(client.post("/health"), 405)["code"] == "method_not_allowed"


def test_metrics_count_requests_and_name_the_version(client: TestClient, root: Path) -> None:
    client.get("/recommend/p1")
    client.get("/recommend/p1?n=0")
    text = client.get("/metrics").text
    route = 'route="/recommend/{product_id}"'
    assert f'audience_http_requests_total{{method="GET",{route},status="200"}} 1.0' in text
    assert f'audience_http_requests_total{{method="GET",{route},status="422"}} 1.0' in text
    assert f'audience_http_request_duration_seconds_bucket{{le="0.05",{route}}}' in text
    version = (root / "current").read_text().strip()
    assert f'audience_artifact_loaded{{version="{version}"}} 1.0' in text


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert client.get("/health", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == (
        "abc-1"
    )
    made = {client.get("/health").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3


def test_access_log_is_json_with_request_id_and_latency(
    root: Path, log_file: tuple[Path, int]
) -> None:
    path, fd = log_file
    with client_for(settings(root), fd) as c:
        c.get("/recommend/p1", headers={"X-Request-ID": "trace-7"})
        c.get("/users/nobody")
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    first = next(line for line in lines if line["request_id"] == "trace-7")
    assert first["status"] == 200 and first["path"] == "/recommend/p1" and first["ms"] >= 0
    assert any(line["status"] == 404 for line in lines)


def test_sampled_access_log_keeps_every_error(root: Path, log_file: tuple[Path, int]) -> None:
    path, fd = log_file
    with client_for(settings(root, access_log_sample=0.0), fd) as c:
        for _ in range(5):
            c.get("/recommend/p1")
        c.get("/recommend/p1?n=0")
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [line["status"] for line in lines] == [422]


def test_openapi_documents_typed_responses_and_errors(keyed: TestClient) -> None:
    schema = keyed.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("Recommendation", "BatchResponse", "UserScore", "ProductSearch", "ErrorBody"):
        assert name in components
    get = schema["paths"]["/recommend/{product_id}"]["get"]
    ok = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/Recommendation")
    assert get["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert {p["name"] for p in get["parameters"]} >= {"product_id", "n", "like"}
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]
    assert "security" in get and "security" not in schema["paths"]["/products"]["get"]
    for path in ("/abtest/size", "/abtest/test", "/abtest/srm", "/abtest/bayes", "/abtest/plan"):
        assert "200" in schema["paths"][path]["post"]["responses"]


def stored_n_in_document(client: TestClient) -> int:
    """The maximum of `n` in the served document, checked to agree in all three places."""
    schema = client.get("/openapi.json").json()
    query = schema["paths"]["/recommend/{product_id}"]["get"]["parameters"]
    bounds = {next(p for p in query if p["name"] == "n")["schema"]["anyOf"][0]["maximum"]}
    for model in ("BatchItem", "PlanRequest"):
        bounds.add(schema["components"]["schemas"][model]["properties"]["n"]["anyOf"][0]["maximum"])
    assert len(bounds) == 1, bounds
    return int(bounds.pop())


def test_openapi_documents_every_status_each_operation_answers(keyed: TestClient) -> None:
    """What the contract test found missing: 400 (a body that is not UTF-8), 404 (an id
    with '/'), 413 and 414; each with the shared error model and what it means."""
    paths = keyed.get("/openapi.json").json()["paths"]
    statuses = {
        ("get", "/recommend/{product_id}"): {"200", "401", "404", "414", "422", "503"},
        ("post", "/recommend/batch"): {"200", "400", "401", "413", "422", "503"},
        ("get", "/users/{user_id}"): {"200", "401", "404", "422", "503"},
        ("post", "/abtest/size"): {"200", "400", "401", "413", "422"},
        ("post", "/abtest/plan"): {"200", "400", "401", "413", "422", "503"},
        ("get", "/products"): {"200", "414", "422", "503"},
        ("get", "/health"): {"200"},
    }
    for (method, path), expected in statuses.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == expected, (path, set(responses))
        for status in expected - {"200"}:
            content = responses[status]["content"]["application/json"]["schema"]
            assert content["$ref"].endswith("/ErrorBody") and responses[status]["description"]
    product = paths["/recommend/{product_id}"]["get"]["parameters"][0]["schema"]
    assert product["pattern"] == "^[^/]+$" and product["maxLength"] == 128


def test_openapi_without_keys_documents_no_401(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "401" not in paths["/recommend/{product_id}"]["get"]["responses"]
    assert "401" not in paths["/abtest/size"]["post"]["responses"]


def test_fixed_length_tuples_are_plain_arrays_in_the_document(client: TestClient) -> None:
    """pydantic's prefixItems for the Bayes posteriors made the document invalid to tools
    that read schemas the OpenAPI 3.0 way (schemathesis refused the operation)."""
    schema = client.get("/openapi.json").json()
    posterior = schema["components"]["schemas"]["BayesComparison"]["properties"]["posterior_a"]
    assert posterior["items"] == {"type": "number"}
    assert posterior["minItems"] == posterior["maxItems"] == 2
    assert "prefixItems" not in str(schema)


def test_the_batch_path_allows_post_only(keyed: TestClient) -> None:
    """A concrete path wins over the template, as OpenAPI matches them: GET and OPTIONS on
    /recommend/batch are 405 with `Allow: POST`, not an audience for a product 'batch'."""
    for method in ("GET", "OPTIONS", "DELETE"):
        response = keyed.request(method, "/recommend/batch", headers={"X-API-Key": KEY})
        assert error_of(response, 405)["code"] == "method_not_allowed"
        assert response.headers["allow"] == "POST"
    assert keyed.options("/recommend/p1").headers["allow"] == "GET"


def test_a_body_that_is_not_utf8_is_a_400(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    response = client.post("/recommend/batch", content=b'{"items": "\xff"}', headers=headers)
    error = error_of(response, 400)
    assert error["code"] == "bad_request" and "UTF-8" in error["message"]
    assert error_of(client.post("/abtest/srm", content=b"{", headers=headers), 422)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"observed": ["5", 3]}, "observed.0"),
        ({"observed": [True, 3]}, "observed.0"),
        ({"observed": [5.5, 3]}, "observed.0"),
        ({"observed": [5, 3], "alpha": "0.01"}, "alpha"),
        ({"observed": [5, 3], "shares": [1, 0]}, "shares.1"),
        ({"observed": [10**13, 3]}, "observed.0"),
    ],
)
def test_bodies_are_read_as_their_schema_says(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    """No coercion: a string is not a number and `true` is not 1 (the schema says so)."""
    assert error_of(client.post("/abtest/srm", json=body), 422)["field"] == field


def test_an_integral_float_is_an_integer(client: TestClient) -> None:
    """JSON Schema's integer includes 5.0, so the server takes it."""
    assert client.post("/abtest/srm", json={"observed": [5.0, 3]}).json()["observed"] == [5, 3]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"control": {"conversions": 10**6 + 1, "exposures": 10**7}}, "control.conversions"),
        ({"prior_alpha": 0.5}, "prior_alpha"),
    ],
)
def test_bayes_inputs_stay_where_the_statistics_hold(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    """The exact Bayes sum costs a term per conversion (10**9 was a 500); a prior below 1
    gave P = 1.0 where the truth is about 0.9."""
    arm = {"conversions": 0, "exposures": 1}
    full = {"control": arm, "variant": {"conversions": 1, "exposures": 1}} | body
    assert error_of(client.post("/abtest/bayes", json=full), 422)["field"] == field


def test_a_sample_size_past_64_bits_is_answered(client: TestClient) -> None:
    """A vanishing lift needs more users than 64 bits count: JSON carries them (orjson
    could not, a 500)."""
    body = {"baseline": 0.5, "target": 0.5 + 1e-12}
    size = client.post("/abtest/size", json=body)
    assert size.status_code == 200 and size.json()["n_control"] > 2**63


# --- access -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/recommend/p1", "/users/dan", "/abtest/srm", "/recommend/batch"])
def test_campaign_endpoints_need_a_valid_key(keyed: TestClient, path: str) -> None:
    call = keyed.post if path in ("/abtest/srm", "/recommend/batch") else keyed.get
    missing = error_of(call(path), 401)
    assert missing["code"] == "unauthorized" and "missing X-API-Key" in missing["message"]
    wrong = error_of(call(path, headers={"X-API-Key": "guess"}), 401)
    assert "not a valid key" in wrong["message"]


def test_a_valid_key_opens_them_and_open_endpoints_need_none(keyed: TestClient) -> None:
    assert keyed.get("/recommend/p1", headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.get("/users/dan", headers={"X-API-Key": "other"}).status_code == 200
    for path in ("/health", "/ready", "/metrics", "/products", "/products/sample", "/docs"):
        assert keyed.get(path).status_code == 200, path


def test_without_keys_campaign_endpoints_are_open(client: TestClient) -> None:
    assert client.get("/recommend/p1").status_code == 200


def test_cors_lists_origins_without_credentials(root: Path) -> None:
    with client_for(settings(root, cors_origins=("https://shop.example",))) as c:
        headers = {"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
        allowed = c.options("/recommend/p1", headers=headers)
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        assert "access-control-allow-credentials" not in allowed.headers
        answer = c.get("/recommend/p1", headers={"Origin": "https://shop.example"})
        assert answer.headers["access-control-allow-origin"] == "https://shop.example"
        other = c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    with pytest.raises(ValueError, match="not allowed"):
        Settings(cors_origins="*")


# --- /abtest ----------------------------------------------------------------------------


def test_abtest_size_power_and_mde(client: TestClient) -> None:
    size = client.post("/abtest/size", json={"baseline": 0.05, "lift": 0.1}).json()
    assert size["n_control"] == size["n_treatment"] > 30_000
    power = client.post("/abtest/size", json={"baseline": 0.05, "target": 0.06, "n_control": 5000})
    assert 0 < power.json()["power"] < 1
    mde = client.post("/abtest/size", json={"baseline": 0.05, "n_control": 5000}).json()
    assert mde["target"] > 0.05


@pytest.mark.parametrize(
    ("path", "body", "check"),
    [
        pytest.param(
            # abtest.sample_size: statsmodels' cohen-h solver searches from 2 users up, so
            # under ~3 users per arm it returned NaN and math.ceil(NaN) was a 500.
            "/abtest/size",
            {"baseline": 0.01, "target": 0.99, "method": "cohen-h", "sides": "one-sided"},
            # (1 + 1/r) ((z(0.95) + z(0.8)) / h)^2 with h = 2 asin(sqrt(.99)) - 2 asin(sqrt(.01))
            {"n_control_exact": 1.6459039, "n_control": 2, "n_treatment": 2},
            id="cohen-h sample size of a large effect",
        ),
        pytest.param(
            # abtest._relative_lift: Nam's cubic (statsmodels' Koopman) took complex roots
            # for a 0/1 variant against a large control: [0.105, 0.105] around -1.
            "/abtest/test",
            {
                "control": {"conversions": 13_095_896, "exposures": 14_665_948},
                "variants": [{"conversions": 0, "exposures": 1}],
            },
            # Koopman's score test inverted: 0 to 0.888577 on the ratio
            {"relative_lift": {"low": -1.0, "estimate": -1.0, "high": -0.111423}},
            id="koopman interval of a one-user arm",
        ),
    ],
)
def test_statistics_the_library_got_wrong(
    client: TestClient, path: str, body: dict[str, Any], check: dict[str, Any]
) -> None:
    """Valid requests the statistics library answered wrongly (found by test_contract.py)."""
    answer = client.post(path, json=body)
    assert answer.status_code == 200
    result = answer.json()
    if "variants" in result:
        result = result["variants"][0]
    for field, expected in check.items():
        actual = result[field]
        if isinstance(expected, dict):
            actual = {key: actual[key] for key in expected}
        assert actual == pytest.approx(expected, abs=5e-7)
    lift = result.get("relative_lift") or {"low": 0, "estimate": 0, "high": 0}
    assert lift["low"] <= lift["estimate"] <= lift["high"]


def test_abtest_test_srm_and_bayes(client: TestClient) -> None:
    arm = {"conversions": 100, "exposures": 2000}
    better = {"conversions": 150, "exposures": 2000}
    one = client.post("/abtest/test", json={"control": arm, "variants": [better]}).json()
    assert one["significant"] is True and one["rate_b"] == 0.075
    two = client.post("/abtest/test", json={"control": arm, "variants": [better, arm]}).json()
    assert [v["arm"] for v in two["variants"]] == ["b", "c"]
    srm = client.post("/abtest/srm", json={"observed": [5000, 4000]}).json()
    assert srm["mismatch"] is True
    bayes = client.post("/abtest/bayes", json={"control": arm, "variant": better}).json()
    assert bayes["prob_b_beats_a"] > 0.99


def test_abtest_plan_draws_the_audience_from_the_model(client: TestClient) -> None:
    body = {
        "product_id": "p2",
        "experiment_id": "exp-1",
        "baseline": 0.05,
        "lift": 0.2,
        "cost_per_contact": 0.1,
        "value_per_conversion": 30,
        "holdout_share": 0.5,
    }
    plan = client.post("/abtest/plan", json=body).json()
    assert plan["strategy"] == "personalized"
    assert [g["user_id"] for g in plan["groups"]] == ["dan", "cat"]
    assert plan["plan"]["audience_size"] == 2 and plan["plan"]["experiment_id"] == "exp-1"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/abtest/size", {"baseline": 1.5, "lift": 0.1}, "baseline"),
        ("/abtest/size", {"baseline": 0.05}, "target"),
        ("/abtest/srm", {"observed": [10, 10], "alpha": 2}, "alpha"),
        (
            "/abtest/test",
            {
                "control": {"conversions": 5, "exposures": 10},
                "variants": [{"conversions": 11, "exposures": 10}],
            },
            "conversions_b",
        ),
        ("/abtest/bayes", {"control": {"conversions": 1}, "variant": {}}, "control.exposures"),
    ],
)
def test_abtest_errors_name_the_field(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    error = error_of(client.post(path, json=body), 422)
    assert error["field"] == field, error


def test_abtest_plan_error_names_the_field(client: TestClient) -> None:
    body = {
        "product_id": "p2",
        "experiment_id": "exp-1",
        "baseline": 0.05,
        "lift": 0.2,
        "cost_per_contact": -1,
        "value_per_conversion": 30,
    }
    assert error_of(client.post("/abtest/plan", json=body), 422)["field"] == "cost_per_contact"


# --- model updates ----------------------------------------------------------------------


def test_a_new_version_is_swapped_in_and_served(tmp_path: Path) -> None:
    first = publish(tmp_path)
    with client_for(settings(tmp_path)) as c:
        holder: IndexHolder = c.app.state.holder  # type: ignore[attr-defined]
        assert holder.check() is False  # nothing new
        c.get("/recommend/p1")  # fills the old version's cache
        assert stored_n_in_document(c) == 10
        second = publish(tmp_path, n=3)
        assert holder.check() is True
        ready = c.get("/ready").json()
        assert ready["model_version"] == second != first and ready["stored_n"] == 3
        assert ready["reloads"] == 1
        assert c.get("/recommend/p1").json()["model_version"] == second
        assert error_of(c.get("/recommend/p1?n=4"), 422)["message"].count("between 1 and 3")
        assert stored_n_in_document(c) == 3  # the document follows the model
        metrics = c.get("/metrics").text
        assert f'audience_artifact_loaded{{version="{first}"}} 0.0' in metrics
        assert f'audience_artifact_loaded{{version="{second}"}} 1.0' in metrics
        assert 'audience_artifact_reloads_total{result="ok"} 1.0' in metrics


def test_a_tampered_version_is_refused_and_the_old_one_keeps_serving(tmp_path: Path) -> None:
    good = publish(tmp_path)
    with client_for(settings(tmp_path)) as c:
        holder: IndexHolder = c.app.state.holder  # type: ignore[attr-defined]
        bad = publish(tmp_path, n=3)
        scores = tmp_path / "versions" / bad / "user_scores.parquet"
        pl.read_parquet(scores).head(1).write_parquet(scores)
        assert holder.check() is False
        ready = c.get("/ready").json()
        assert ready["model_version"] == good and ready["failed_reloads"] == 1
        assert "checksum" in ready["last_reload_error"]["message"]
        assert c.get("/recommend/p1").json()["model_version"] == good
        assert holder.check() is False and holder.status.failures == 1  # not re-read
        assert holder.check(force=True) is False and holder.status.failures == 2
        assert 'audience_artifact_reloads_total{result="failed"} 2.0' in c.get("/metrics").text
        fixed = publish(tmp_path, n=4)
        assert holder.check() is True
        ready = c.get("/ready").json()
        assert ready["model_version"] == fixed and ready["last_reload_error"] is None


def test_swaps_under_concurrent_requests_fail_no_request(tmp_path: Path) -> None:
    """Four threads call /recommend while versions (one of them broken) are swapped in."""
    good = {publish(tmp_path)}
    stop = threading.Event()
    answers: list[tuple[int, str | None]] = []

    with client_for(settings(tmp_path)) as c:
        holder: IndexHolder = c.app.state.holder  # type: ignore[attr-defined]

        def hammer() -> None:
            while not stop.is_set():
                for product in ("p1", "p2", "unknown"):
                    r = c.get(f"/recommend/{product}?n=1")
                    answers.append((r.status_code, r.json().get("model_version")))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for n in (3, 4, 5):
                version = publish(tmp_path, n=n)
                if n == 4:  # a truncated table: refused, the previous version serves on
                    scores = tmp_path / "versions" / version / "user_scores.parquet"
                    pl.read_parquet(scores).head(1).write_parquet(scores)
                    assert holder.check() is False
                else:
                    assert holder.check() is True
                    good.add(version)
                time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    assert len(answers) > 50
    assert {status for status, _ in answers} == {200}
    assert {version for _, version in answers} <= good


def test_a_pointer_to_a_missing_version_is_refused(tmp_path: Path) -> None:
    good = publish(tmp_path)
    with client_for(settings(tmp_path)) as c:
        holder: IndexHolder = c.app.state.holder  # type: ignore[attr-defined]
        (tmp_path / "current").write_text("20990101T000000000000Z\n")
        assert holder.check() is False
        assert c.get("/ready").json()["model_version"] == good
        assert c.get("/recommend/p1").status_code == 200


def test_the_poller_picks_up_a_new_version(tmp_path: Path) -> None:
    publish(tmp_path)
    with client_for(settings(tmp_path, reload_seconds=0.05)) as c:
        newer = publish(tmp_path, n=2)
        deadline = time.monotonic() + 20
        while c.get("/ready").json()["model_version"] != newer:
            assert time.monotonic() < deadline, "the poller never swapped"
            time.sleep(0.05)


def test_start_up_fails_without_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="audience train"), client_for(settings(tmp_path)):
        pass


# --- audience serve ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "audience_cli.main", "serve", *args]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"AUDIENCE_RELOAD_SECONDS": "0"} | (env or {}),
    )


def wait_ready(base: str, server: subprocess.Popen[str]) -> None:
    """Until `serve`'s server answers /ready (60 s at most; fails if it exits)."""
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.communicate(timeout=10)
        assert time.monotonic() < deadline, "server not ready in 60 s"
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)


def stop(server: subprocess.Popen[str]) -> str:
    """Stop `serve`'s server (SIGTERM, then SIGKILL after 20 s); its stdout."""
    server.terminate()
    try:
        out, _ = server.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        out, _ = server.communicate(timeout=10)
    return out


def test_audience_serve_answers_over_http(root: Path) -> None:
    port = free_port()
    server = serve("--artifact", str(root), "--port", str(port), env={"AUDIENCE_API_KEYS": KEY})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        answer = httpx.get(f"{base}/recommend/p2?n=1", headers={"X-API-Key": KEY}, timeout=5)
        assert answer.status_code == 200 and users(answer.json()) == ["dan"]
        assert httpx.get(f"{base}/recommend/p2", timeout=5).status_code == 401
    finally:
        out = stop(server)
    assert f"{base}/docs" in out and "X-API-Key required" in out


def test_audience_serve_refuses_to_start_without_an_artifact(tmp_path: Path) -> None:
    server = serve("--artifact", str(tmp_path / "none"), "--port", str(free_port()))
    try:
        _, err = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 2
    assert err.strip().count("\n") == 0 and "audience train" in err
