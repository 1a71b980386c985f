//! Per-site replication settings the admin sets at the primary: which objects a secondary
//! replicates (selective sync: name prefixes and/or kinds, as GitLab Geo selects
//! namespaces and shards) and how fast it may move bytes (sync and re-verification
//! bandwidth). They live in the settings log under [`SITE_SYNC_PREFIX`], written only by
//! [`Settings::set_site_sync`], so they replicate to every site, are durable, and survive a
//! failover like the site registry beside them.
//!
//! A record is checked on every site for every entry (`Change::check`), so a secondary
//! never acts on a selection it could not have been given through the API. Pure apart from
//! the one writer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{validate_actor, Change, Settings, SettingsError, SettingsState};

/// Settings keys under this prefix are per-site replication settings.
pub const SITE_SYNC_PREFIX: &str = "geo.site_sync.";
/// Most name prefixes one selection holds.
pub const MAX_PREFIXES: usize = 64;
/// Longest name prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 200;
/// Most kinds one selection holds.
pub const MAX_KINDS: usize = 16;
/// Longest kind label (the rule object kinds follow).
pub const MAX_KIND_LEN: usize = 32;

/// What a selectively synced site replicates: objects whose name starts with one of
/// `prefixes` (any name when empty) and whose kind is one of `kinds` (any kind when empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

impl Selection {
    /// Whether the object `name` of `kind` is selected.
    pub fn selects(&self, name: &str, kind: &str) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str())))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
    }

    /// Checks shape, lengths and counts (see the module's constants).
    pub fn check(&self) -> Result<(), String> {
        if self.prefixes.is_empty() && self.kinds.is_empty() {
            return Err(
                "a selective sync names at least one prefix or kind (turn it off with --selective-sync-off)"
                    .into(),
            );
        }
        if self.prefixes.len() > MAX_PREFIXES {
            return Err(format!(
                "{} prefixes given; a selective sync holds at most {MAX_PREFIXES}",
                self.prefixes.len()
            ));
        }
        if self.kinds.len() > MAX_KINDS {
            return Err(format!(
                "{} kinds given; a selective sync holds at most {MAX_KINDS}",
                self.kinds.len()
            ));
        }
        for p in &self.prefixes {
            check_prefix(p)?;
        }
        for k in &self.kinds {
            check_kind(k)?;
        }
        for (what, list) in [("prefix", &self.prefixes), ("kind", &self.kinds)] {
            let dup = list
                .iter()
                .enumerate()
                .find(|(i, v)| list[..*i].contains(v));
            if let Some((_, dup)) = dup {
                return Err(format!("{what} {dup:?} is given twice"));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.prefixes.is_empty() {
            parts.push(format!("prefixes {}", self.prefixes.join(", ")));
        }
        if !self.kinds.is_empty() {
            parts.push(format!("kinds {}", self.kinds.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// A name prefix: 1–[`MAX_PREFIX_LEN`] bytes of a relative object name (no leading `/`,
/// no empty, `.` or `..` component, no control characters or backslash). It may end in
/// `/` (a folder) or not (`group-` selects `group-a/x` and `group-b/y`).
fn check_prefix(p: &str) -> Result<(), String> {
    let shown: String = p.chars().take(64).collect();
    if p.is_empty() || p.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "prefix {shown:?} must be 1 to {MAX_PREFIX_LEN} bytes"
        ));
    }
    if p.chars().any(|c| c.is_control() || c == '\\') {
        return Err(format!(
            "prefix {shown:?} holds a control character or a backslash"
        ));
    }
    if p.starts_with('/') {
        return Err(format!(
            "prefix {shown:?} is absolute: object names are relative (group-a/, not /group-a/)"
        ));
    }
    let parts: Vec<&str> = p.split('/').collect();
    // The last part is what follows the last `/`: empty for a folder prefix, or the start
    // of a name ("group-" selects every name that begins so).
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if (part.is_empty() && !last) || *part == ".." || (*part == "." && !last) {
            return Err(format!(
                "prefix {shown:?} has an empty, `.` or `..` component, which no object name has"
            ));
        }
    }
    Ok(())
}

/// A kind label, the rule object kinds follow: 1–[`MAX_KIND_LEN`] lowercase letters,
/// digits, `-` or `_` (`lfs`, `upload`, `repository`, …).
fn check_kind(k: &str) -> Result<(), String> {
    let ok = !k.is_empty()
        && k.len() <= MAX_KIND_LEN
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "kind {:?} is not a kind label: 1 to {MAX_KIND_LEN} lowercase letters, digits, `-` or `_` (e.g. lfs, upload)",
            k.chars().take(64).collect::<String>()
        ))
    }
}

/// A byte-rate limit as the settings log holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// No limit, whatever the site's own flag says.
    Unlimited,
    /// Bytes per second.
    BytesPerSecond(u64),
}

