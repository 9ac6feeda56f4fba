//! Reading script replies: Redis answers Lua tables as nested arrays of strings and integers.

use ::redis::Value;

use crate::{Error, ErrorKind, Result};

pub(crate) fn unexpected(what: &str, value: &Value) -> Error {
    let mut shown = format!("{value:?}");
    if shown.len() > 200 {
        let mut end = 200;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push('…');
    }
    Error::new(
        ErrorKind::Backend,
        format!(
            "unexpected reply from Redis for {what}: {shown}; is the server Redis 7.0 or later?"
        ),
    )
}

pub(crate) fn array(what: &str, value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(unexpected(what, &other)),
    }
}

pub(crate) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s.as_str()),
        _ => None,
    }
}

pub(crate) fn owned(value: &Value) -> Option<String> {
    match value {
        Value::Int(n) => Some(n.to_string()),
        other => text(other).map(str::to_owned),
    }
}

pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other).and_then(|s| s.parse().ok()),
    }
}

pub(crate) fn need_int(what: &str, value: &Value) -> Result<i64> {
    int(value).ok_or_else(|| unexpected(what, value))
}

pub(crate) fn need_text<'a>(what: &str, value: &'a Value) -> Result<&'a str> {
    text(value).ok_or_else(|| unexpected(what, value))
}
