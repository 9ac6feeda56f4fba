//! Scopes: what a credential may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// One permission a credential can carry.
///
/// `admin` implies every other scope. The names are stable: they appear in key files, JWT
/// claims and `403` answers.
///
/// ```
/// use jobforge::http::security::Scope;
///
/// let scope: Scope = "jobs:write".parse()?;
/// assert_eq!(scope, Scope::JobsWrite);
/// assert_eq!(scope.to_string(), "jobs:write");
/// assert!("jobs:delete".parse::<Scope>().is_err());
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read jobs, queue statistics and kind reflections.
    JobsRead,
    /// Submit and cancel jobs.
    JobsWrite,
    /// Read memory entries.
    MemoryRead,
    /// Write and delete memory entries.
    MemoryWrite,
    /// Read schedules and their fires.
    SchedulesRead,
    /// Declare, pause, resume, trigger and delete schedules.
    SchedulesWrite,
    /// Everything, including routes no narrower scope covers.
    Admin,
}

impl Scope {
    /// Every scope, in a fixed order.
    pub const ALL: [Scope; 7] = [
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::MemoryRead,
        Scope::MemoryWrite,
        Scope::SchedulesRead,
        Scope::SchedulesWrite,
        Scope::Admin,
    ];

    /// The scope's stable name (`jobs:read`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::MemoryRead => "memory:read",
            Scope::MemoryWrite => "memory:write",
            Scope::SchedulesRead => "schedules:read",
            Scope::SchedulesWrite => "schedules:write",
            Scope::Admin => "admin",
        }
    }

    /// The rate-limit tier a request needing this scope is counted in.
    #[must_use]
    pub fn tier(self) -> Tier {
        match self {
            Scope::JobsRead | Scope::MemoryRead | Scope::SchedulesRead => Tier::Read,
            Scope::JobsWrite | Scope::MemoryWrite | Scope::SchedulesWrite => Tier::Write,
            Scope::Admin => Tier::Admin,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::JobsRead => 1,
            Scope::JobsWrite => 2,
            Scope::MemoryRead => 4,
            Scope::MemoryWrite => 8,
            Scope::SchedulesRead => 32,
            Scope::SchedulesWrite => 64,
            Scope::Admin => 16,
        }
    }
}

/// The rate-limit tiers of authenticated requests (see
/// [`RateLimits`](super::RateLimits)): reads are cheap, writes less so, admin calls rare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// `jobs:read`, `memory:read`, `schedules:read` routes (and authenticated routes needing
    /// no scope).
    Read,
    /// `jobs:write`, `memory:write`, `schedules:write` routes.
    Write,
    /// `admin` routes.
    Admin,
}

impl Tier {
    /// `read`, `write` or `admin`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Read => "read",
            Tier::Write => "write",
            Tier::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                Error::invalid_input(
                    "scope",
                    format!(
                        "unknown scope {s:?}; use one of jobs:read, jobs:write, memory:read, \
                         memory:write, schedules:read, schedules:write, admin"
                    ),
                )
            })
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of [`Scope`]s. `admin` in the set grants every scope.
///
/// Parsed from names separated by spaces or commas (the OAuth `scope` claim form), and
/// (de)serialized as such a string or as an array of names.
///
/// ```
/// use jobforge::http::security::{Scope, Scopes};
///
/// let scopes: Scopes = "jobs:read memory:read".parse()?;
/// assert!(scopes.allows(Scope::JobsRead));
/// assert!(!scopes.allows(Scope::JobsWrite));
/// assert!(Scopes::from_iter([Scope::Admin]).allows(Scope::MemoryWrite));
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all: authenticated, but allowed only routes that need no scope.
    #[must_use]
    pub const fn empty() -> Self {
        Scopes(0)
    }

    /// Every scope (what `admin` grants).
    #[must_use]
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// Add a scope.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Whether `scope` is in the set itself (no `admin` implication).
    #[must_use]
    pub fn contains(&self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether the set grants `scope`: it holds it, or holds `admin`.
    #[must_use]
    pub fn allows(&self, scope: Scope) -> bool {
        self.contains(scope) || self.contains(Scope::Admin)
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in [`Scope::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        Scope::ALL.into_iter().filter(|s| self.contains(*s))
    }

    /// Parse scope names from a claim, keeping the known ones and ignoring the rest (a token
    /// may carry other services' scopes).
    pub(crate) fn from_claim_lenient<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        names
            .into_iter()
            .filter_map(|n| n.parse::<Scope>().ok())
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes = Scopes::empty();
        for scope in iter {
            scopes.insert(scope);
        }
        scopes
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for Scopes {
    type Err = Error;

    /// Strict: every name must be a known scope (configuration, not tokens).
    fn from_str(s: &str) -> Result<Self> {
        s.split([' ', ','])
            .filter(|part| !part.is_empty())
            .map(str::parse::<Scope>)
            .collect()
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            List(Vec<Scope>),
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Form::List(list) => Ok(list.into_iter().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().ok(), Some(scope));
        }
        let err = "Admin".parse::<Scope>().err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("unknown scope") && e.contains("jobs:read")));
    }

    #[test]
    fn admin_implies_everything() {
        let admin: Scopes = "admin".parse().unwrap_or_default();
        for scope in Scope::ALL {
            assert!(admin.allows(scope));
        }
        assert!(!admin.contains(Scope::JobsRead));
    }

    #[test]
    fn parse_text_and_lists() {
        let s: Scopes = "jobs:read, memory:write".parse().unwrap_or_default();
        assert_eq!(s.to_string(), "jobs:read memory:write");
        assert!("jobs:read bogus".parse::<Scopes>().is_err());
        let from_json: Scopes =
            serde_json::from_str(r#"["jobs:write","memory:read"]"#).unwrap_or_default();
        assert!(from_json.allows(Scope::JobsWrite) && from_json.allows(Scope::MemoryRead));
        assert!(!from_json.allows(Scope::JobsRead));
        let text: Scopes = serde_json::from_str(r#""admin""#).unwrap_or_default();
        assert!(text.contains(Scope::Admin));
        assert!(serde_json::from_str::<Scopes>(r#"["nope"]"#).is_err());
        assert_eq!(
            serde_json::to_string(&s).ok().as_deref(),
            Some(r#"["jobs:read","memory:write"]"#)
        );
    }

    #[test]
    fn lenient_claims_skip_unknown() {
        let s = Scopes::from_claim_lenient(["jobs:read", "other:thing", ""]);
        assert_eq!(s, Scopes::from_iter([Scope::JobsRead]));
    }

    #[test]
    fn tiers() {
        assert_eq!(Scope::JobsRead.tier(), Tier::Read);
        assert_eq!(Scope::MemoryWrite.tier(), Tier::Write);
        assert_eq!(Scope::Admin.tier(), Tier::Admin);
    }
}
