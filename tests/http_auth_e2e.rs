//! Authentication, scopes, tenancy and rate limits end to end: each test spawns the real
//! `jobforge-server` binary (in-memory backend, demo handlers) with API keys given as hashes on
//! its command line, and drives the real router over HTTP. `tests/http_security.rs` covers the
//! security layers in depth (the JWT matrix, proxies, CORS, TLS) around a small router; this
//! file checks that the server wires them to the real routes and the real tenancy.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use jobforge::http::security::ApiKey;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const PROBLEMS: &str = "https://jobforge.dev/problems/";

mod common;
use common::command;

struct Server {
    _proc: common::Spawned,
    base: String,
    http: Client,
}

impl Server {
    fn start(args: &[String]) -> Server {
        let proc = common::spawn(args);
        Server {
            base: proc.base.clone(),
            _proc: proc,
            http: Client::new(),
        }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str, body: Value) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).json(&body)
    }

    fn put(&self, path: &str, body: Value) -> RequestBuilder {
        self.http.put(format!("{}{path}", self.base)).json(&body)
    }
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn problem(&self) -> String {
        self.json()["type"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches(PROBLEMS)
            .to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send(request: RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap_or_default(),
    }
}

/// A new key and the flag that configures the server with its hash.
fn key(scopes: &str, tenant: Option<&str>) -> (String, String) {
    let key = ApiKey::generate().expect("generate a key");
    let mut spec = format!("{}:{}:{scopes}", key.id(), key.sha256_hex());
    if let Some(tenant) = tenant {
        spec.push(':');
        spec.push_str(tenant);
    }
    (key.key().to_owned(), spec)
}

fn assert_security_headers(answer: &Answer, what: &str) {
    assert_eq!(answer.header("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(answer.header("x-frame-options"), "DENY", "{what}");
    assert_eq!(answer.header("referrer-policy"), "no-referrer", "{what}");
    assert!(answer.header("x-request-id").len() >= 32, "{what}");
}

#[test]
fn refuses_a_public_address_without_authentication() {
    let out = command(&["--bind".into(), "0.0.0.0:0".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jobforge-server")
        .wait_with_output()
        .expect("wait");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve on 0.0.0.0:0 without authentication"),
        "{stderr}"
    );
}

#[tokio::test]
async fn keys_generate_prints_a_key_the_server_accepts() {
    let mut child = command(&["keys".into(), "generate".into()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn jobforge-server keys generate");
    let mut text = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text)
        .expect("read");
    assert!(child.wait().expect("wait").success());
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("jfk_"))
        .expect("a key")
        .to_owned();
    let spec = text
        .split('\'')
        .nth(1)
        .expect("the --api-key-hash value in quotes")
        .to_owned();
    assert!(
        !spec.contains(&key[key.len() - 20..]),
        "the flag holds no secret"
    );
    let server = Server::start(&["--api-key-hash".into(), spec]);
    let created = send(
        server
            .post("/v1/jobs", json!({"kind": "echo", "payload": 1}))
            .bearer_auth(&key),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let refused = send(server.post("/v1/jobs", json!({"kind": "echo"}))).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn credentials_scopes_and_tenancy_on_the_real_routes() {
    let (admin, admin_spec) = key("admin", None);
    let (acme, acme_spec) = key(
        "jobs:read,jobs:write,memory:read,memory:write",
        Some("acme"),
    );
    let (globex, globex_spec) = key(
        "jobs:read,jobs:write,memory:read,memory:write",
        Some("globex"),
    );
    let (reader, reader_spec) = key("jobs:read", Some("acme"));
    let server = Server::start(&[
        "--api-key-hash".into(),
        admin_spec,
        "--api-key-hash".into(),
        acme_spec,
        "--api-key-hash".into(),
        globex_spec,
        "--api-key-hash".into(),
        reader_spec,
    ]);

    // No credentials, a made-up key, a key in the wrong header form: 401, nothing echoed.
    let none = send(server.get("/v1/jobs")).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.problem(), "unauthorized");
    assert!(
        none.header("www-authenticate")
            .starts_with("Bearer realm=\"jobforge\"")
    );
    assert_security_headers(&none, "401");
    let (forged, _) = key("admin", None);
    let wrong = send(server.get("/v1/jobs").bearer_auth(&forged)).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        !wrong.text.contains(&forged),
        "the credential is never echoed"
    );
    let header_form = send(server.get("/v1/jobs").header("x-api-key", &acme)).await;
    assert_eq!(header_form.status, StatusCode::OK, "X-API-Key works too");

    // /health is public; /metrics needs admin; the API docs need a credential.
    assert_eq!(send(server.get("/health")).await.status, StatusCode::OK);
    let metrics = send(server.get("/metrics").bearer_auth(&acme)).await;
    assert_eq!(metrics.status, StatusCode::FORBIDDEN);
    assert_eq!(metrics.problem(), "forbidden");
    // Any token is an HTTP method; metrics label the unusual ones `other`, so no client can
    // grow the label set.
    let odd = reqwest::Method::from_bytes(b"XYZZYMETHOD").expect("a method token");
    let _ = send(server.http.request(odd, format!("{}/v1/jobs", server.base))).await;
    let scraped = send(server.get("/metrics").bearer_auth(&admin)).await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(!scraped.text.contains("XYZZYMETHOD"), "{}", scraped.text);
    assert!(
        scraped.text.contains("method=\"other\""),
        "{}",
        scraped.text
    );
    assert_eq!(
        send(server.get("/openapi.json")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A read-only key cannot submit: 403, and nothing was created.
    let forbidden = send(
        server
            .post("/v1/jobs", json!({"kind": "echo"}))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.problem(), "forbidden");
    assert_security_headers(&forbidden, "403");

    // acme's job carries acme's tenant; naming another tenant is refused.
    let created = send(
        server
            .post(
                "/v1/jobs",
                json!({"kind": "sleep", "payload": {"ms": 60_000}}),
            )
            .bearer_auth(&acme),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let job = created.json();
    assert_eq!(job["tenant"], "acme");
    let id = job["id"].as_str().expect("id").to_owned();
    let other_tenant = send(
        server
            .post("/v1/jobs", json!({"kind": "echo", "tenant": "globex"}))
            .bearer_auth(&acme),
    )
    .await;
    assert_eq!(other_tenant.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other_tenant.json()["field"], "tenant");

    // Idempotency keys are per tenant: the same key from two tenants makes two jobs, and
    // each sees its key as it sent it.
    let keyed = json!({"kind": "echo", "idempotency_key": "order-42"});
    let acme_keyed = send(server.post("/v1/jobs", keyed.clone()).bearer_auth(&acme)).await;
    let globex_keyed = send(server.post("/v1/jobs", keyed.clone()).bearer_auth(&globex)).await;
    assert_eq!(
        acme_keyed.status,
        StatusCode::CREATED,
        "{}",
        acme_keyed.text
    );
    assert_eq!(
        globex_keyed.status,
        StatusCode::CREATED,
        "{}",
        globex_keyed.text
    );
    assert_ne!(acme_keyed.json()["id"], globex_keyed.json()["id"]);
    assert_eq!(globex_keyed.json()["idempotency_key"], "order-42");
    let again = send(server.post("/v1/jobs", keyed).bearer_auth(&acme)).await;
    assert_eq!(
        again.json()["id"],
        acme_keyed.json()["id"],
        "a repeat returns acme's job"
    );

    // globex cannot see, list or cancel it: the same 404 as a job that does not exist.
    let theirs = send(server.get(&format!("/v1/jobs/{id}")).bearer_auth(&globex)).await;
    let missing_id = "01900000-0000-7000-8000-000000000000";
    let missing = send(
        server
            .get(&format!("/v1/jobs/{missing_id}"))
            .bearer_auth(&globex),
    )
    .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.problem(), missing.problem());
    let same_shape = |answer: &Answer, job: &str| {
        let mut body: Value =
            serde_json::from_str(&answer.text.replace(job, "ID")).unwrap_or_default();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("request_id");
        }
        body
    };
    assert_eq!(
        same_shape(&theirs, &id),
        same_shape(&missing, missing_id),
        "another tenant's job reads exactly like a missing one"
    );
    assert!(!theirs.text.contains("acme"));
    let cancel = send(
        server
            .post(&format!("/v1/jobs/{id}/cancel"), json!({}))
            .bearer_auth(&globex),
    )
    .await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    let events = send(
        server
            .get(&format!("/v1/jobs/{id}/events"))
            .bearer_auth(&globex),
    )
    .await;
    assert_eq!(events.status, StatusCode::NOT_FOUND);
    let listed = send(server.get("/v1/jobs").bearer_auth(&globex)).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(!listed.text.contains(&id), "globex lists no acme job");
    let own = send(server.get(&format!("/v1/jobs/{id}")).bearer_auth(&reader)).await;
    assert_eq!(own.status, StatusCode::OK, "acme's reader sees acme's job");
    let everything = send(server.get("/v1/jobs").bearer_auth(&admin)).await;
    assert!(
        everything.text.contains(&id),
        "a key with no tenant sees all"
    );
    // The refused cancel changed nothing.
    let still = send(server.get(&format!("/v1/jobs/{id}")).bearer_auth(&acme)).await;
    assert_eq!(still.json()["cancel_requested"], false);

    // Memory: each tenant has its own `cache` namespace.
    let put = send(
        server
            .put("/v1/memory/cache/greeting", json!({"value": "acme's"}))
            .bearer_auth(&acme),
    )
    .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);
    assert_eq!(put.json()["namespace"], "cache");
    let peek = send(server.get("/v1/memory/cache/greeting").bearer_auth(&globex)).await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
    let overwrite = send(
        server
            .put("/v1/memory/cache/greeting", json!({"value": "globex's"}))
            .bearer_auth(&globex),
    )
    .await;
    assert_eq!(overwrite.status, StatusCode::CREATED, "a separate entry");
    let mine = send(server.get("/v1/memory/cache/greeting").bearer_auth(&acme)).await;
    assert_eq!(mine.json()["value"], "acme's");
    let search = send(server.get("/v1/memory/cache").bearer_auth(&globex)).await;
    assert_eq!(search.json()["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(search.json()["items"][0]["value"], "globex's");
    let reader_write = send(
        server
            .put("/v1/memory/cache/greeting", json!({"value": 1}))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(reader_write.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_burst_past_the_write_quota_gets_429_and_reads_go_on() {
    let (acme, acme_spec) = key("jobs:read,jobs:write", Some("acme"));
    let server = Server::start(&[
        "--api-key-hash".into(),
        acme_spec,
        "--rate-limit-write".into(),
        "1/s:2".into(),
    ]);
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..4 {
        let answer = send(
            server
                .post("/v1/jobs", json!({"kind": "echo"}))
                .bearer_auth(&acme),
        )
        .await;
        statuses.push(answer.status);
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(answer);
        }
    }
    assert_eq!(&statuses[..2], &[StatusCode::CREATED, StatusCode::CREATED]);
    let limited = limited.expect("a 429 after the burst");
    assert_eq!(limited.problem(), "rate-limited");
    let retry: u64 = limited.header("retry-after").parse().expect("Retry-After");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(limited.header("ratelimit-remaining"), "0");
    assert_security_headers(&limited, "429");
    // The read tier has its own quota.
    let read = send(server.get("/v1/jobs").bearer_auth(&acme)).await;
    assert_eq!(read.status, StatusCode::OK);
    // After the wait, writing works again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = send(
        server
            .post("/v1/jobs", json!({"kind": "echo"}))
            .bearer_auth(&acme),
    )
    .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
}

#[tokio::test]
async fn schedules_need_their_scopes_and_no_tenant() {
    let (planner, planner_spec) = key("schedules:read,schedules:write", None);
    let (viewer, viewer_spec) = key("schedules:read", None);
    let (jobs_only, jobs_spec) = key("jobs:read,jobs:write", None);
    let (tenant_admin, tenant_spec) = key("admin", Some("acme"));
    let server = Server::start(&[
        "--api-key-hash".into(),
        planner_spec,
        "--api-key-hash".into(),
        viewer_spec,
        "--api-key-hash".into(),
        jobs_spec,
        "--api-key-hash".into(),
        tenant_spec,
    ]);
    let body = json!({"every_ms": 3_600_000, "job": {"kind": "echo"}});
    let created = send(
        server
            .put("/v1/schedules/hourly", body.clone())
            .bearer_auth(&planner),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let read = send(server.get("/v1/schedules/hourly").bearer_auth(&viewer)).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    // Reading does not allow writing, and jobs scopes do not reach schedules.
    for (who, request) in [
        (
            "viewer",
            server
                .put("/v1/schedules/hourly", body.clone())
                .bearer_auth(&viewer),
        ),
        (
            "viewer",
            server
                .post("/v1/schedules/hourly/trigger", json!({}))
                .bearer_auth(&viewer),
        ),
        (
            "jobs key",
            server.get("/v1/schedules").bearer_auth(&jobs_only),
        ),
    ] {
        let refused = send(request).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{who}: {}",
            refused.text
        );
        assert!(
            refused
                .header("www-authenticate")
                .contains("insufficient_scope"),
            "{who}"
        );
    }
    // A tenant's credential, even an admin one, does not see the fleet's schedules.
    let tenant = send(server.get("/v1/schedules").bearer_auth(&tenant_admin)).await;
    assert_eq!(tenant.status, StatusCode::FORBIDDEN, "{}", tenant.text);
    assert_eq!(tenant.problem(), "forbidden");
    let tenant_put = send(
        server
            .put("/v1/schedules/mine", body)
            .bearer_auth(&tenant_admin),
    )
    .await;
    assert_eq!(tenant_put.status, StatusCode::FORBIDDEN);
    let listed = send(server.get("/v1/schedules").bearer_auth(&viewer)).await;
    assert_eq!(
        listed.json()["items"].as_array().map(Vec::len),
        Some(1),
        "nothing of the tenant's was stored"
    );
}
