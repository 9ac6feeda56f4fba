//! API keys: generated with a recognisable prefix, configured only as SHA-256 hashes, checked
//! in constant time.
//!
//! A key reads `jfk_<id>_<secret>`: `jfk_` makes a leaked key easy to spot (and to add to
//! secret scanners), `<id>` (16 hex digits) names the key in logs and configuration and is not
//! secret, `<secret>` is 256 bits from the operating system's CSPRNG (64 hex digits). The
//! server keeps only `sha256(whole key)` in hex; the key itself is shown once, at generation.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::principal::{AuthError, Principal};
use super::scope::Scopes;
use crate::{Error, ErrorKind, Result};

/// The header an API key may also be sent in (instead of `Authorization: Bearer`).
pub const X_API_KEY: &str = "x-api-key";

/// The prefix of every jobforge API key.
pub const API_KEY_PREFIX: &str = "jfk_";

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// Longest key id accepted in configuration.
const MAX_ID_LEN: usize = 64;

/// A freshly generated API key: the key (show it once, never store it) and its hash (store
/// this).
///
/// ```
/// use jobforge::http::security::{ApiKey, ApiKeyEntry, ApiKeyStore, Scopes};
///
/// let key = ApiKey::generate()?;
/// assert!(key.key().starts_with("jfk_"));
/// let entry = ApiKeyEntry::new(key.id(), key.sha256_hex(), "jobs:read".parse::<Scopes>()?, None)?;
/// let store = ApiKeyStore::new([entry])?;
/// assert_eq!(store.verify(key.key()).map(|p| p.id().to_owned()), Ok(key.id().to_owned()));
/// # Ok::<(), jobforge::Error>(())
/// ```
pub struct ApiKey {
    id: String,
    key: String,
    sha256_hex: String,
}

impl ApiKey {
    /// A new key: a random 64-bit id and a 256-bit secret, both from the OS CSPRNG.
    ///
    /// Fails only if the operating system cannot provide random bytes.
    pub fn generate() -> Result<Self> {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut id)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Configuration,
                    format!("the operating system's random number generator failed: {e}"),
                )
            })?;
        let id = hex(&id);
        let key = format!("{API_KEY_PREFIX}{id}_{}", hex(&secret));
        let sha256_hex = sha256_hex(key.as_bytes());
        Ok(Self {
            id,
            key,
            sha256_hex,
        })
    }

    /// The public key id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole key, secret included: hand it to the client once.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `sha256(key)` in lowercase hex: what the server is configured with.
    #[must_use]
    pub fn sha256_hex(&self) -> &str {
        &self.sha256_hex
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("sha256_hex", &self.sha256_hex)
            .finish()
    }
}

/// The text `jobforge-server keys generate` prints: a new key, its hash, and how to configure
/// the server with it.
///
/// ```
/// let text = jobforge::http::security::generate_key_command()?;
/// assert!(text.contains("jfk_") && text.contains("--api-key-hash"));
/// # Ok::<(), jobforge::Error>(())
/// ```
pub fn generate_key_command() -> Result<String> {
    let key = ApiKey::generate()?;
    Ok(format!(
        "API key (give it to the client once; it is not stored anywhere):\n  {key}\n\n\
         key id:  {id}\nsha256:  {hash}\n\n\
         Configure the server with the hash only, choosing its scopes (and optionally a tenant):\n  \
         jobforge-server --api-key-hash '{id}:{hash}:jobs:read,jobs:write'\n\
         or add to the keys file (JOBFORGE_API_KEYS_FILE):\n  \
         {{\"id\": \"{id}\", \"sha256\": \"{hash}\", \"scopes\": [\"jobs:read\", \"jobs:write\"]}}\n",
        key = key.key(),
        id = key.id(),
        hash = key.sha256_hex(),
    ))
}

