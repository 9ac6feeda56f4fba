//! Input rules every memory backend applies alike, so a bad entry is rejected with the same
//! error whichever backend stores it.

use std::io;
use std::time::Duration;

use serde_json::Value;

use super::types::{EntryQuery, NewEntry};
use crate::{Error, Result};

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 128;

/// Longest key (and key prefix), in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// Largest `limit` of one [`EntryQuery`].
pub const MAX_SEARCH_LIMIT: usize = 1_000;

/// The limits that depend on a backend's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryLimits {
    pub(crate) max_value_bytes: usize,
    pub(crate) max_tags: usize,
    pub(crate) max_tag_bytes: usize,
}

pub(crate) fn namespace(ns: &str) -> Result<()> {
    label("namespace", ns, MAX_NAMESPACE_BYTES, false)
}

pub(crate) fn key(key: &str) -> Result<()> {
    label("key", key, MAX_KEY_BYTES, false)
}

pub(crate) fn kind(kind: &str) -> Result<()> {
    if kind.is_empty() {
        return Err(Error::invalid_input("kind", "must not be empty"));
    }
    Ok(())
}

/// Check a new entry; returns the size of its value in bytes of JSON.
pub(crate) fn new_entry(entry: &NewEntry, limits: &EntryLimits) -> Result<usize> {
    namespace(&entry.namespace)?;
    key(&entry.key)?;
    tags(&entry.tags, limits)?;
    if entry.ttl == Some(Duration::ZERO) {
        return Err(Error::invalid_input(
            "ttl",
            "must be longer than zero; leave it out to keep the entry until deleted",
        ));
    }
    value(&entry.value, limits)
}

pub(crate) fn tags(tags: &[String], limits: &EntryLimits) -> Result<()> {
    if tags.len() > limits.max_tags {
        return Err(Error::invalid_input(
            "tags",
            format!(
                "{} tags is more than the limit of {}",
                tags.len(),
                limits.max_tags
            ),
        ));
    }
    for tag in tags {
        label("tags", tag, limits.max_tag_bytes, false)?;
    }
    Ok(())
}

/// The size of `value` in bytes of JSON, or an error naming `value` when it is over the limit.
pub(crate) fn value(value: &Value, limits: &EntryLimits) -> Result<usize> {
    let mut counter = Counter {
        bytes: 0,
        limit: limits.max_value_bytes,
    };
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => Ok(counter.bytes),
        Err(_) if counter.bytes > counter.limit => Err(Error::invalid_input(
            "value",
            format!(
                "is over the limit of {} bytes of JSON",
                limits.max_value_bytes
            ),
        )),
        Err(err) => Err(err.into()),
    }
}

pub(crate) fn query(query: &EntryQuery, limits: &EntryLimits) -> Result<()> {
    namespace(&query.namespace)?;
    if let Some(prefix) = &query.key_prefix {
        label("key_prefix", prefix, MAX_KEY_BYTES, true)?;
    }
    tags(&query.tags, limits)?;
    if query.limit == 0 || query.limit > MAX_SEARCH_LIMIT {
        return Err(Error::invalid_input(
            "limit",
            format!(
                "{} is out of range; ask for 1 to {MAX_SEARCH_LIMIT} entries",
                query.limit
            ),
        ));
    }
    Ok(())
}

fn label(field: &'static str, text: &str, max: usize, may_be_empty: bool) -> Result<()> {
    if text.is_empty() && !may_be_empty {
        return Err(Error::invalid_input(field, "must not be empty"));
    }
    if text.len() > max {
        return Err(Error::invalid_input(
            field,
            format!("is {} bytes, over the limit of {max}", text.len()),
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(Error::invalid_input(
            field,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

/// Counts bytes written, and stops the writer as soon as they pass the limit.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        if self.bytes > self.limit {
            Err(io::Error::other("value over the size limit"))
        } else {
            Ok(buf.len())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ErrorKind;

    const LIMITS: EntryLimits = EntryLimits {
        max_value_bytes: 16,
        max_tags: 2,
        max_tag_bytes: 8,
    };

    fn field(result: Result<usize>) -> Option<&'static str> {
        result.err().and_then(|e| {
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            e.field()
        })
    }

    #[test]
    fn value_size_is_json_bytes() {
        assert_eq!(value(&json!("abc"), &LIMITS).unwrap(), 5);
        assert_eq!(value(&json!([1, 2]), &LIMITS).unwrap(), 5);
        // 16 bytes exactly is fine, 17 is not.
        assert_eq!(value(&json!("12345678901234"), &LIMITS).unwrap(), 16);
        assert_eq!(
            field(value(&json!("123456789012345"), &LIMITS)),
            Some("value")
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let ok = NewEntry::new("ns", "k", json!(1));
        assert!(new_entry(&ok, &LIMITS).is_ok());
        let cases = [
            (NewEntry::new("", "k", json!(1)), "namespace"),
            (NewEntry::new("n".repeat(129), "k", json!(1)), "namespace"),
            (NewEntry::new("a\nb", "k", json!(1)), "namespace"),
            (NewEntry::new("ns", "", json!(1)), "key"),
            (NewEntry::new("ns", "k".repeat(257), json!(1)), "key"),
            (NewEntry::new("ns", "k\u{7}", json!(1)), "key"),
            (ok.clone().tag("a").tag("b").tag("c"), "tags"),
            (ok.clone().tag(""), "tags"),
            (ok.clone().tag("123456789"), "tags"),
            (ok.clone().tag("t\t"), "tags"),
            (ok.clone().ttl(Duration::ZERO), "ttl"),
        ];
        for (entry, expected) in cases {
            assert_eq!(
                field(new_entry(&entry, &LIMITS)),
                Some(expected),
                "{entry:?}"
            );
        }
        // Exactly at the byte limits is accepted.
        let at_limits = NewEntry::new("n".repeat(128), "k".repeat(256), json!(1));
        assert!(new_entry(&at_limits, &LIMITS).is_ok());
    }

    #[test]
    fn queries_are_checked() {
        let q = EntryQuery::namespace("ns");
        assert!(query(&q, &LIMITS).is_ok());
        assert!(query(&q.clone().prefix(""), &LIMITS).is_ok());
        for (bad, expected) in [
            (q.clone().limit(0), "limit"),
            (q.clone().limit(1_001), "limit"),
            (q.clone().prefix("\u{0}"), "key_prefix"),
            (EntryQuery::namespace(""), "namespace"),
        ] {
            let err = query(&bad, &LIMITS).unwrap_err();
            assert_eq!(err.field(), Some(expected));
        }
        assert!(query(&q.limit(1_000), &LIMITS).is_ok());
    }
}
