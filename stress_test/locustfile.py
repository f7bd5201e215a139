"""Load scenario for `audience serve`: what campaign systems and merchants' tools send.

Mix (weights): audiences of products the model knows, drawn from the artifact through
GET /products/sample (8), unknown products that fall back to cold start or lookalike (1),
and POST /recommend/batch of 10 products (1); n is 1, 5 or 10. Each user sends
LOAD_RATE_PER_USER requests a second (default 6: 1,000 users offer 6,000 req/s), so the
latencies are those of a server under that rate, not of a queue of 1,000 requests that
never pause (with no wait, latency would just be users / throughput).

    locust -f stress_test/locustfile.py --host http://127.0.0.1:8000   # see run_load.py

Environment: AUDIENCE_LOAD_API_KEY (sent as X-API-Key), LOAD_RATE_PER_USER.
"""

from __future__ import annotations

import os
import random
from typing import Any

from gevent.lock import Semaphore
from locust import FastHttpUser, constant_throughput, task

SAMPLE_CALLS = 10  # x 100 products
N_CHOICES = (1, 5, 10)
_ids: list[str] = []
_lock = Semaphore()


def product_ids(user: FastHttpUser) -> list[str]:
    """Known product ids, fetched once per locust process by whichever user starts first."""
    with _lock:
        if not _ids:
            found: set[str] = set()
            for _ in range(SAMPLE_CALLS):
                response = user.client.get("/products/sample?n=100", name="/products/sample")
                found.update(response.json()["product_ids"])
            _ids.extend(sorted(found))
    return _ids


class CampaignSystem(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("LOAD_RATE_PER_USER", "6")))

    def on_start(self) -> None:
        key = os.environ.get("AUDIENCE_LOAD_API_KEY")
        self.headers: dict[str, Any] = {"X-API-Key": key} if key else {}
        self.ids = product_ids(self)

    @task(8)
    def known_product(self) -> None:
        product = random.choice(self.ids)
        n = random.choice(N_CHOICES)
        self.client.get(
            f"/recommend/{product}?n={n}", headers=self.headers, name="/recommend/[known]"
        )

    @task(1)
    def unknown_product(self) -> None:
        product = f"NEW-{random.randrange(1_000_000):06d}"
        like = f"&like={random.choice(self.ids)}" if random.random() < 0.5 else ""
        n = random.choice(N_CHOICES)
        self.client.get(
            f"/recommend/{product}?n={n}{like}", headers=self.headers, name="/recommend/[unknown]"
        )

    @task(1)
    def batch(self) -> None:
        items = [
            {"product_id": p, "n": random.choice(N_CHOICES)} for p in random.sample(self.ids, 10)
        ]
        self.client.post(
            "/recommend/batch", json={"items": items}, headers=self.headers, name="/recommend/batch"
        )