/// One configured key: its id, the SHA-256 of the whole key, its scopes, its tenant, and
/// whether it is revoked.
///
/// Loadable with serde (a keys file is a JSON array of these) and from the flag form
/// `<id>:<sha256>:<scopes>[:<tenant>]`, scopes separated by commas:
///
/// ```
/// use jobforge::http::security::{ApiKeyEntry, Scope};
///
/// let hash = "ab".repeat(32);
/// let entry: ApiKeyEntry = format!("ci-bot:{hash}:jobs:read,jobs:write:acme").parse()?;
/// assert_eq!(entry.id, "ci-bot");
/// assert!(entry.scopes.allows(Scope::JobsWrite));
/// assert_eq!(entry.tenant.as_deref(), Some("acme"));
///
/// let from_json: ApiKeyEntry = serde_json::from_str(&format!(
///     r#"{{"id": "ops", "sha256": "{hash}", "scopes": ["admin"], "revoked": true}}"#
/// )).map_err(|e| jobforge::Error::invalid_input("keys file", e.to_string()))?;
/// assert!(from_json.revoked);
/// # Ok::<(), jobforge::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The key id (the part after `jfk_`): letters, digits and `-`, at most 64 bytes.
    pub id: String,
    /// SHA-256 of the whole key, 64 hex digits.
    #[serde(rename = "sha256")]
    pub sha256_hex: String,
    /// What the key may do.
    pub scopes: Scopes,
    /// The tenant the key is bound to; none: every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A revoked key is refused like an unknown one.
    #[serde(default)]
    pub revoked: bool,
}

impl ApiKeyEntry {
    /// A checked entry.
    pub fn new(
        id: impl Into<String>,
        sha256_hex: impl Into<String>,
        scopes: Scopes,
        tenant: Option<String>,
    ) -> Result<Self> {
        let entry = Self {
            id: id.into(),
            sha256_hex: sha256_hex.into(),
            scopes,
            tenant,
            revoked: false,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// Check the id, the hash and the tenant; the error names what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.id.is_empty()
            || self.id.len() > MAX_ID_LEN
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(Error::invalid_input(
                "api key id",
                format!(
                    "{:?} must be 1 to {MAX_ID_LEN} letters, digits or '-'",
                    self.id
                ),
            ));
        }
        if decode_hash(&self.sha256_hex).is_none() {
            return Err(Error::invalid_input(
                "api key sha256",
                format!(
                    "the hash of key {:?} must be 64 hex digits (sha256 of the whole key, as \
                     `jobforge-server keys generate` prints it)",
                    self.id
                ),
            ));
        }
        if self
            .tenant
            .as_ref()
            .is_some_and(|t| t.is_empty() || t.chars().any(char::is_control))
        {
            return Err(Error::invalid_input(
                "api key tenant",
                format!(
                    "the tenant of key {:?} must be non-empty text without control characters",
                    self.id
                ),
            ));
        }
        Ok(())
    }
}

impl FromStr for ApiKeyEntry {
    type Err = Error;

    /// `<id>:<sha256>:<scopes>[:<tenant>]`. Scope names contain `:` themselves, so the scopes
    /// field runs to the last `:` that is followed by something other than a scope name.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid_input(
                "api key",
                "expected <id>:<sha256>:<scope>[,<scope>...][:<tenant>], for example \
                 `ci:<64 hex digits>:jobs:read,jobs:write`",
            )
        };
        let (id, rest) = s.split_once(':').ok_or_else(bad)?;
        let (hash, rest) = rest.split_once(':').ok_or_else(bad)?;
        // Scopes are `word:word` or `admin`, separated by commas; a trailing `:tenant` is
        // whatever remains after the scope list parses.
        let (scopes, tenant) = match rest.rsplit_once(':') {
            Some((head, tail))
                if head.parse::<Scopes>().is_ok() && tail.parse::<Scopes>().is_err() =>
            {
                (head, Some(tail.to_owned()))
            }
            _ => (rest, None),
        };
        let scopes: Scopes = scopes.parse()?;
        ApiKeyEntry::new(id, hash, scopes, tenant)
    }
}

struct StoredKey {
    hash: [u8; 32],
    scopes: Scopes,
    tenant: Option<String>,
    revoked: bool,
}

/// The configured API keys, by id, as hashes only; verification in constant time.
///
/// Revocation takes effect at once ([`ApiKeyStore::revoke`]), and a revoked key is answered
/// exactly like an unknown one.
pub struct ApiKeyStore {
    keys: RwLock<HashMap<String, StoredKey>>,
}