impl Limit {
    fn check(&self, what: &str) -> Result<(), String> {
        match self {
            Limit::BytesPerSecond(r)
                if !(crate::types::MIN_RATE..=crate::types::MAX_RATE).contains(r) =>
            {
                Err(format!(
                    "{what} of {r} bytes/s is out of range ({} to {})",
                    crate::types::format_rate(crate::types::MIN_RATE),
                    crate::types::format_rate(crate::types::MAX_RATE)
                ))
            }
            _ => Ok(()),
        }
    }

    /// The rate in bytes per second (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::BytesPerSecond(r) => Some(*r),
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Unlimited => f.write_str("unlimited"),
            Limit::BytesPerSecond(r) => f.write_str(&crate::types::format_rate(*r)),
        }
    }
}

/// One site's replication settings. A limit that is absent leaves the site's own
/// `--sync-bandwidth-limit` / `--verify-bandwidth-limit` in force; one that is present
/// overrides it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSync {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selective: Option<Selection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_bandwidth: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_bandwidth: Option<Limit>,
    pub updated_by: String,
    /// The primary's clock at the change, in ms since the Unix epoch.
    pub updated_at_ms: i64,
}

impl SiteSync {
    fn check(&self) -> Result<(), String> {
        if let Some(s) = &self.selective {
            s.check()?;
        }
        if let Some(l) = &self.sync_bandwidth {
            l.check("a sync bandwidth limit")?;
        }
        if let Some(l) = &self.verify_bandwidth {
            l.check("a verification bandwidth limit")?;
        }
        validate_actor(&self.updated_by).map_err(|e| format!("updated_by: {e}"))
    }

    fn is_empty(&self) -> bool {
        self.selective.is_none() && self.sync_bandwidth.is_none() && self.verify_bandwidth.is_none()
    }
}

/// A change of one site's replication settings: `None` leaves a field as it is,
/// `Some(None)` clears it (selective sync off; the site's own flag decides the limit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteSyncUpdate {
    pub selective: Option<Option<Selection>>,
    pub sync_bandwidth: Option<Option<Limit>>,
    pub verify_bandwidth: Option<Option<Limit>>,
}

impl SiteSyncUpdate {
    pub fn is_empty(&self) -> bool {
        self.selective.is_none() && self.sync_bandwidth.is_none() && self.verify_bandwidth.is_none()
    }
}

/// The settings key of `site_id`'s replication settings.
pub fn site_sync_key(site_id: &str) -> String {
    format!("{SITE_SYNC_PREFIX}{site_id}")
}

/// Whether `key` is reserved for per-site replication settings.
pub fn is_site_sync(key: &str) -> bool {
    key.starts_with(SITE_SYNC_PREFIX)
}

/// Checks a key under [`SITE_SYNC_PREFIX`] and its value (run on every settings entry).
pub fn check_site_sync(key: &str, value: &Value) -> Result<SiteSync, String> {
    let id = key.strip_prefix(SITE_SYNC_PREFIX).unwrap_or(key);
    crate::types::validate_site_id(id).map_err(|e| format!("setting {key:?}: {e}"))?;
    let record: SiteSync = serde_json::from_value(value.clone())
        .map_err(|e| format!("setting {key:?} is not a site's replication settings: {e}"))?;
    record
        .check()
        .map_err(|e| format!("setting {key:?}: {e}"))?;
    Ok(record)
}

impl SettingsState {
    /// `site_id`'s replication settings (`None`: it replicates everything, at the speed its
    /// own flags allow).
    pub fn site_sync(&self, site_id: &str) -> Option<SiteSync> {
        let v = self.values.get(&site_sync_key(site_id))?;
        serde_json::from_value(v.clone()).ok()
    }
}

impl Settings {
    /// Changes `site_id`'s replication settings at the primary, as one durable entry.
    /// `NOT_FOUND` for a site that is not registered; `INVALID_ARGUMENT` for an empty
    /// change or one that breaks the rules above. Returns the settings index and the
    /// record now in force (`None`: nothing is set for the site any more).
    pub async fn set_site_sync(
        &self,
        site_id: &str,
        update: SiteSyncUpdate,
        actor: &str,
    ) -> Result<(u64, Option<SiteSync>), SettingsError> {
        self.writable()?;
        crate::types::validate_site_id(site_id).map_err(SettingsError::Invalid)?;
        validate_actor(actor).map_err(SettingsError::Invalid)?;
        if update.is_empty() {
            return Err(SettingsError::Invalid(
                "nothing to change: give --selective-sync-prefix/--selective-sync-kind, --selective-sync-off, --sync-bandwidth-limit or --verify-bandwidth-limit".into(),
            ));
        }
        // Read, change and append under the write lock: two admins' changes to one site's
        // record do not lose one another.
        let serial = self.writing.lock().await;
        let view = self.log.view();
        if !view.is_site(site_id) {
            return Err(SettingsError::NotFound(format!(
                "site {site_id} is not registered (see geo-agent sites list)"
            )));
        }
        let old = view.site_sync(site_id);
        let mut record = old.clone().unwrap_or(SiteSync {
            selective: None,
            sync_bandwidth: None,
            verify_bandwidth: None,
            updated_by: String::new(),
            updated_at_ms: 0,
        });
        if let Some(s) = update.selective {
            record.selective = s;
        }
        if let Some(l) = update.sync_bandwidth {
            record.sync_bandwidth = l;
        }
        if let Some(l) = update.verify_bandwidth {
            record.verify_bandwidth = l;
        }
        record.updated_by = actor.to_string();
        record.updated_at_ms = crate::log::now_ms();
        let mut change = Change::default();
        let key = site_sync_key(site_id);
        let now = if record.is_empty() {
            if old.is_none() {
                // Nothing set and nothing to clear: no entry.
                return Ok((self.current().0, None));
            }
            change.unset.push(key);
            None
        } else {
            record.check().map_err(SettingsError::Invalid)?;
            let value = serde_json::to_value(&record)
                .map_err(|e| SettingsError::Invalid(format!("cannot encode the record: {e}")))?;
            change.set.insert(key, value);
            Some(record)
        };
        self.change_serialised(&serial, change, actor).await?;
        Ok((self.current().0, now))
    }

