"""The OpenAPI contract: a fuzzer holds the served /openapi.json against the server.

schemathesis loads the document the app serves (with an API key, as a campaign system
generating its client would) and runs every check over every operation in each phase:
the document's examples, the coverage phase (each bound and its neighbours, missing
and wrong-typed parameters, undeclared methods), hypothesis fuzzing of valid and invalid
requests, and stateful chains of linked calls. A valid request must be accepted, an
invalid one refused, and every answer must have a documented status, content type and
schema. The app is the one test_api.py serves: the tiny trained model published into a
temporary artifact root, called in-process over ASGI.

One kind of rule the schema cannot state: relations between fields (conversions at most
exposures, power above alpha, a lift that changes the rate...). The request models'
descriptions name them and the server answers 422 (tested in test_api.py). A schema-
valid request that breaks one is not a valid request, so `keep_cross_field_rules` brings
each valid (positive) case within them before it is sent, touching only those fields;
invalid (negative) cases go out as generated.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from audience.data.schema import DEFAULT_EVENT_WEIGHTS
from audience.errors import ConfigError
from audience.experiments import abtest
from audience.serving.api import create_app
from audience.serving.api.segment_routes import MAX_JSON_ROWS
from audience.serving.index import Index
from tests.serving.test_api import publish, settings

KEY = "contract-key"
#: Examples per operation in the fuzzing phase, and stateful scenarios: bounded so the
#: file runs in about a minute on two cores. Fixed seed: CI sees the same cases each run.
EXAMPLES = 150
SCENARIOS = 150
CONFIG: dict[str, Any] = {
    "seed": 21,
    "headers": {"X-API-Key": KEY},
    "checks": {
        "enabled": True,
        # The statuses this service refuses a request with; a body or query refused for
        # its size (413, 414, documented) is refused, which the default list forgets.
        "negative_data_rejection": {"expected-statuses": [400, 401, 404, 405, 413, 414, 422]},
        # A valid body may still be over AUDIENCE_MAX_BODY_BYTES, a bound no schema states.
        "positive_data_acceptance": {"expected-statuses": [200, 201, 401, 404, 409, 413]},
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": True},
    },
    "generation": {"max-examples": EXAMPLES, "database": "none"},
}


def _served() -> BaseSchema:
    """The document of an app serving the tiny model, loaded the way the fuzzer reads it.

    At import, as schemathesis' pytest integration parametrizes at collection (its
    fixture-based loader does not run under pytest 9). The index is read into memory, so
    the artifact's folder can go at once."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        publish(root)
        store = f"sqlite:///{_STORE.name}/audience.db"
        config = settings(root, api_keys=frozenset({KEY}), database_url=store)
        index = Index.open(root)
        app = create_app(config, index=index, signals=False, log_fd=_DEVNULL, ui=False)
    return schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=SchemathesisConfig.from_dict(CONFIG)
    )


def keep_cross_field_rules(case: Case) -> None:
    """A valid case brought within the rules that relate its fields (see the docstring).

    Applied just before the call, not as a generation hook: the stateful phase merges
    values from earlier answers into a body after the hooks have run."""
    meta = case.meta
    rule = RULES.get(case.operation.path)
    if meta is None or not meta.generation.mode.is_positive or rule is None:
        return
    values = case.body if isinstance(case.body, dict) else case.query  # GET: its query
    if isinstance(values, dict):
        rule(values)


_DEVNULL = os.open(os.devnull, os.O_WRONLY)  # the access log's; open for the whole session
_STORE = tempfile.TemporaryDirectory()  # the store's folder, for the whole session
contract = _served()


@contract.parametrize()
def test_every_operation_keeps_the_contract(case: Case) -> None:
    keep_cross_field_rules(case)
    case.call_and_validate()


class LinkedCalls(contract.as_state_machine()):  # type: ignore[misc]
    def before_call(self, case: Case) -> None:
        keep_cross_field_rules(case)


def test_chains_of_linked_calls_keep_the_contract() -> None:
    LinkedCalls.run(
        settings=hypothesis.settings(
            max_examples=SCENARIOS,
            stateful_step_count=4,
            deadline=None,
            database=None,
            derandomize=True,  # the same scenarios on every run, as the seed gives above
        )
    )


def test_the_document_states_the_served_bounds() -> None:
    """The stored N (10) and AUDIENCE_MAX_BATCH (100) are in the schema, as numbers."""
    raw = contract.raw_schema
    query = raw["paths"]["/recommend/{product_id}"]["get"]["parameters"]
    n = next(p for p in query if p["name"] == "n")["schema"]["anyOf"][0]
    assert (n["minimum"], n["maximum"]) == (1, 10)
    components = raw["components"]["schemas"]
    assert components["BatchItem"]["properties"]["n"]["anyOf"][0]["maximum"] == 10
    assert components["PlanRequest"]["properties"]["n"]["anyOf"][0]["maximum"] == 10
    assert components["BatchRequest"]["properties"]["items"]["maxItems"] == 100
    assert "x-audience-bound" not in str(raw)


# --- the rules between fields (request models' descriptions) -----------------------------


def _arm(arm: Any) -> tuple[int, int] | None:
    """Conversions at most exposures."""
    if not isinstance(arm, dict) or "conversions" not in arm or "exposures" not in arm:
        return None
    arm["conversions"] = min(arm["conversions"], arm["exposures"])
    return int(arm["conversions"]), int(arm["exposures"])


def _at_bound(arm: tuple[int, int] | None) -> bool:
    return arm is not None and arm[0] in (0, arm[1])


def _test_rules(body: dict[str, Any]) -> None:
    control = _arm(body.get("control"))
    variants = [_arm(v) for v in body.get("variants", [])]
    # z-unpooled is undefined for a 0% arm against a 100% one.
    if body.get("method") == "z-unpooled" and _at_bound(control) and any(map(_at_bound, variants)):
        body["method"] = "z-pooled"


