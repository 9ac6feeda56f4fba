//! `docs/openapi.json` is the document the code generates: this fails when it is stale.
//! Refresh it with `UPDATE_OPENAPI=1 cargo test --features http --test http_openapi`.

use std::path::Path;

#[test]
fn docs_openapi_json_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let fresh = format!(
        "{}\n",
        jobforge::http::server::openapi_json().expect("the document serializes")
    );
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).expect("write docs/openapi.json");
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == fresh,
        "docs/openapi.json is stale: the API changed. Regenerate it with\n    UPDATE_OPENAPI=1 cargo test --features http --test http_openapi\nand commit the result."
    );
}

#[test]
fn every_operation_has_summary_description_examples_and_errors() {
    let doc = serde_json::to_value(jobforge::http::openapi()).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            operations += 1;
            let at = format!("{method} {path}");
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{at}: no summary"
            );
            assert!(
                op["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{at}: no description"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.contains_key("500"), "{at}: no 500");
            for (status, response) in responses {
                let content = response["content"].as_object();
                let Some(content) = content else {
                    assert_eq!(status, "204", "{at} {status}: no content");
                    continue;
                };
                for (media, body) in content {
                    let has_example = body.get("example").is_some()
                        || body
                            .get("examples")
                            .is_some_and(|e| e.as_object().is_some_and(|e| !e.is_empty()))
                        || body["schema"]["$ref"].as_str().is_some_and(|r| {
                            let name = r.rsplit('/').next().unwrap_or("");
                            doc["components"]["schemas"][name].get("example").is_some()
                        });
                    assert!(has_example, "{at} {status} {media}: no example");
                }
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        content.contains_key("application/problem+json"),
                        "{at} {status}: not a problem"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 32);
}
