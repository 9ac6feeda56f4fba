//! End to end over real HTTP: each test spawns the `jobforge-server` binary (in-memory
//! backend, demo handlers) on a free port and drives it with an HTTP client.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const PROBLEMS: &str = "https://jobforge.dev/problems/";

mod common;

struct Server {
    proc: common::Spawned,
    base: String,
    http: Client,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let proc = common::spawn(extra);
        Server {
            base: proc.base.clone(),
            proc,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    async fn submit(&self, job: Value) -> Value {
        let (status, body) = self.post("/v1/jobs", job).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn wait_terminal(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if ["succeeded", "dead", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} still {job}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn job_totals(&self) -> Value {
        let (status, stats) = self.get("/v1/queues/stats").await;
        assert_eq!(status, StatusCode::OK);
        stats["jobs"].clone()
    }
}

fn assert_problem(
    status: StatusCode,
    body: &Value,
    want_status: u16,
    slug: &str,
    field: Option<&str>,
) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["type"], format!("{PROBLEMS}{slug}"), "{body}");
    assert_eq!(body["status"], want_status, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    match field {
        Some(f) => assert_eq!(body["field"], f, "{body}"),
        None => assert!(body.get("field").is_none(), "{body}"),
    }
}

#[tokio::test]
async fn jobs_of_several_kinds_run_to_completion() {
    let s = Server::start(&[]);
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .json(&json!({"kind": "echo", "payload": {"hello": "world"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let job: Value = r.json().await.expect("json");
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().expect("id"))
    );
    assert_eq!(job["state"], "queued");

    let sleep = s
        .submit(json!({"kind": "sleep", "payload": {"ms": 20}}))
        .await;
    let echo = s.wait_terminal(job["id"].as_str().expect("id")).await;
    assert_eq!(echo["state"], "succeeded");
    assert_eq!(echo["result"], json!({"hello": "world"}));
    let slept = s.wait_terminal(sleep["id"].as_str().expect("id")).await;
    assert_eq!(slept["result"], json!({"slept_ms": 20}));

    let (status, events) = s
        .get(&format!(
            "/v1/jobs/{}/events",
            sleep["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let to: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["to"].as_str())
        .collect();
    assert_eq!(to, ["queued", "running", "succeeded"]);

    let (status, stats) = s.get("/v1/queues/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["jobs_per_kind"]["echo"]["succeeded"], 1);
    assert_eq!(stats["jobs_per_kind"]["sleep"]["succeeded"], 1);
    assert_eq!(stats["jobs"]["succeeded"], 2);
    for field in ["ready", "delayed", "in_flight", "dead"] {
        assert!(stats[field].is_u64(), "{stats}");
    }
}

#[tokio::test]
async fn idempotency_key_returns_the_original_job() {
    let s = Server::start(&[]);
    let first = s
        .submit(json!({"kind": "echo", "payload": 1, "idempotency_key": "order-1"}))
        .await;
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .json(&json!({"kind": "echo", "payload": 2, "idempotency_key": "order-1"}))
        .send()
        .await
        .expect("repeat");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let repeat: Value = r.json().await.expect("json");
    assert_eq!(repeat["id"], first["id"]);
    assert_eq!(repeat["payload"], 1);

    // The header works too.
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .header("idempotency-key", "order-2")
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), StatusCode::CREATED);
    let one: Value = r.json().await.expect("json");
    let r = s
        .http
        .post(s.url("/v1/jobs"))
        .header("idempotency-key", "order-2")
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), StatusCode::OK);
    let two: Value = r.json().await.expect("json");
    assert_eq!(one["id"], two["id"]);
    assert_eq!(
        s.job_totals().await["queued"].as_u64().unwrap_or(0)
            + s.job_totals().await["succeeded"].as_u64().unwrap_or(0)
            + s.job_totals().await["running"].as_u64().unwrap_or(0),
        2
    );
}

#[tokio::test]
async fn retries_strategies_dead_letters() {
    let s = Server::start(&[]);
    // Retry, then success: two failed attempts, the third succeeds.
    let retried = s
        .submit(json!({"kind": "fail_n_times", "payload": {"times": 2}}))
        .await;
    // The inline_retry strategy rescues the first failure inside the first attempt.
    let inline = s
        .submit(
            json!({"kind": "fail_n_times", "payload": {"times": 1}, "strategy": "inline_retry"}),
        )
        .await;
    // Attempts spent: dead after 5.
    let spent = s
        .submit(json!({"kind": "fail_n_times", "payload": {"times": 50}}))
        .await;
    // Permanent: dead at once.
    let permanent = s
        .submit(json!({"kind": "fail_n_times", "payload": {"permanent": true}}))
        .await;

    let job = s.wait_terminal(retried["id"].as_str().expect("id")).await;
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("succeeded"), Some(3)),
        "{job}"
    );
    assert_eq!(job["result"], json!({"succeeded_on_attempt": 3, "try": 3}));
    let (_, events) = s
        .get(&format!(
            "/v1/jobs/{}/events",
            job["id"].as_str().expect("id")
        ))
        .await;
    let retries = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["from"] == "running" && e["to"] == "queued")
        .count();
    assert_eq!(retries, 2, "{events}");

    let job = s.wait_terminal(inline["id"].as_str().expect("id")).await;
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("succeeded"), Some(1)),
        "{job}"
    );
    assert_eq!(job["strategy"], "inline_retry");

    let job = s.wait_terminal(spent["id"].as_str().expect("id")).await;
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("dead"), Some(5)),
        "{job}"
    );
    assert!(
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("demo_failure")),
        "{job}"
    );

    let job = s.wait_terminal(permanent["id"].as_str().expect("id")).await;
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("dead"), Some(1)),
        "{job}"
    );

    let (status, stats) = s.get("/v1/queues/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["jobs_per_kind"]["fail_n_times"]["dead"], 2, "{stats}");
    assert_eq!(
        stats["jobs_per_kind"]["fail_n_times"]["succeeded"], 2,
        "{stats}"
    );

    // The memory saw it all: reflection over HTTP.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, reflection) = s.get("/v1/kinds/fail_n_times/reflection").await;
    assert_eq!(status, StatusCode::OK, "{reflection}");
    assert!(
        reflection["count"].as_u64().unwrap_or(0) >= 4,
        "{reflection}"
    );
    assert!(
        reflection["recommendation"]["rationale"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert_eq!(reflection["last_change"], Value::Null, "{reflection}");
    // The adaptive strategy's latest decision change, as any process records it in the
    // memory, comes with the reflection.
    let change = json!({
        "at": "2026-12-05T11:02:03Z", "from": "base strategy `direct`",
        "to": "no hedge; 2 inline retries", "why": "InlineRetry: retries rescued 90%",
        "executions": 120
    });
    let r = s
        .http
        .put(s.url("/v1/memory/jobforge.adaptive/fail_n_times"))
        .json(&json!({ "value": change }))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, reflection) = s.get("/v1/kinds/fail_n_times/reflection").await;
    assert_eq!(status, StatusCode::OK);
    let last = &reflection["last_change"];
    assert_eq!(
        (
            &last["from"],
            &last["to"],
            &last["why"],
            &last["executions"]
        ),
        (
            &change["from"],
            &change["to"],
            &change["why"],
            &change["executions"]
        ),
        "{reflection}"
    );
    assert_eq!(last["at"], "2026-12-05T11:02:03.000Z");
    let (status, reflection) = s
        .get("/v1/kinds/fail_n_times/reflection?window=last:2")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reflection["count"], 2);
    let (status, body) = s.get("/v1/kinds/fail_n_times/reflection?window=lots").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("window"));
    let (status, body) = s.get("/v1/kinds/no.such.kind/reflection").await;
    assert_problem(status, &body, 404, "not-found", Some("kind"));

    // An unregistered strategy names the field.
    let (status, body) = s
        .post("/v1/jobs", json!({"kind": "echo", "strategy": "telepathy"}))
        .await;
    assert_problem(status, &body, 422, "validation", Some("strategy"));
}