    /// This site's own replication settings, as applied here: a `watch` borrow.
    pub fn own_site_sync(&self) -> Option<SiteSync> {
        self.log.view().site_sync(self.site_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(prefixes: &[&str], kinds: &[&str]) -> Selection {
        Selection {
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_selection_selects_by_prefix_and_kind() {
        let s = sel(&["group-a/", "group-b/"], &[]);
        assert!(s.selects("group-a/x", "blob"));
        assert!(s.selects("group-b/y/z", "lfs"));
        assert!(!s.selects("group-c/x", "blob"));
        assert!(!s.selects("group-a", "blob"));
        let s = sel(&["group-a/"], &["lfs"]);
        assert!(s.selects("group-a/x", "lfs"));
        assert!(!s.selects("group-a/x", "blob"));
        assert!(!s.selects("group-b/x", "lfs"));
        let s = sel(&[], &["lfs", "upload"]);
        assert!(s.selects("anything", "upload") && !s.selects("anything", "blob"));
    }

    #[test]
    fn selections_are_checked() {
        assert!(sel(&["group-a/"], &[]).check().is_ok());
        assert!(sel(&["group-"], &["lfs"]).check().is_ok());
        for bad in [
            sel(&[], &[]),
            sel(&[""], &[]),
            sel(&["/abs/"], &[]),
            sel(&["a//b/"], &[]),
            sel(&["../x/"], &[]),
            sel(&["a/../"], &[]),
            sel(&["a/./b"], &[]),
            sel(&["a\0b"], &[]),
            sel(&["a\\b"], &[]),
            sel(&[&"x".repeat(MAX_PREFIX_LEN + 1)], &[]),
            sel(&["a/", "a/"], &[]),
            sel(&[], &["LFS"]),
            sel(&[], &["a b"]),
            sel(&[], &[&"k".repeat(MAX_KIND_LEN + 1)]),
            sel(&[], &["lfs", "lfs"]),
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_PREFIXES).map(|i| format!("p{i}/")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = sel(&refs, &[]).check().unwrap_err();
        assert!(err.contains("at most 64"), "{err}");
    }

    #[test]
    fn records_are_checked_on_every_entry() {
        let good = json!({"selective": {"prefixes": ["a/"]}, "sync_bandwidth": {"bytes_per_second": 1048576}, "updated_by": "admin", "updated_at_ms": 1});
        let r = check_site_sync("geo.site_sync.s1", &good).unwrap();
        assert_eq!(r.sync_bandwidth, Some(Limit::BytesPerSecond(1 << 20)));
        let unlimited =
            json!({"verify_bandwidth": "unlimited", "updated_by": "admin", "updated_at_ms": 1});
        assert_eq!(
            check_site_sync("geo.site_sync.s1", &unlimited)
                .unwrap()
                .verify_bandwidth,
            Some(Limit::Unlimited)
        );
        for (key, bad) in [
            ("geo.site_sync.", good.clone()),
            (
                "geo.site_sync.s1",
                json!({"selective": {"prefixes": ["/x"]}, "updated_by": "a", "updated_at_ms": 1}),
            ),
            (
                "geo.site_sync.s1",
                json!({"sync_bandwidth": {"bytes_per_second": 1}, "updated_by": "a", "updated_at_ms": 1}),
            ),
            (
                "geo.site_sync.s1",
                json!({"extra": 1, "updated_by": "a", "updated_at_ms": 1}),
            ),
            (
                "geo.site_sync.s1",
                json!({"updated_by": "", "updated_at_ms": 1}),
            ),
            ("geo.site_sync.s1", json!("x")),
        ] {
            assert!(check_site_sync(key, &bad).is_err(), "{key} {bad}");
        }
    }
}
