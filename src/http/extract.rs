//! The JSON body extractor: every way a body can be wrong becomes a problem naming what and
//! where (malformed JSON 400, wrong content type 415, too large 413, wrong type, missing or
//! unknown field 422 with the field's path).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use super::AppState;
use super::problem::{Problem, ProblemType};

/// A JSON request body, decoded strictly (request types deny unknown fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !json {
            return Err(Problem::new(
                ProblemType::UnsupportedMediaType,
                "send the body as JSON with the header `content-type: application/json`",
            ));
        }
        let limit = state.shared.body_limit;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status().as_u16() == 413 {
                Problem::new(
                    ProblemType::PayloadTooLarge,
                    format!(
                        "the body is over this server's limit of {limit} bytes; send less (large data belongs elsewhere, with a reference in the payload)"
                    ),
                )
            } else {
                Problem::new(
                    ProblemType::MalformedJson,
                    format!("the body could not be read: {}", rejection.body_text()),
                )
            }
        })?;
        decode(&bytes).map(ApiJson)
    }
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decode `bytes` as `T`, naming the offending field on failure. Every request body is a
/// JSON object: anything else valid JSON (an array, which serde would otherwise read into a
/// struct field by field, a string, a number) is a 422 naming `body`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => Problem::validation("body", "`body`: must be a JSON object"),
                Err(err) => classify(err, ""),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => value,
        Err(err) => {
            let path = err.path().to_string();
            return Err(classify(err.into_inner(), &path));
        }
    };
    de.end().map_err(|e| {
        Problem::new(
            ProblemType::MalformedJson,
            format!("the body is not one JSON value: {e}"),
        )
    })?;
    Ok(value)
}

fn classify(err: serde_json::Error, path: &str) -> Problem {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::new(
            ProblemType::MalformedJson,
            format!("the body is not valid JSON: {err}"),
        ),
        Category::Data => {
            let message = err.to_string();
            // serde names unknown and missing fields in backticks; the path points at the
            // object that holds them.
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|prefix| {
                    message
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.split('`').next())
                });
            let field = match (named, path) {
                (Some(name), "." | "") => name.to_owned(),
                (None, "." | "") => "body".to_owned(),
                // An unknown field is already the last segment of the path; a missing one is
                // not (the path stops at the object that lacks it).
                (Some(name), path) if !path.ends_with(name) => format!("{path}.{name}"),
                (_, path) => path.to_owned(),
            };
            let detail = match message.split(" at line ").next() {
                Some(head) => format!("`{field}`: {head}"),
                None => format!("`{field}`: {message}"),
            };
            Problem::validation(&field, detail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        kind: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn field(text: &str) -> (u16, Option<String>) {
        let p = decode::<Body>(text.as_bytes())
            .err()
            .map(|p| (p.status, p.field));
        p.unwrap_or((200, None))
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field("{\"kind\": 1}"), (422, Some("kind".into())));
        assert_eq!(field("{}"), (422, Some("kind".into())));
        assert_eq!(field("{\"kind\":\"a\",\"x\":1}"), (422, Some("x".into())));
        assert_eq!(
            field("{\"kind\":\"a\",\"inner\":{\"n\":\"no\"}}"),
            (422, Some("inner.n".into()))
        );
        assert_eq!(
            field("{\"kind\":\"a\",\"inner\":{\"m\":1}}"),
            (422, Some("inner.m".into()))
        );
        assert_eq!(field("{\"kind\":"), (400, None));
        assert_eq!(field("{\"kind\":\"a\"} x"), (400, None));
        assert_eq!(field("[1]"), (422, Some("body".into())));
        assert_eq!(field("{\"kind\":\"a\"}"), (200, None));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/merge-patch+json"));
        assert!(!is_json_media_type("text/plain"));
    }
}