#[tokio::test]
async fn cancel_queued_and_running_jobs() {
    let s = Server::start(&[]);
    let later = s.submit(json!({"kind": "echo", "delay_ms": 60_000})).await;
    let id = later["id"].as_str().expect("id");
    let (status, body) = s.post(&format!("/v1/jobs/{id}/cancel"), json!(null)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["outcome"].as_str(), body["state"].as_str()),
        (Some("cancelled"), Some("cancelled"))
    );
    // Again: harmless.
    let (status, body) = s.post(&format!("/v1/jobs/{id}/cancel"), json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outcome"], "already_finished");

    let long = s
        .submit(json!({"kind": "sleep", "payload": {"ms": 60_000}}))
        .await;
    let id = long["id"].as_str().expect("id");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get(&format!("/v1/jobs/{id}")).await.1["state"] != "running" {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = s.post(&format!("/v1/jobs/{id}/cancel"), json!(null)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outcome"], "requested");
    let job = s.wait_terminal(id).await;
    assert_eq!(job["state"], "cancelled", "{job}");

    let (status, body) = s
        .post(
            "/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f4/cancel",
            json!(null),
        )
        .await;
    assert_problem(status, &body, 404, "not-found", None);
}

#[tokio::test]
async fn batch_list_and_pagination() {
    let s = Server::start(&[]);
    let jobs: Vec<Value> = (0..7)
        .map(|i| json!({"kind": "echo", "payload": i, "tags": ["batch"], "delay_ms": 60_000}))
        .collect();
    let (status, body) = s.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 7);
    assert!(items.iter().all(|i| i["created"] == true));
    let submitted: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();

    // One bad job rejects the batch, named by index; nothing is created.
    let before = s.job_totals().await;
    let (status, body) = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "echo"}, {"kind": "nope"}]}),
        )
        .await;
    assert_problem(status, &body, 422, "unknown-kind", Some("jobs[1].kind"));
    let (status, body) = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "echo"}, {"kind": "echo", "max_attempts": 0}]}),
        )
        .await;
    assert_problem(
        status,
        &body,
        422,
        "validation",
        Some("jobs[1].max_attempts"),
    );
    let (status, body) = s.post("/v1/jobs/batch", json!({"jobs": []})).await;
    assert_problem(status, &body, 422, "validation", Some("jobs"));
    assert_eq!(s.job_totals().await, before);

    // Walk the pages: every job once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?kind=echo&state=queued&limit=3&cursor={c}"),
            None => "/v1/jobs?kind=echo&state=queued&limit=3".to_owned(),
        };
        let (status, page) = s.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        for job in page["items"].as_array().expect("items") {
            seen.push(job["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, submitted);
    assert!(pages >= 3);
    let (_, page) = s.get("/v1/jobs?kind=echo&order=desc&limit=1").await;
    assert_eq!(page["items"][0]["id"].as_str(), submitted.last().copied());
    let (_, page) = s.get("/v1/jobs?kind=sleep").await;
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn bad_input_gets_exact_problems_and_changes_nothing() {
    let s = Server::start(&["--body-limit", "65536"]);
    // A job that is running while bad requests arrive.
    let running = s
        .submit(json!({"kind": "sleep", "payload": {"ms": 300}}))
        .await;
    // Snapshot once the sleeper is running, so the only change to expect is none.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let totals = s.job_totals().await;
        if totals["running"] == 1 && totals["queued"] == 0 {
            break totals;
        }
        assert!(Instant::now() < deadline, "the sleeper never ran: {totals}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };

    let r = s
        .post_raw(
            "/v1/jobs",
            b"{\"kind\": \"echo\",".to_vec(),
            "application/json",
        )
        .await;
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("x-request-id"));
    let status = r.status();
    assert_problem(
        status,
        &r.json().await.expect("json"),
        400,
        "malformed-json",
        None,
    );

    let (status, body) = s
        .post("/v1/jobs", json!({"kind": "echo", "priority": "high"}))
        .await;
    assert_problem(status, &body, 422, "validation", Some("priority"));
    let (status, body) = s.post("/v1/jobs", json!({"kind": 7})).await;
    assert_problem(status, &body, 422, "validation", Some("kind"));
    let (status, body) = s
        .post("/v1/jobs", json!({"kind": "echo", "colour": "red"}))
        .await;
    assert_problem(status, &body, 422, "validation", Some("colour"));
    let (status, body) = s.post("/v1/jobs", json!({"payload": 1})).await;
    assert_problem(status, &body, 422, "validation", Some("kind"));
    let (status, body) = s
        .post("/v1/jobs", json!({"kind": "echo", "timeout_ms": 0}))
        .await;
    assert_problem(status, &body, 422, "validation", Some("timeout_ms"));
    let (status, body) = s.post("/v1/jobs", json!({"kind": "has space"})).await;
    assert_problem(status, &body, 422, "unknown-kind", Some("kind"));
    let (status, body) = s.post("/v1/jobs", json!({"kind": "emial.send"})).await;
    assert_problem(status, &body, 422, "unknown-kind", Some("kind"));
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("echo")),
        "{body}"
    );

    let big = json!({"kind": "echo", "payload": "x".repeat(100_000)});
    let r = s
        .post_raw(
            "/v1/jobs",
            serde_json::to_vec(&big).expect("json"),
            "application/json",
        )
        .await;
    let status = r.status();
    assert_problem(
        status,
        &r.json().await.expect("json"),
        413,
        "payload-too-large",
        None,
    );

    let r = s
        .post_raw(
            "/v1/jobs",
            b"kind=echo".to_vec(),
            "application/x-www-form-urlencoded",
        )
        .await;
    let status = r.status();
    assert_problem(
        status,
        &r.json().await.expect("json"),
        415,
        "unsupported-media-type",
        None,
    );

    let (status, body) = s.get("/v1/jobs/not-a-uuid").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("id"));
    let (status, body) = s.get("/v1/jobs/01890a5d-ac96-774b-b9aa-76a1c8c8a1f4").await;
    assert_problem(status, &body, 404, "not-found", None);
    let (status, body) = s.get("/v1/jobs/not-a-uuid/events").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("id"));
    let (status, body) = s.get("/v1/jobs?cursor=garbage").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("cursor"));
    let (status, body) = s.get("/v1/jobs?state=happy").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("state"));
    let (status, body) = s.get("/v1/jobs?limit=0").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("limit"));
    let (status, body) = s.get("/v1/jobs?sort=name").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("sort"));
    let (status, body) = s.get("/v2/jobs").await;
    assert_problem(status, &body, 404, "not-found", None);
    let r = s
        .http
        .delete(s.url("/v1/jobs"))
        .send()
        .await
        .expect("DELETE");
    let status = r.status();
    assert_problem(
        status,
        &r.json().await.expect("json"),
        405,
        "method-not-allowed",
        None,
    );

    // Nothing changed, and the running job finishes as it would have.
    assert_eq!(s.job_totals().await, before);
    let job = s.wait_terminal(running["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "succeeded");
}

#[tokio::test]
async fn memory_entries_over_http() {
    let s = Server::start(&[]);
    let put = |value: Value| {
        s.http
            .put(s.url("/v1/memory/billing/last-run"))
            .json(&value)
            .send()
    };
    let r = put(json!({"value": {"invoices": 3}, "tags": ["nightly"]}))
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put(json!({"value": {"invoices": 4}, "tags": ["nightly"], "ttl_secs": 3600}))
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let entry: Value = r.json().await.expect("json");
    assert_eq!(
        (
            entry["version"].as_u64(),
            entry["value"]["invoices"].as_u64()
        ),
        (Some(2), Some(4))
    );
    assert!(entry["expires_at"].is_string());

    let (status, entry) = s.get("/v1/memory/billing/last-run").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entry["tags"], json!(["nightly"]));
    let (status, found) = s
        .get("/v1/memory/billing?prefix=last&tag=nightly&limit=10")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["items"].as_array().map(Vec::len), Some(1));
    let (status, body) = s.get("/v1/memory/billing?limit=0").await;
    assert_problem(status, &body, 400, "invalid-parameter", Some("limit"));
    let r = put(json!({"value": 1, "ttl": 5})).await.expect("put");
    let status = r.status();
    assert_problem(
        status,
        &r.json().await.expect("json"),
        422,
        "validation",
        Some("ttl"),
    );

    let r = s
        .http
        .delete(s.url("/v1/memory/billing/last-run"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (status, body) = s.get("/v1/memory/billing/last-run").await;
    assert_problem(status, &body, 404, "not-found", None);
    let r = s
        .http
        .delete(s.url("/v1/memory/billing/last-run"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn operations_routes() {
    let s = Server::start(&[]);
    let (status, body) = s.get("/health").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = s.get("/ready").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));

    // Request ids: echoed when sent, made when not.
    let r = s
        .http
        .get(s.url("/health"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = s
        .http
        .get(s.url("/v1/jobs/nope"))
        .send()
        .await
        .expect("get");
    let id = r.headers()["x-request-id"].to_str().expect("id").to_owned();
    assert!(!id.is_empty());
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["instance"], "/v1/jobs/nope");

    let job = s
        .submit(json!({"kind": "sleep", "payload": {"ms": 1}}))
        .await;
    s.wait_terminal(job["id"].as_str().expect("id")).await;
    let r = s.http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let text = r.text().await.expect("text");
    for needle in [
        "jobforge_jobs{state=\"succeeded\"} 1",
        "jobforge_jobs_by_kind{kind=\"sleep\",state=\"succeeded\"} 1",
        "jobforge_queue_depth{status=\"ready\"}",
        "jobforge_http_jobs_submitted_total 1",
        "jobforge_http_request_duration_seconds_bucket{route=\"/v1/jobs\",le=\"+Inf\"} 1",
        "jobforge_http_requests_total{route=\"/v1/jobs/{id}\",method=\"GET\",status=\"200\"}",
        "jobforge_breaker_state{key=\"sleep\",state=\"closed\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }

    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["title"], "jobforge");
    assert!(doc["paths"]["/v1/jobs"]["post"].is_object());
    let r = s.http.get(s.url("/docs/")).send().await.expect("docs");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.expect("html").contains("swagger"));
}

#[tokio::test]
async fn graceful_shutdown_on_sigterm() {
    let mut s = Server::start(&[]);
    let (status, _) = s.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    let pid = s.proc.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(exit) = s.proc.child.try_wait().expect("wait") {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn schedules_over_http() {
    // Declared at start, as a deployment does; fires every second on the server's workers.
    let declared = r#"[{"id": "declared", "every_ms": 1000, "job": {"kind": "echo", "payload": {"from": "file"}}}]"#;
    let s = Server::start(&["--schedules", declared]);
    let put = |id: &str, body: Value| {
        s.http
            .put(s.url(&format!("/v1/schedules/{id}")))
            .json(&body)
            .send()
    };

    let r = put(
        "nightly",
        json!({"cron": "0 3 * * *", "time_zone": "Europe/Paris", "job": {"kind": "echo"}, "catch_up": "latest", "overlap": "skip"}),
    )
    .await
    .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], "/v1/schedules/nightly");
    let created: Value = r.json().await.expect("json");
    assert_eq!(created["outcome"], "created");
    assert_eq!(created["schedule"]["cron"], "0 3 * * *");
    assert_eq!(created["schedule"]["time_zone"], "Europe/Paris");
    assert_eq!(created["schedule"]["catch_up"], "latest");
    assert!(created["schedule"]["next_run_at"].is_string());
    let same = json!({"cron": "0 3 * * *", "time_zone": "Europe/Paris", "job": {"kind": "echo"}, "catch_up": "latest", "overlap": "skip"});
    let r = put("nightly", same).await.expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    let unchanged: Value = r.json().await.expect("json");
    assert_eq!(unchanged["outcome"], "unchanged");
    assert_eq!(
        unchanged["schedule"]["version"],
        created["schedule"]["version"]
    );
    let r = put(
        "nightly",
        json!({"cron": "0 4 * * *", "job": {"kind": "echo"}}),
    )
    .await
    .expect("put");
    let updated: Value = r.json().await.expect("json");
    assert_eq!(updated["outcome"], "updated");
    assert_eq!(updated["schedule"]["time_zone"], "UTC");

    // Every bad field is named as the body spells it, and nothing is stored.
    let job = json!({"kind": "echo"});
    for (body, status, slug, field) in [
        (
            json!({"cron": "61 * * * *", "job": job}),
            422,
            "validation",
            "cron",
        ),
        (
            json!({"cron": "0 30 2 *", "job": job}),
            422,
            "validation",
            "cron",
        ),
        (
            json!({"cron": "0 0 30 2 *", "job": job}),
            422,
            "validation",
            "cron",
        ),
        (
            json!({"cron": "* * * * *", "time_zone": "Mars/Olympus", "job": job}),
            422,
            "validation",
            "time_zone",
        ),
        (
            json!({"every_ms": 0, "job": job}),
            422,
            "validation",
            "every_ms",
        ),
        (
            json!({"every_ms": 1000, "cron": "* * * * *", "job": job}),
            422,
            "validation",
            "every_ms",
        ),
        (json!({"job": job}), 422, "validation", "cron"),
        (
            json!({"every_ms": 1000, "catch_up": "all", "job": job}),
            422,
            "validation",
            "catch_up_max",
        ),
        (
            json!({"every_ms": 1000, "job": {"kind": "nope"}}),
            422,
            "unknown-kind",
            "job.kind",
        ),
        (
            json!({"every_ms": 1000, "job": {"kind": "echo", "queue": "a b"}}),
            422,
            "validation",
            "job.queue",
        ),
        (
            json!({"every_ms": 1000, "job": job, "speed": 2}),
            422,
            "validation",
            "speed",
        ),
    ] {
        let r = put("bad", body.clone()).await.expect("put");
        let got = r.status();
        assert_problem(
            got,
            &r.json().await.expect("json"),
            status,
            slug,
            Some(field),
        );
    }
    let r = put("a@b", json!({"every_ms": 1000, "job": job}))
        .await
        .expect("put");
    let got = r.status();
    assert_problem(
        got,
        &r.json().await.expect("json"),
        400,
        "invalid-parameter",
        Some("id"),
    );
    let (status, body) = s.get("/v1/schedules/bad").await;
    assert_problem(status, &body, 404, "not-found", None);

    // Trigger now: a job at once, recorded in the history.
    let (status, triggered) = s.post("/v1/schedules/nightly/trigger", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{triggered}");
    let job_id = triggered["job_id"].as_str().expect("job id").to_owned();
    assert_eq!(triggered["location"], format!("/v1/jobs/{job_id}"));
    assert_eq!(s.wait_terminal(&job_id).await["state"], "succeeded");
    let (_, history) = s.get("/v1/schedules/nightly/history").await;
    assert_eq!(history["items"][0]["job_id"], job_id.as_str());
    assert_eq!(history["items"][0]["triggered"], true);

    // Pause and resume.
    let (status, paused) = s.post("/v1/schedules/nightly/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (paused["paused"].clone(), paused["next_run_at"].clone()),
        (json!(true), Value::Null)
    );
    let (_, resumed) = s.post("/v1/schedules/nightly/resume", json!({})).await;
    assert_eq!(resumed["paused"], false);
    assert!(resumed["next_run_at"].is_string());

    // The declared schedule fires every second, each tick's job under its own key.
    let deadline = Instant::now() + Duration::from_secs(15);
    let fires = loop {
        let (_, history) = s.get("/v1/schedules/declared/history").await;
        let fires = history["items"].as_array().cloned().unwrap_or_default();
        if fires.len() >= 2 {
            break fires;
        }
        assert!(
            Instant::now() < deadline,
            "the declared schedule did not fire: {history}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let job = s
        .wait_terminal(fires[0]["job_id"].as_str().expect("id"))
        .await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["payload"], json!({"from": "file"}));
    assert!(
        job["idempotency_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("declared@")),
        "{job}"
    );
    assert!(
        job["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("schedule:declared"))),
        "{job}"
    );
    let (_, list) = s.get("/v1/schedules").await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, ["declared", "nightly"]);
    assert!(
        list["this_process"]["fired"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{list}"
    );

    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for needle in [
        "jobforge_schedules{state=\"active\"} 2",
        "jobforge_schedules_due ",
        "jobforge_schedule_fired_total ",
        "jobforge_schedule_skipped_total{reason=\"overlap\"} 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }

    let r = s
        .http
        .delete(s.url("/v1/schedules/nightly"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s
        .http
        .delete(s.url("/v1/schedules/nightly"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_bad_schedules_file_stops_the_start_naming_the_field() {
    let out = common::command(&[
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--demo-handlers".into(),
        "--schedules".into(),
        r#"[{"id": "x", "cron": "* * * * *", "time_zone": "Nowhere/Land", "job": {"kind": "echo"}}]"#.into(),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .output()
    .expect("run jobforge-server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schedule [0] `x`") && stderr.contains("time_zone"),
        "{stderr}"
    );
    let missing = common::command(&["--schedules".into(), "/nonexistent/schedules.json".into()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run jobforge-server");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read the schedules file"));
}

#[tokio::test]
async fn workflows_over_http() {
    let s = Server::start(&[]);
    let body = json!({
        "name": "order-42",
        "steps": [
            {"name": "charge", "job": {"kind": "echo", "payload": {"cents": 1200}}},
            {"name": "ship", "after": ["charge"], "job": {"kind": "sleep", "payload": {"ms": 5}}},
            {"name": "email", "after": ["charge"], "job": {"kind": "echo", "payload": "receipt"}},
            {"name": "close", "after": ["ship", "email"], "job": {"kind": "echo", "payload": "done"}}
        ]
    });
    let r = s
        .http
        .post(s.url("/v1/workflows"))
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let wf: Value = r.json().await.expect("json");
    let id = wf["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/v1/workflows/{id}"));
    assert_eq!(wf["name"], "order-42");
    let steps = wf["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[3]["name"], "close");
    assert_eq!(steps[3]["after"], json!(["ship", "email"]));
    assert_eq!(steps[3]["on_dependency_failure"], "cancel");

    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let (status, wf) = s.get(&location).await;
        assert_eq!(status, StatusCode::OK, "{wf}");
        if wf["finished"] == json!(true) {
            break wf;
        }
        assert!(Instant::now() < deadline, "still running: {wf}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(done["counts"]["succeeded"], 4, "{done}");
    let close_id = done["steps"][3]["id"].as_str().expect("close id");
    let close = s.wait_terminal(close_id).await;
    assert_eq!(close["result"], json!("done"));
    let (_, events) = s.get(&format!("/v1/jobs/{close_id}/events")).await;
    let to: Vec<&str> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["to"].as_str())
        .collect();
    assert_eq!(to, ["pending", "queued", "running", "succeeded"]);

    // A long step with a waiting one after it: cancelling the workflow stops both.
    let (status, wf) = s
        .post(
            "/v1/workflows",
            json!({"name": "long", "steps": [
                {"name": "nap", "job": {"kind": "sleep", "payload": {"ms": 60000}}},
                {"name": "after", "after": ["nap"], "job": {"kind": "echo"}}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let long = wf["id"].as_str().expect("id").to_owned();
    let (status, cancelled) = s
        .post(&format!("/v1/workflows/{long}/cancel"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["cancelled"], 2, "{cancelled}");

    // Bad graphs change nothing and name the field.
    let (status, p) = s
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [
                {"name": "a", "after": ["b"], "job": {"kind": "echo"}},
                {"name": "b", "after": ["a"], "job": {"kind": "echo"}}
            ]}),
        )
        .await;
    assert_problem(status, &p, 422, "validation", Some("after"));
    let (status, p) = s
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"name": "a", "after": ["nope"], "job": {"kind": "echo"}}]}),
        )
        .await;
    assert_problem(status, &p, 422, "validation", Some("steps[0].after"));
    let (status, p) = s
        .post("/v1/workflows", json!({"name": "w", "steps": []}))
        .await;
    assert_problem(status, &p, 422, "validation", Some("steps"));
    let (status, p) = s
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"name": "a", "job": {"kind": "nope"}}]}),
        )
        .await;
    assert_problem(status, &p, 422, "unknown-kind", Some("steps[0].job.kind"));
    let (status, p) = s
        .post(
            "/v1/workflows",
            json!({"name": "w", "steps": [{"name": "a", "on_dependency_failure": "retry", "job": {"kind": "echo"}}]}),
        )
        .await;
    assert_problem(
        status,
        &p,
        422,
        "validation",
        Some("steps[0].on_dependency_failure"),
    );
    let (status, p) = s
        .get("/v1/workflows/01890a5d-ac96-774b-b9aa-76a1c8c8a1f4")
        .await;
    assert_problem(status, &p, 404, "not-found", None);
    let (status, p) = s.get("/v1/workflows/nope").await;
    assert_problem(status, &p, 400, "invalid-parameter", Some("id"));
}
