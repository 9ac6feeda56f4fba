#!/usr/bin/env python3
"""jobforge over HTTP with the Python standard library only: submit jobs, poll them to
completion, read the stats.

Needs a server with the demo kinds (``jobforge-server --demo-handlers``).
Usage: ``JOBFORGE_URL=http://127.0.0.1:8080 python3 examples/clients/client.py``
(with ``JOBFORGE_API_KEY=jfk_...`` when the server requires authentication).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request


class Problem(Exception):
    """An RFC 9457 problem answered by the server."""

    def __init__(self, status, body):
        self.status = status
        self.body = body
        super().__init__(f"{status} {body.get('type')}: {body.get('detail')} (field: {body.get('field')})")


class JobforgeClient:
    def __init__(self, base_url, api_key=None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def _request(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("accept", "application/json")
        if data is not None:
            request.add_header("content-type", "application/json")
        if self.api_key:
            request.add_header("authorization", "Bearer " + self.api_key)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
                return response.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as error:
            raise Problem(error.code, json.loads(error.read() or b"{}")) from None

    def submit(self, kind, payload=None, **options):
        """Submit one job; answers the stored job."""
        body = {"kind": kind, "payload": payload, **options}
        _, job = self._request("POST", "/v1/jobs", body)
        return job

    def get(self, job_id):
        _, job = self._request("GET", f"/v1/jobs/{job_id}")
        return job

    def wait(self, job_id, timeout=20.0):
        """Poll until the job is succeeded, dead or cancelled."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["state"] in ("succeeded", "dead", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(0.05)

    def put_schedule(self, schedule_id, definition):
        """Declare a schedule (idempotent); answers {"outcome": ..., "schedule": ...}."""
        _, answer = self._request("PUT", f"/v1/schedules/{schedule_id}", definition)
        return answer

    def trigger_schedule(self, schedule_id):
        """Submit the schedule's job now; answers {"job_id": ..., "location": ...}."""
        _, answer = self._request("POST", f"/v1/schedules/{schedule_id}/trigger")
        return answer

    def delete_schedule(self, schedule_id):
        self._request("DELETE", f"/v1/schedules/{schedule_id}")

    def stats(self):
        _, stats = self._request("GET", "/v1/queues/stats")
        return stats

    def submit_workflow(self, name, steps):
        """Submit a workflow: steps as {"name", "after": [names], "job": {...}}."""
        _, workflow = self._request("POST", "/v1/workflows", {"name": name, "steps": steps})
        return workflow

    def wait_workflow(self, workflow_id, timeout=30.0):
        """Poll until every step of the workflow has finished."""
        deadline = time.monotonic() + timeout
        while True:
            _, workflow = self._request("GET", f"/v1/workflows/{workflow_id}")
            if workflow["finished"]:
                return workflow
            if time.monotonic() > deadline:
                raise TimeoutError(f"workflow {workflow_id} unfinished after {timeout}s")
            time.sleep(0.05)


def main():
    client = JobforgeClient(
        os.environ.get("JOBFORGE_URL", "http://127.0.0.1:8080"),
        os.environ.get("JOBFORGE_API_KEY"),
    )
    jobs = [
        client.submit("echo", {"hello": "from python"}),
        client.submit("fail_n_times", {"times": 1}),
        client.submit("sleep", {"ms": 20}),
    ]
    print("submitted", " ".join(job["id"] for job in jobs))
    for job in jobs:
        done = client.wait(job["id"])
        if done["state"] != "succeeded":
            print(f"job {done['id']} ended {done['state']}: {done['last_error']}", file=sys.stderr)
            return 1
        print(f"{done['id']} ({done['kind']}) succeeded after {done['attempt']} attempt(s): {json.dumps(done['result'])}")
    # Errors are problems with a stable type and the field that was wrong.
    try:
        client.submit("echo", priority="high")
        print("a bad priority was accepted", file=sys.stderr)
        return 1
    except Problem as problem:
        assert problem.status == 422 and problem.body["field"] == "priority", problem
        print(f"bad input answered {problem.status} {problem.body['type']} (field {problem.body['field']})")
    # A schedule: declared twice (the second changes nothing), triggered now, removed.
    definition = {"cron": "0 * * * *", "job": {"kind": "echo", "payload": {"from": "python"}}}
    first = client.put_schedule("python-hourly", definition)
    again = client.put_schedule("python-hourly", definition)
    assert again["outcome"] == "unchanged", again
    triggered = client.trigger_schedule("python-hourly")
    done = client.wait(triggered["job_id"])
    assert done["state"] == "succeeded", done
    print(f"schedule python-hourly ({first['outcome']}, next tick {again['schedule']['next_run_at']}): triggered job succeeded")
    client.delete_schedule("python-hourly")
    # A workflow: charge, then ship and email in parallel, then close once both succeeded.
    workflow = client.submit_workflow("python-order", [
        {"name": "charge", "job": {"kind": "echo", "payload": {"cents": 1200}}},
        {"name": "ship", "after": ["charge"], "job": {"kind": "echo", "payload": "parcel"}},
        {"name": "email", "after": ["charge"], "job": {"kind": "echo", "payload": "receipt"}},
        {"name": "close", "after": ["ship", "email"], "job": {"kind": "echo", "payload": "closed"}},
    ])
    done = client.wait_workflow(workflow["id"])
    assert done["counts"]["succeeded"] == 4, done
    print(f"workflow {done['id']}: {len(done['steps'])} steps succeeded")
    stats = client.stats()
    print(f"stats: ready={stats['ready']} in_flight={stats['in_flight']} succeeded={stats['jobs']['succeeded']}")
    print("python client: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