impl ApiKeyStore {
    /// A store of these entries (each checked; duplicate ids are refused).
    pub fn new(entries: impl IntoIterator<Item = ApiKeyEntry>) -> Result<Self> {
        let mut keys = HashMap::new();
        for entry in entries {
            entry.validate()?;
            let hash = decode_hash(&entry.sha256_hex)
                .ok_or_else(|| Error::invalid_input("api key sha256", "must be 64 hex digits"))?;
            if keys.contains_key(&entry.id) {
                return Err(Error::invalid_input(
                    "api key id",
                    format!(
                        "key id {:?} is configured twice; ids must be unique",
                        entry.id
                    ),
                ));
            }
            keys.insert(
                entry.id,
                StoredKey {
                    hash,
                    scopes: entry.scopes,
                    tenant: entry.tenant,
                    revoked: entry.revoked,
                },
            );
        }
        Ok(Self {
            keys: RwLock::new(keys),
        })
    }

    /// A store from a JSON file holding an array of [`ApiKeyEntry`].
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Configuration,
                format!("cannot read the API keys file {}: {e}", path.display()),
            )
        })?;
        let entries: Vec<ApiKeyEntry> = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::Configuration,
                format!(
                    "the API keys file {} is not a JSON array of {{id, sha256, scopes, tenant?, \
                     revoked?}}: {e}",
                    path.display()
                ),
            )
        })?;
        Self::new(entries)
    }

    /// How many keys are configured (revoked ones included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.read().len()
    }

    /// Whether no key is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.read().is_empty()
    }

    /// Revoke key `id` now; `false` if there is no such key.
    pub fn revoke(&self, id: &str) -> bool {
        match self.keys.write().get_mut(id) {
            Some(key) => {
                key.revoked = true;
                true
            }
            None => false,
        }
    }

    /// The principal for a presented key, or [`AuthError::InvalidCredentials`] whatever was
    /// wrong (malformed, unknown id, wrong secret, revoked).
    ///
    /// The hash of the presented key is always computed and always compared in constant time
    /// (against a dummy when the id is unknown), so timing tells nothing about the secret.
    pub fn verify(&self, presented: &str) -> std::result::Result<Principal, AuthError> {
        let presented_hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let id = parse_id(presented);
        let keys = self.keys.read();
        let stored = id.and_then(|id| keys.get(id).map(|k| (id, k)));
        let dummy = [0u8; 32];
        let expected = stored.map_or(&dummy, |(_, k)| &k.hash);
        let equal: bool = presented_hash.ct_eq(expected).into();
        match stored {
            Some((id, key)) if equal && !key.revoked => {
                Ok(Principal::new(id, key.scopes, key.tenant.clone()))
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }
}

impl fmt::Debug for ApiKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyStore")
            .field("keys", &self.len())
            .finish()
    }
}

/// Whether `token` has the shape of a jobforge API key (as opposed to a JWT).
#[must_use]
pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

