//! The registry of sites: which token identifies which site. It lives in the settings log
//! under the reserved prefix [`SITES_PREFIX`], so it replicates to every site and survives
//! a failover. A record holds the sha256 of the site's token (never the token), who added
//! it and when. Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Settings keys under this prefix are the site registry; only the sites API writes them.
pub const SITES_PREFIX: &str = "geo.sites.";

/// One registered site, as the settings log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRecord {
    /// Lowercase hex sha256 of the site's token.
    pub token_sha256: String,
    pub added_by: String,
    /// The primary's clock when it was added, in ms since the Unix epoch.
    pub added_at_ms: i64,
}

/// The settings key of `site_id`'s record.
pub fn site_key(site_id: &str) -> String {
    format!("{SITES_PREFIX}{site_id}")
}

/// Whether `key` is reserved for the site registry.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(SITES_PREFIX)
}

/// The lowercase hex sha256 of a token's bytes: what the registry stores.
pub fn token_sha256(token: &[u8]) -> String {
    hex::encode(Sha256::digest(token))
}

/// Checks a reserved key and its value: a valid site id and a well-formed record (the
/// caller checks `added_by` as an actor). Every site runs it on every settings entry, so a
/// registry entry a secondary applies is sound.
pub fn check_record(key: &str, value: &Value) -> Result<SiteRecord, String> {
    let id = key.strip_prefix(SITES_PREFIX).unwrap_or(key);
    crate::types::validate_site_id(id).map_err(|e| format!("setting {key:?}: {e}"))?;
    let record: SiteRecord = serde_json::from_value(value.clone())
        .map_err(|e| format!("setting {key:?} is not a site record: {e}"))?;
    check_sha256(&record.token_sha256)?;
    Ok(record)
}

/// A token hash is 64 lowercase hex digits.
pub fn check_sha256(sha: &str) -> Result<(), String> {
    if sha.len() != 64 || !sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a token's sha256 is 64 lowercase hex digits".into());
    }
    Ok(())
}

/// The registry within the settings `values`.
pub struct Registry<'a>(pub &'a BTreeMap<String, Value>);

impl Registry<'_> {
    fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0
            .range(SITES_PREFIX.to_string()..)
            .take_while(|(k, _)| is_reserved(k))
            .map(|(k, v)| (&k[SITES_PREFIX.len()..], v))
    }

    /// Every registered site and its record, by site id.
    pub fn sites(&self) -> Vec<(String, SiteRecord)> {
        self.entries()
            .filter_map(|(id, v)| Some((id.to_string(), serde_json::from_value(v.clone()).ok()?)))
            .collect()
    }

    /// Whether `site_id` is registered.
    pub fn is_site(&self, site_id: &str) -> bool {
        self.0.contains_key(&site_key(site_id))
    }

    /// The site whose token hashes to `sha256` (lowercase hex), compared in constant time
    /// against every record.
    pub fn site_with_token_sha256(&self, sha256: &str) -> Option<String> {
        let mut found = None;
        for (id, value) in self.entries() {
            let stored = value
                .get("token_sha256")
                .and_then(Value::as_str)
                .unwrap_or("");
            if bool::from(stored.as_bytes().ct_eq(sha256.as_bytes())) && found.is_none() {
                found = Some(id.to_string());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(sites: &[(&str, &str)]) -> BTreeMap<String, Value> {
        let mut s = BTreeMap::new();
        for (id, token) in sites {
            s.insert(
                site_key(id),
                json!({"token_sha256": token_sha256(token.as_bytes()), "added_by": "a", "added_at_ms": 1}),
            );
        }
        s.insert("geo.sitesx".into(), json!(1));
        s.insert("zzz".into(), json!(1));
        s
    }

    #[test]
    fn a_token_names_its_site_and_nothing_else() {
        let values = state(&[
            ("s1", "token-one-0123456789"),
            ("s2", "token-two-0123456789"),
        ]);
        let s = Registry(&values);
        let site_with_token = |t: &[u8]| s.site_with_token_sha256(&token_sha256(t));
        assert_eq!(
            site_with_token(b"token-one-0123456789").as_deref(),
            Some("s1")
        );
        assert_eq!(
            site_with_token(b"token-two-0123456789").as_deref(),
            Some("s2")
        );
        assert_eq!(site_with_token(b"token-three-0123456789"), None);
        let ids: Vec<_> = s.sites().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["s1", "s2"]);
        assert!(s.is_site("s1") && !s.is_site("s3"));
    }

    #[test]
    fn records_are_checked() {
        let good = json!({"token_sha256": "a".repeat(64), "added_by": "admin", "added_at_ms": 5});
        assert!(check_record("geo.sites.s1", &good).is_ok());
        assert!(check_record("geo.sites.", &good).is_err());
        assert!(check_record(
            "geo.sites.s1",
            &json!({"token_sha256": "A".repeat(64), "added_by": "a", "added_at_ms": 5})
        )
        .is_err());
        assert!(check_record("geo.sites.s1", &json!({"token": "x"})).is_err());
        assert!(check_record("geo.sites.s1", &json!("x")).is_err());
    }
}
