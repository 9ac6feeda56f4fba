"""Load tests of the jobforge HTTP API with Locust, against a running `jobforge-server`.

Three user classes, chosen on the command line (all three by default):

- ``CreateJobs``: submits `echo` jobs, one per request, and batches of 50 now and then.
- ``ReadJobs``: reads jobs it submitted, lists the newest, and reads the queue stats.
- ``MixedUse``: both, nine reads to one write, as a dashboard-heavy deployment sees.

The server needs the demo kinds (``--demo-handlers``). With authentication on, set
``JOBFORGE_API_KEY`` to a key with the ``jobs:write`` and ``jobs:read`` scopes. See README.md.
"""

import os
import random

from locust import HttpUser, between, task

API_KEY = os.environ.get("JOBFORGE_API_KEY")


class _Api(HttpUser):
    abstract = True
    wait_time = between(0.0, 0.01)

    def on_start(self):
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"
        self.ids = []

    def submit(self):
        body = {"kind": "echo", "payload": {"n": random.randint(0, 1_000_000)}}
        with self.client.post("/v1/jobs", json=body, name="POST /v1/jobs", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"submit answered {r.status_code}: {r.text[:200]}")
                return
            self.ids.append(r.json()["id"])
            del self.ids[:-200]

    def submit_batch(self):
        body = {"jobs": [{"kind": "echo", "payload": {"i": i}} for i in range(50)]}
        with self.client.post("/v1/jobs/batch", json=body, name="POST /v1/jobs/batch", catch_response=True) as r:
            if r.status_code not in (200, 201):
                r.failure(f"batch answered {r.status_code}: {r.text[:200]}")

    def read(self):
        if not self.ids:
            self.submit()
            return
        job = random.choice(self.ids)
        with self.client.get(f"/v1/jobs/{job}", name="GET /v1/jobs/{id}", catch_response=True) as r:
            if r.status_code != 200 or r.json().get("id") != job:
                r.failure(f"get answered {r.status_code}: {r.text[:200]}")

    def list_newest(self):
        with self.client.get("/v1/jobs?limit=20&order=desc", name="GET /v1/jobs", catch_response=True) as r:
            if r.status_code != 200 or "items" not in r.json():
                r.failure(f"list answered {r.status_code}: {r.text[:200]}")

    def stats(self):
        with self.client.get("/v1/queues/stats", name="GET /v1/queues/stats", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"stats answered {r.status_code}: {r.text[:200]}")


class CreateJobs(_Api):
    @task(10)
    def one(self):
        self.submit()

    @task(1)
    def batch(self):
        self.submit_batch()


class ReadJobs(_Api):
    def on_start(self):
        super().on_start()
        for _ in range(20):
            self.submit()

    @task(6)
    def get(self):
        self.read()

    @task(3)
    def listing(self):
        self.list_newest()

    @task(1)
    def queue_stats(self):
        self.stats()


class MixedUse(_Api):
    @task(1)
    def write(self):
        self.submit()

    @task(6)
    def get(self):
        self.read()

    @task(2)
    def listing(self):
        self.list_newest()

    @task(1)
    def queue_stats(self):
        self.stats()
