//! The console at `/ui` over real HTTP, against the real `jobforge-server` binary (in-memory
//! backend, demo handlers, API keys as hashes): the login and its cookie, escaping of what
//! jobs carry, what a read-only key may see and do, forged and cross-site posts, retrying a
//! dead job. `tests/ui/` drives the same pages in headless Chromium.

use std::time::Duration;

use jobforge::http::security::ApiKey;
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

mod common;

struct Console {
    _proc: common::Spawned,
    base: String,
    http: Client,
    admin: String,
    reader: String,
}

fn key(scopes: &str) -> (String, String) {
    let key = ApiKey::generate().expect("generate a key");
    let spec = format!("{}:{}:{scopes}", key.id(), key.sha256_hex());
    (key.key().to_owned(), spec)
}

impl Console {
    fn start() -> Console {
        let (admin, admin_spec) = key("admin");
        let (reader, reader_spec) = key("jobs:read");
        let proc = common::spawn(&[
            "--api-key-hash",
            &admin_spec,
            "--api-key-hash",
            &reader_spec,
            "--allow-unknown-kinds",
        ]);
        Console {
            base: proc.base.clone(),
            _proc: proc,
            // Redirects are checked, not followed.
            http: Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            admin,
            reader,
        }
    }

    /// Log in through the form; answers the session cookie's `name=value`.
    async fn login(&self, key: &str) -> String {
        let r = self
            .http
            .post(format!("{}/ui/login", self.base))
            .form(&[("key", key)])
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie")
            .to_owned();
        cookie.split(';').next().unwrap_or_default().to_owned()
    }

    async fn page(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .expect("page");
        (r.status(), r.text().await.unwrap_or_default())
    }

    async fn post(&self, cookie: &str, path: &str, origin: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("origin", origin)
            .send()
            .await
            .expect("post")
    }

    async fn submit(&self, body: Value) -> String {
        let r: Value = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .header("x-api-key", &self.admin)
            .json(&body)
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        r["id"].as_str().expect("an id").to_owned()
    }