/// The id of a `jfk_<id>_<secret>` key, if it has that shape.
fn parse_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// `sha256(data)` in lowercase hex.
#[must_use]
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::security::Scope;

    fn store_with(key: &ApiKey, scopes: &str, tenant: Option<&str>) -> ApiKeyStore {
        let entry = ApiKeyEntry::new(
            key.id(),
            key.sha256_hex(),
            scopes.parse().unwrap_or_default(),
            tenant.map(str::to_owned),
        );
        assert!(entry.is_ok());
        let store = entry.and_then(|e| ApiKeyStore::new([e]));
        assert!(store.is_ok());
        store.unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate().unwrap_or_else(|_| unreachable!());
        let rest = key.key().strip_prefix("jfk_").unwrap_or_default();
        let (id, secret) = rest.split_once('_').unwrap_or_default();
        assert_eq!(id.len(), 16);
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key.sha256_hex(), sha256_hex(key.key().as_bytes()));
        assert!(!format!("{key:?}").contains(secret));
        let other = ApiKey::generate().unwrap_or_else(|_| unreachable!());
        assert_ne!(key.key(), other.key());
    }

    #[test]
    fn verify_accepts_the_key_and_nothing_else() {
        let key = ApiKey::generate().unwrap_or_else(|_| unreachable!());
        let store = store_with(&key, "jobs:read", Some("acme"));
        let principal = store.verify(key.key());
        assert_eq!(principal.as_ref().map(|p| p.id()), Ok(key.id()));
        assert_eq!(
            principal.as_ref().ok().and_then(|p| p.tenant()),
            Some("acme")
        );
        assert!(principal.is_ok_and(|p| p.require(Scope::JobsRead).is_ok()));

        let mut wrong = key.key().to_owned();
        let last = if wrong.ends_with('0') { '1' } else { '0' };
        wrong.pop();
        wrong.push(last);
        for bad in [
            wrong.as_str(),
            "",
            "jfk_",
            "jfk__",
            "not-a-key",
            &key.key()[..key.key().len() - 1],
        ] {
            assert_eq!(
                store.verify(bad),
                Err(AuthError::InvalidCredentials),
                "{bad}"
            );
        }
        let stranger = ApiKey::generate().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            store.verify(stranger.key()),
            Err(AuthError::InvalidCredentials)
        );
    }

    #[test]
    fn revoked_keys_are_refused() {
        let key = ApiKey::generate().unwrap_or_else(|_| unreachable!());
        let store = store_with(&key, "admin", None);
        assert!(store.verify(key.key()).is_ok());
        assert!(store.revoke(key.id()));
        assert!(!store.revoke("nope"));
        assert_eq!(store.verify(key.key()), Err(AuthError::InvalidCredentials));
    }

    #[test]
    fn entries_are_checked() {
        let hash = "a".repeat(64);
        let scopes = Scopes::from_iter([Scope::JobsRead]);
        assert!(ApiKeyEntry::new("ok-id", &hash, scopes, None).is_ok());
        assert!(ApiKeyEntry::new("", &hash, scopes, None).is_err());
        assert!(ApiKeyEntry::new("a_b", &hash, scopes, None).is_err());
        assert!(ApiKeyEntry::new("ok", "abc", scopes, None).is_err());
        assert!(ApiKeyEntry::new("ok", "g".repeat(64), scopes, None).is_err());
        assert!(ApiKeyEntry::new("ok", &hash, scopes, Some(String::new())).is_err());
        let twice = ApiKeyEntry::new("dup", &hash, scopes, None).unwrap_or_else(|_| unreachable!());
        let err = ApiKeyStore::new([twice.clone(), twice])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("twice")));
    }

    #[test]
    fn flag_form_parses() {
        let hash = "0f".repeat(32);
        let e: ApiKeyEntry = format!("bot:{hash}:jobs:read,memory:write")
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(e.tenant, None);
        assert!(e.scopes.contains(Scope::MemoryWrite));
        let e: ApiKeyEntry = format!("bot:{hash}:admin:acme")
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert!(e.scopes.contains(Scope::Admin));
        assert!(format!("bot:{hash}").parse::<ApiKeyEntry>().is_err());
        assert!(
            format!("bot:{hash}:jobs:bogus")
                .parse::<ApiKeyEntry>()
                .is_err()
        );
    }

    #[test]
    fn json_file_loads() {
        let dir = std::env::temp_dir().join(format!("jf-keys-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("keys.json");
        let hash = "ab".repeat(32);
        let json = format!(
            r#"[{{"id":"a","sha256":"{hash}","scopes":"jobs:read"}},{{"id":"b","sha256":"{hash}","scopes":["admin"],"tenant":"t","revoked":true}}]"#
        );
        assert!(std::fs::write(&path, json).is_ok());
        let store = ApiKeyStore::from_json_file(&path);
        assert_eq!(store.map(|s| s.len()).ok(), Some(2));
        assert!(std::fs::write(&path, "{").is_ok());
        let err = ApiKeyStore::from_json_file(&path)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("JSON array")));
        let missing = ApiKeyStore::from_json_file(&dir.join("missing.json")).err();
        assert!(missing.is_some_and(|e| e.to_string().contains("cannot read")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