def _bayes_rules(body: dict[str, Any]) -> None:
    _arm(body.get("control"))
    _arm(body.get("variant"))


def _srm_rules(body: dict[str, Any]) -> None:
    """One share per observed group."""
    shares, groups = body.get("shares"), len(body.get("observed", []))
    if isinstance(shares, list) and len(shares) != groups:
        body["shares"] = (shares + [1.0] * groups)[:groups]


def _rates_rules(body: dict[str, Any]) -> None:
    """A lift gives a treatment rate in (0, 1) other than the baseline; power above alpha."""
    base, lift = body.get("baseline"), body.get("lift")
    if isinstance(base, float | int) and isinstance(lift, float | int):
        relative = body.get("relative", True)
        rate = base * (1 + lift) if relative else base + lift  # as abtest.target_rate
        if not 0 < rate < 1 or rate == base:
            body["lift"] = _halving(body)
    if body.get("power", 0.8) <= body.get("alpha", 0.05):
        body["power"] = (body.get("alpha", 0.05) + 1) / 2


def _halving(body: dict[str, Any]) -> float:
    """The lift that halves the baseline: always a rate in (0, 1) other than it."""
    return -0.5 if body.get("relative", True) else -body["baseline"] / 2


def _plan_rules(body: dict[str, Any]) -> None:
    _rates_rules(body)


def _size_rules(body: dict[str, Any]) -> None:
    """One question: target or lift, not both; n_control alone asks for the MDE."""
    if body.get("target") is not None and body.get("lift") is not None:
        del body["lift"]
    base = body.get("baseline")
    if body.get("target") is not None and body["target"] == base:
        body["target"] = 0.25 if base == 0.5 else 0.5
    _rates_rules(body)
    asked = body.get("target") is not None or body.get("lift") is not None
    n_control = body.get("n_control")
    if n_control is None:
        if not asked:
            body["lift"] = _halving(body)
        return
    if round(n_control * body.get("ratio", 1.0)) < 1:  # no treatment users
        body["ratio"] = 1.0
    if not asked and not _detectable(body):
        body["lift"] = _halving(body)  # ask for the power instead


def _detectable(body: dict[str, Any]) -> bool:
    """Whether the groups detect some treatment rate (the MDE exists): an outcome, not a
    relation, so the statistics library itself answers."""
    n_control = int(body["n_control"])
    try:
        abtest.minimum_detectable_effect(
            body["baseline"],
            n_control,
            round(n_control * body.get("ratio", 1.0)),
            alpha=body.get("alpha", 0.05),
            power=body.get("power", 0.8),
            sides=body.get("sides", "two-sided"),
            method=body.get("method", "pooled"),
        )
    except ConfigError:
        return False
    return True


def _segment_rules(values: dict[str, Any]) -> None:
    """Exactly one of size and share; JSON at most MAX_JSON_ROWS rows; event types the
    model knows (its vocabulary, like the stored N, is the served model's)."""
    if values.get("size") is not None and values.get("share") is not None:
        values.pop("share")
    if values.get("size") is None and values.get("share") is None:
        values["size"] = 1
    size = values.get("size")  # a query's values come as text
    if values.get("format", "json") == "json" and size is not None and float(size) > MAX_JSON_ROWS:
        values["size"] = MAX_JSON_ROWS
    events = values.get("exclude_events")
    if isinstance(events, str):
        events = [t.strip() for t in events.split(",") if t.strip()]
        values["exclude_events"] = ",".join(t for t in events if t in DEFAULT_EVENT_WEIGHTS) or None
    elif isinstance(events, list):
        values["exclude_events"] = [t for t in events if t in DEFAULT_EVENT_WEIGHTS]
    if values.get("exclude_events") is None:
        values.pop("exclude_events", None)


def _campaign_rules(values: dict[str, Any]) -> None:
    """A segment's rules, and a conversion event type the model knows."""
    _segment_rules(values)
    if values.get("conversion") not in DEFAULT_EVENT_WEIGHTS:
        values["conversion"] = "purchased"


RULES = {
    "/campaigns": _campaign_rules,
    "/segments/{product_id}": _segment_rules,
    "/segments": _segment_rules,
    "/abtest/test": _test_rules,
    "/abtest/bayes": _bayes_rules,
    "/abtest/srm": _srm_rules,
    "/abtest/size": _size_rules,
    "/abtest/plan": _plan_rules,
}


def test_the_rules_agree_with_the_server(tmp_path: Path) -> None:
    """The rules above agree with the server's: each repaired body is accepted."""
    bodies = {
        "/abtest/test": {
            "control": {"conversions": 0, "exposures": 3},
            "variants": [{"conversions": 9, "exposures": 4}],
            "method": "z-unpooled",
        },
        "/abtest/bayes": {
            "control": {"conversions": 5, "exposures": 2},
            "variant": {"conversions": 1, "exposures": 1},
        },
        "/abtest/srm": {"observed": [3, 0, 4], "shares": [1.0]},
        "/abtest/size": {"baseline": 0.3, "target": 0.3, "lift": 0.1, "power": 0.01},
        "/abtest/plan": {
            "product_id": "p2",
            "experiment_id": "x",
            "baseline": 0.4,
            "lift": 0.0,
            "cost_per_contact": 1,
            "value_per_conversion": 2,
        },
    }
    publish(tmp_path)
    app = create_app(settings(tmp_path), signals=False, ui=False)
    with TestClient(app) as client:
        for path, body in bodies.items():
            assert client.post(path, json=body).status_code == 422, path
            RULES[path](body)
            assert client.post(path, json=body).status_code == 200, (path, body)