    /// `GET path` on the API with `key`, as JSON.
    async fn get_json(&self, path: &str, key: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .header("x-api-key", key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn job(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/jobs/{id}"), &self.admin).await
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        for _ in 0..200 {
            let job = self.job(id).await;
            if job["state"] == state {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("job {id} never became {state}: {}", self.job(id).await);
    }
}

#[tokio::test]
async fn the_console_needs_a_login_and_keeps_the_key_in_a_strict_cookie() {
    let c = Console::start();
    // No session: pages send the browser to the login form; the form itself is public.
    let r = c
        .http
        .get(format!("{}/ui/jobs", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/login?next=/ui/jobs");
    let (status, form) = c.page("", "/ui/login").await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains(r#"id="login-form""#), "{form}");

    // A wrong key is refused with the form again.
    let r = c
        .http
        .post(format!("{}/ui/login", c.base))
        .form(&[("key", "jfk_0123456789abcdef_00")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("refused"));

    // The right one sets an HttpOnly, SameSite=Strict cookie scoped to the console.
    let r = c
        .http
        .post(format!("{}/ui/login", c.base))
        .form(&[("key", c.admin.as_str()), ("next", "/ui/kinds")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/kinds");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in [
        "jobforge_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/ui",
        "Secure",
    ] {
        assert!(set.contains(part), "{part} missing from {set}");
    }
    // `next` never leads off the console.
    let r = c
        .http
        .post(format!("{}/ui/login", c.base))
        .form(&[("key", c.admin.as_str()), ("next", "https://evil.example/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/ui");

    let cookie = c.login(&c.admin).await;
    let r = c
        .http
        .get(format!("{}/ui", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"id="state-counts""#));

    // The API never takes the console's cookie: another site cannot use it to call /v1.
    let r = c
        .http
        .get(format!("{}/v1/jobs", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Logging out clears the cookie.
    let r = c.post(&cookie, "/ui/logout", &c.base).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn what_jobs_carry_is_shown_as_text() {
    let c = Console::start();
    let cookie = c.login(&c.admin).await;
    let id = c
        .submit(json!({
            "kind": "<img/src=x/onerror=alert(1)>",
            "payload": {"html": "<script>alert(1)</script>"},
            "delay_ms": 600_000,
            "tags": ["<b>tag</b>"],
        }))
        .await;
    let (status, html) = c.page(&cookie, &format!("/ui/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains("&lt;img/src=x/onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;tag&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img/src=x"), "{html}");
    // The list and the kind's page too.
    let (_, list) = c.page(&cookie, "/ui/jobs").await;
    assert!(list.contains("&lt;img/src=x/onerror=alert(1)&gt;") && !list.contains("<img/src=x"));
    let (status, kinds) = c.page(&cookie, "/ui/kinds").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!kinds.contains("<img/src=x"), "{kinds}");

    // An error message is text as well.
    let dead = c
        .submit(json!({"kind": "echo", "payload": "not json for sleep", "max_attempts": 1}))
        .await;
    c.wait_state(&dead, "succeeded").await;
    let bad = c
        .submit(json!({"kind": "sleep", "payload": {"ms": "<i>x</i>"}, "max_attempts": 1}))
        .await;
    let job = c.wait_state(&bad, "dead").await;
    assert!(
        job["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("<i>x</i>"),
        "{job}"
    );
    let (_, html) = c.page(&cookie, &format!("/ui/jobs/{bad}")).await;
    assert!(
        html.contains(r#"id="last-error""#) && html.contains("&lt;i&gt;x&lt;/i&gt;"),
        "{html}"
    );
    assert!(!html.contains("<i>x</i>"));
}

#[tokio::test]
async fn a_read_only_key_sees_no_actions_and_cannot_act() {
    let c = Console::start();
    let queued = c
        .submit(json!({"kind": "echo", "payload": 1, "delay_ms": 600_000}))
        .await;
    let reader = c.login(&c.reader).await;
    let (status, html) = c.page(&reader, &format!("/ui/jobs/{queued}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("read only"));
    assert!(
        !html.contains("cancel-button") && !html.contains("cancel-form"),
        "{html}"
    );
    let r = c
        .post(&reader, &format!("/ui/jobs/{queued}/cancel"), &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(c.job(&queued).await["state"], "queued");

    // An admin may, from the console's own pages only.
    let admin = c.login(&c.admin).await;
    let (_, html) = c.page(&admin, &format!("/ui/jobs/{queued}")).await;
    assert!(html.contains("cancel-button"));
    let r = c
        .post(
            &admin,
            &format!("/ui/jobs/{queued}/cancel"),
            "https://evil.example",
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a cross-site post");
    assert_eq!(c.job(&queued).await["state"], "queued");
    let r = c
        .post(&admin, &format!("/ui/jobs/{queued}/cancel"), &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(c.job(&queued).await["state"], "cancelled");
    let (_, html) = c.page(&admin, &format!("/ui/jobs/{queued}")).await;
    assert!(
        html.contains(r#"<span id="job-state" data-state="cancelled">"#),
        "{html}"
    );
}

#[tokio::test]
async fn a_dead_job_is_retried_as_a_new_job_once() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    let dead = c
        .submit(
            json!({"kind": "fail_n_times", "payload": {"permanent": true}, "tags": ["nightly"]}),
        )
        .await;
    c.wait_state(&dead, "dead").await;
    let (_, html) = c.page(&admin, &format!("/ui/jobs/{dead}")).await;
    assert!(html.contains("retry-button"));

    let r = c
        .post(&admin, &format!("/ui/jobs/{dead}/retry"), &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let copy = location.trim_start_matches("/ui/jobs/").to_owned();
    assert_ne!(copy, dead);
    let job = c.job(&copy).await;
    assert_eq!(job["kind"], "fail_n_times");
    assert_eq!(job["payload"], json!({"permanent": true}));
    let tags: Vec<&str> = job["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(tags, ["nightly", &format!("retry-of:{dead}")]);
    // The dead job stays dead; asking again answers the same copy.
    assert_eq!(c.job(&dead).await["state"], "dead");
    let again = c
        .post(&admin, &format!("/ui/jobs/{dead}/retry"), &c.base)
        .await;
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);

    // Only a dead job is retried.
    let queued = c
        .submit(json!({"kind": "echo", "payload": 1, "delay_ms": 600_000}))
        .await;
    let r = c
        .post(&admin, &format!("/ui/jobs/{queued}/retry"), &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("only a dead job can be retried")
    );
}

#[tokio::test]
async fn every_page_answers() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    let id = c.submit(json!({"kind": "echo", "payload": {"n": 1}})).await;
    c.wait_state(&id, "succeeded").await;
    for path in [
        "/ui",
        "/ui/jobs",
        "/ui/jobs?state=succeeded&kind=echo&order=asc",
        "/ui/kinds",
        "/ui/kinds/echo",
        "/ui/queues",
        "/ui/schedules",
        "/ui/workflows",
    ] {
        let (status, html) = c.page(&admin, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(html.contains(r#"<nav id="nav">"#), "{path}");
    }
    // A bad filter names its field.
    let (status, html) = c.page(&admin, "/ui/jobs?state=done").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("state"), "{html}");
    let (status, _) = c.page(&admin, "/ui/jobs/not-a-uuid").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The kind page shows the reflection and the decision.
    let (_, html) = c.page(&admin, "/ui/kinds/echo").await;
    assert!(html.contains(r#"data-field="count">1<"#), "{html}");
    assert!(html.contains(r#"id="decision""#) && html.contains(r#"id="histogram""#));
    assert!(
        !html.contains(r#"id="last-change""#),
        "no change recorded yet"
    );
    // With a decision change recorded (as the adaptive strategy records it), the kind page
    // shows it under the decision, escaped.
    let r = c
        .http
        .put(format!("{}/v1/memory/jobforge.adaptive/echo", c.base))
        .header("x-api-key", &c.admin)
        .json(&json!({"value": {
            "at": "2026-12-05T11:02:03Z", "from": "base strategy `direct`",
            "to": "hedge; 1 inline retries", "why": "Hedged: p99 <b>8×</b> p50",
            "executions": 120
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, html) = c.page(&admin, "/ui/kinds/echo").await;
    assert!(html.contains(r#"id="last-change""#), "{html}");
    assert!(
        html.contains("2026-12-05 11:02:03 UTC")
            && html.contains("<strong>hedge; 1 inline retries</strong>")
            && html.contains("Hedged: p99 &lt;b&gt;8×&lt;/b&gt; p50")
            && html.contains("(from 120 executions)"),
        "{html}"
    );
    // The live counts the overview polls.
    let r = c
        .http
        .get(format!("{}/ui/live", c.base))
        .header("cookie", &admin)
        .send()
        .await
        .unwrap();
    let live: Value = r.json().await.unwrap();
    assert_eq!(live["counts"]["succeeded"], 1, "{live}");
}

#[tokio::test]
async fn a_workflow_is_drawn_as_its_graph() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    let r: Value = c
        .http
        .post(format!("{}/v1/workflows", c.base))
        .header("x-api-key", &c.admin)
        .json(&json!({
            "name": "order-42",
            "steps": [
                {"name": "charge", "job": {"kind": "echo", "payload": {"cents": 1200}}},
                {"name": "ship", "after": ["charge"], "job": {"kind": "echo"}},
                {"name": "email", "after": ["charge"], "job": {"kind": "echo"}},
                {"name": "close", "after": ["ship", "email"], "job": {"kind": "echo", "delay_ms": 600_000}}
            ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().expect("a workflow id").to_owned();
    let mut html = String::new();
    for _ in 0..200 {
        html = c.page(&admin, &format!("/ui/workflows/{id}")).await.1;
        if html.contains(r#"data-step="email" data-state="succeeded""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(html.contains(r#"<svg id="graph""#), "{html}");
    for step in ["charge", "ship", "email"] {
        assert!(
            html.contains(&format!(r#"data-step="{step}" data-state="succeeded""#)),
            "{step}: {html}"
        );
    }
    assert!(
        html.contains(r#"data-step="close" data-state="queued""#),
        "{html}"
    );
    // One edge per dependency: ship and email after charge, close after both.
    assert_eq!(html.matches(r#"class="edge""#).count(), 4, "{html}");
    // A step's page links back to its workflow.
    let close = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "close")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, job) = c.page(&admin, &format!("/ui/jobs/{close}")).await;
    assert!(job.contains(&format!("/ui/workflows/{id}")), "{job}");
    // The workflows page lists it (among the newest jobs), and opens one by id.
    let (status, list) = c.page(&admin, "/ui/workflows").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&format!(r#"data-workflow="{id}""#)), "{list}");
    let r = c
        .http
        .get(format!("{}/ui/workflows?id={id}", c.base))
        .header("cookie", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("/ui/workflows/{id}")
    );
}

#[tokio::test]
async fn bulk_actions_apply_to_the_filtered_selection() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    let reader = c.login(&c.reader).await;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(
            c.submit(json!({"kind": "bulk.me", "payload": i, "delay_ms": 600_000}))
                .await,
        );
    }
    let other = c
        .submit(json!({"kind": "bulk.other", "payload": 0, "delay_ms": 600_000}))
        .await;
    let bulk = |cookie: &str, form: Vec<(&'static str, &'static str)>| {
        c.http
            .post(format!("{}/ui/jobs/bulk", c.base))
            .header("cookie", cookie.to_owned())
            .header("origin", c.base.clone())
            .form(&form)
    };
    let filter = vec![
        ("state", "queued"),
        ("kind", "bulk.me"),
        ("action", "cancel"),
    ];
    // The list offers it to an admin only.
    let (_, html) = c.page(&admin, "/ui/jobs?state=queued&kind=bulk.me").await;
    assert!(
        html.contains(r#"id="bulk-form""#) && html.contains("bulk-cancel"),
        "{html}"
    );
    let (_, html) = c.page(&reader, "/ui/jobs?state=queued&kind=bulk.me").await;
    assert!(!html.contains("bulk-form"));
    let r = bulk(&reader, [filter.clone(), vec![("confirm", "yes")]].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Not confirmed: nothing happens, and the page says which field.
    let r = bulk(&admin, filter.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("confirm"));
    for id in &mine {
        assert_eq!(c.job(id).await["state"], "queued");
    }
    let r = bulk(&admin, [filter, vec![("confirm", "yes")]].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let back = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        back.starts_with("/ui/jobs?state=queued&kind=bulk%2Eme&done="),
        "{back}"
    );
    for id in &mine {
        assert_eq!(c.job(id).await["state"], "cancelled");
    }
    assert_eq!(c.job(&other).await["state"], "queued", "outside the filter");
    let (_, html) = c.page(&admin, &back).await;
    assert!(
        html.contains("Cancelled (or asked to cancel) 5 of 5 matching jobs."),
        "{html}"
    );

    // Dead jobs of a kind, retried in bulk as new jobs.
    let dead = c
        .submit(json!({"kind": "fail_n_times", "payload": {"permanent": true}}))
        .await;
    c.wait_state(&dead, "dead").await;
    let r = bulk(
        &admin,
        vec![
            ("state", "dead"),
            ("kind", "fail_n_times"),
            ("action", "retry"),
            ("confirm", "yes"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, html) = c
        .page(&admin, r.headers()["location"].to_str().unwrap())
        .await;
    assert!(
        html.contains("Retried 1 of 1 matching jobs as new jobs."),
        "{html}"
    );
}

#[tokio::test]
async fn the_api_retries_a_dead_job_too() {
    let c = Console::start();
    let dead = c
        .submit(json!({"kind": "fail_n_times", "payload": {"permanent": true}}))
        .await;
    c.wait_state(&dead, "dead").await;
    let retry = |key: &str| {
        c.http
            .post(format!("{}/v1/jobs/{dead}/retry", c.base))
            .header("x-api-key", key.to_owned())
            .send()
    };
    let r = retry(&c.reader).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "jobs:read may not retry");
    let r = retry(&c.admin).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let copy: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/jobs/{}", copy["id"].as_str().unwrap())
    );
    assert_eq!(copy["kind"], "fail_n_times");
    assert_eq!(copy["tags"], json!([format!("retry-of:{dead}")]));
    let again = retry(&c.admin).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    // Not dead: a conflict, as a problem document.
    let queued = c
        .submit(json!({"kind": "echo", "payload": 1, "delay_ms": 600_000}))
        .await;
    let r = c
        .http
        .post(format!("{}/v1/jobs/{queued}/retry", c.base))
        .header("x-api-key", &c.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "https://jobforge.dev/problems/conflict");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("only a dead job"),
        "{problem}"
    );
}

#[tokio::test]
async fn the_list_filters_by_creation_time_and_tag() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    let mut early = Vec::new();
    for i in 0..3 {
        early.push(
            c.submit(json!({"kind": "timed", "payload": i, "delay_ms": 600_000}))
                .await,
        );
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut late = Vec::new();
    for i in 0..2 {
        late.push(
            c.submit(json!({"kind": "timed", "payload": i, "delay_ms": 600_000}))
                .await,
        );
    }
    let ids = |html: &str| -> Vec<String> {
        html.split("data-id=\"")
            .skip(1)
            .filter_map(|s| s.get(..36).map(str::to_owned))
            .collect()
    };
    let enc = |t: &str| t.replace(':', "%3A").replace('+', "%2B");
    let (_, html) = c
        .page(
            &admin,
            &format!("/ui/jobs?kind=timed&from={}", enc(&between)),
        )
        .await;
    let mut got = ids(&html);
    got.sort();
    assert_eq!(got, late, "from: only the later jobs");
    let (_, html) = c
        .page(
            &admin,
            &format!("/ui/jobs?kind=timed&to={}&order=asc", enc(&between)),
        )
        .await;
    assert_eq!(ids(&html), early, "to: only the earlier jobs, oldest first");
    // And by tag, through the API's listing too.
    let vip = c
        .submit(json!({"kind": "timed", "payload": 9, "delay_ms": 600_000, "tags": ["vip"]}))
        .await;
    let (_, html) = c.page(&admin, "/ui/jobs?tag=vip").await;
    assert_eq!(ids(&html), vec![vip.clone()]);
    let listed = c.get_json("/v1/jobs?tag=vip", &c.admin).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["items"][0]["id"], vip.as_str());
    let (status, html) = c.page(&admin, "/ui/jobs?from=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("from"), "{html}");
}

#[tokio::test]
async fn schedules_need_their_own_scopes_on_the_console_too() {
    let (admin_key, admin_spec) = key("admin");
    let (jobs_key, jobs_spec) = key("jobs:read,jobs:write");
    let (sched_key, sched_spec) = key("jobs:read,schedules:read");
    let proc = common::spawn(&[
        "--api-key-hash",
        &admin_spec,
        "--api-key-hash",
        &jobs_spec,
        "--api-key-hash",
        &sched_spec,
        "--schedules",
        r#"[{"id": "nightly", "cron": "0 3 * * *", "job": {"kind": "echo", "payload": {"n": 1}}}]"#,
    ]);
    let c = Console {
        base: proc.base.clone(),
        _proc: proc,
        http: Client::builder().redirect(Policy::none()).build().unwrap(),
        admin: admin_key.clone(),
        reader: jobs_key.clone(),
    };
    // jobs:* alone: no schedules link, the page and its actions refused.
    let jobs_only = c.login(&jobs_key).await;
    let (_, html) = c.page(&jobs_only, "/ui").await;
    assert!(!html.contains(r#"data-nav="schedules""#), "{html}");
    let (status, _) = c.page(&jobs_only, "/ui/schedules").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let r = c
        .post(&jobs_only, "/ui/schedules/nightly/pause", &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // schedules:read sees them, with no buttons.
    let viewer = c.login(&sched_key).await;
    let (status, html) = c.page(&viewer, "/ui/schedules").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"data-schedule="nightly""#) && !html.contains("Pause"),
        "{html}"
    );
    let r = c
        .post(&viewer, "/ui/schedules/nightly/pause", &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // schedules:write pauses, resumes and runs one now.
    let admin = c.login(&admin_key).await;
    let r = c.post(&admin, "/ui/schedules/nightly/pause", &c.base).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        c.get_json("/v1/schedules/nightly", &admin_key).await["paused"],
        true
    );
    let (_, html) = c.page(&admin, "/ui/schedules").await;
    assert!(html.contains("Resume"), "{html}");
    let r = c
        .post(&admin, "/ui/schedules/nightly/resume", &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        c.get_json("/v1/schedules/nightly", &admin_key).await["paused"],
        false
    );
    let r = c
        .post(&admin, "/ui/schedules/nightly/trigger", &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let job = r.headers()["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/ui/jobs/")
        .to_owned();
    assert_eq!(c.job(&job).await["kind"], "echo");
    let r = c.post(&admin, "/ui/schedules/nowhere/pause", &c.base).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn queues_are_paused_and_resumed_by_an_admin() {
    let c = Console::start();
    let post = |path: &str, key: &str| {
        c.http
            .post(format!("{}{path}", c.base))
            .header("x-api-key", key.to_owned())
            .send()
    };
    // Over the API: admin only; reading needs jobs:read.
    let r = post("/v1/queues/default/pause", &c.reader).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post("/v1/queues/default/pause", &c.admin).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"queue": "default", "paused": true, "changed": true})
    );
    let again: Value = post("/v1/queues/default/pause", &c.admin)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["changed"], false);
    let paused = c.get_json("/v1/queues/paused", &c.reader).await;
    assert_eq!(paused, json!({"paused": ["default"]}));
    let r = post("/v1/queues/has%20space/pause", &c.admin)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["field"], "queue", "{problem}");
    // A job on the paused queue (the server's workers serve `default`) waits; resumed, it runs.
    let job = c.submit(json!({"kind": "echo", "payload": 1})).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(c.job(&job).await["state"], "queued");

    // On the console: the reader sees the paused queue but no buttons, and cannot act.
    let reader = c.login(&c.reader).await;
    let (_, html) = c.page(&reader, "/ui/queues").await;
    assert!(html.contains(r#"data-paused="default""#), "{html}");
    assert!(
        !html.contains("pause-form") && !html.contains("Resume"),
        "{html}"
    );
    let resume = |cookie: String| {
        c.http
            .post(format!("{}/ui/queues/resume", c.base))
            .header("cookie", cookie)
            .header("origin", c.base.clone())
            .form(&[("queue", "default")])
            .send()
    };
    let forged = resume(reader.clone()).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // The admin resumes it there.
    let admin = c.login(&c.admin).await;
    let (_, html) = c.page(&admin, "/ui/queues").await;
    assert!(
        html.contains("pause-form") && html.contains("Resume"),
        "{html}"
    );
    let r = resume(admin.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    c.wait_state(&job, "succeeded").await;
    let (_, html) = c.page(&admin, "/ui/queues").await;
    assert!(html.contains("None: every queue runs."), "{html}");
}

#[tokio::test]
async fn a_finished_job_is_deleted_from_the_console_and_the_api() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    let reader = c.login(&c.reader).await;
    let done = c.submit(json!({"kind": "echo", "payload": 1})).await;
    c.wait_state(&done, "succeeded").await;
    let (_, html) = c.page(&reader, &format!("/ui/jobs/{done}")).await;
    assert!(!html.contains("delete-button"), "read only: {html}");
    let r = c
        .post(&reader, &format!("/ui/jobs/{done}/delete"), &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, html) = c.page(&admin, &format!("/ui/jobs/{done}")).await;
    assert!(html.contains("delete-button"), "{html}");
    let r = c
        .post(&admin, &format!("/ui/jobs/{done}/delete"), &c.base)
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, _) = c.page(&admin, &format!("/ui/jobs/{done}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the job is gone");

    // The API: DELETE needs jobs:write, a finished job, and answers 204 once.
    let delete = |id: String, key: String| {
        c.http
            .delete(format!("{}/v1/jobs/{id}", c.base))
            .header("x-api-key", key)
            .send()
    };
    let failed = c
        .submit(json!({"kind": "fail_n_times", "payload": {"permanent": true}}))
        .await;
    c.wait_state(&failed, "dead").await;
    let r = delete(failed.clone(), c.reader.clone()).await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "jobs:read may not delete"
    );
    let r = delete(failed.clone(), c.admin.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = delete(failed.clone(), c.admin.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let queued = c
        .submit(json!({"kind": "echo", "payload": 1, "delay_ms": 600_000}))
        .await;
    let r = delete(queued.clone(), c.admin.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("only a finished job"),
        "{problem}"
    );
    assert_eq!(c.job(&queued).await["state"], "queued");
    let stats = c.get_json("/v1/queues/stats", &c.admin).await;
    assert_eq!(
        (
            stats["jobs"]["succeeded"].as_u64(),
            stats["jobs"]["dead"].as_u64()
        ),
        (Some(0), Some(0)),
        "{stats}"
    );

    // In bulk, over a list filtered to one finished state.
    let many: Vec<String> = futures_util::future::join_all(
        (0..3).map(|i| c.submit(json!({"kind": "echo", "payload": i, "tags": ["sweep"]}))),
    )
    .await;
    for id in &many {
        c.wait_state(id, "succeeded").await;
    }
    let (_, html) = c.page(&admin, "/ui/jobs?state=succeeded&tag=sweep").await;
    assert!(html.contains("bulk-delete"), "{html}");
    let r = c
        .http
        .post(format!("{}/ui/jobs/bulk", c.base))
        .header("cookie", &admin)
        .header("origin", &c.base)
        .form(&[
            ("action", "delete"),
            ("state", "succeeded"),
            ("tag", "sweep"),
            ("confirm", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("Deleted%203%20of%203"),
        "{:?}",
        r.headers()["location"]
    );
    for id in &many {
        let r = c
            .http
            .get(format!("{}/v1/jobs/{id}", c.base))
            .header("x-api-key", &c.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_overview_charts_retries_from_the_stores_running_total() {
    let c = Console::start();
    let admin = c.login(&c.admin).await;
    // Fails once, then succeeds: one retry.
    let id = c
        .submit(json!({"kind": "fail_n_times", "payload": {"times": 1}}))
        .await;
    c.wait_state(&id, "succeeded").await;
    let (status, live) = c.page(&admin, "/ui/live").await;
    assert_eq!(status, StatusCode::OK);
    let live: Value = serde_json::from_str(&live).unwrap();
    assert_eq!(live["retried"], 1, "{live}");
    let stats = c.get_json("/v1/queues/stats", &c.admin).await;
    assert_eq!(stats["retried"], 1, "{stats}");
    let (_, html) = c.page(&admin, "/ui").await;
    assert!(
        html.contains("key-retried"),
        "the chart's legend names retries"
    );
}

#[tokio::test]
async fn queues_show_their_depth_per_priority() {
    let c = Console::start();
    // The server's workers serve `default` only: jobs on `held` wait.
    for (priority, delay_ms) in [(5, 0), (5, 0), (0, 0), (0, 600_000)] {
        c.submit(json!({
            "kind": "echo", "payload": 1, "queue": "held", "priority": priority,
            "delay_ms": delay_ms
        }))
        .await;
    }
    let depths = c.get_json("/v1/queues/depths", &c.reader).await;
    assert_eq!(
        depths,
        json!({"queues": [{
            "queue": "held",
            "ready": [{"priority": 5, "ready": 2}, {"priority": 0, "ready": 1}],
            "delayed": 1,
            "at_least": false
        }]}),
        "{depths}"
    );
    let reader = c.login(&c.reader).await;
    let (status, html) = c.page(&reader, "/ui/queues").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"data-depth-queue="held""#), "{html}");
    assert!(html.contains("priority 5: 2"), "{html}");
}
