//! The materialised settings and the rules a change must obey (SPEC §1), with no I/O.
//!
//! A change is a set of keys to set (to JSON values) and keys to unset. The maintenance
//! mode is two of those keys, `maintenance_mode` and `maintenance_mode_message`, with one
//! invariant kept on every apply: the message exists only while the mode is on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sites::{check_record, is_reserved, token_sha256, Registry, SiteRecord};
use crate::log::Entry;

pub const MODE_KEY: &str = "maintenance_mode";
pub const MESSAGE_KEY: &str = "maintenance_mode_message";
/// SPEC §1: the banner message is at most 255 characters.
pub const MAX_MESSAGE_CHARS: usize = 255;
pub const MAX_KEY_LEN: usize = 128;
/// A single value's JSON text; settings are configuration, not data.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
/// A whole change's JSON text: it must fit in one log entry (`log::MAX_ENTRY_BYTES`) with
/// its author and framing.
pub const MAX_CHANGE_BYTES: usize = 48 * 1024;
pub const MAX_KEYS: usize = 1024;
pub const MAX_ACTOR_LEN: usize = 128;

/// The maintenance mode as the settings describe it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub enabled: bool,
    pub message: Option<String>,
    /// Author of the last entry that touched the mode.
    pub updated_by: Option<String>,
    /// Primary's clock at that entry, in ms since the Unix epoch.
    pub updated_at_ms: Option<i64>,
}

/// The settings key that holds a scheduled maintenance window (SPEC §6, see
/// `settings::schedule`); only the schedule calls write it.
pub const SCHEDULE_KEY: &str = "geo.maintenance.schedule";

/// One maintenance window, as the settings log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// When the primary turns maintenance mode on, ms since the Unix epoch.
    pub start_ms: i64,
    /// When it turns the mode off again; none: the admin does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    /// The banner message, shown before the window and during it.
    pub message: String,
    pub scheduled_by: String,
    /// The primary's clock when the window was scheduled.
    pub scheduled_at_ms: i64,
    /// When the primary turned the mode on for this window (later than `start_ms` when it
    /// was down at the start); none until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
}

impl Schedule {
    pub fn started(&self) -> bool {
        self.started_at_ms.is_some()
    }

    /// The checks that need no clock: every site runs them on every entry that sets the
    /// window, so a window a secondary applies is sound.
    pub fn check(&self) -> Result<(), String> {
        if self.start_ms <= 0 || self.start_ms > i64::MAX / 4 {
            return Err("the window's start is out of range".into());
        }
        if let Some(end) = self.end_ms {
            if end <= self.start_ms {
                return Err(format!(
                    "the window's end ({}) must be after its start ({})",
                    rfc3339(end),
                    rfc3339(self.start_ms)
                ));
            }
        }
        if self.message.trim().is_empty() {
            return Err("give the window a message: it is the banner users see".into());
        }
        validate_message(&self.message)?;
        validate_actor(&self.scheduled_by).map_err(|e| format!("scheduled_by: {e}"))
    }
}

/// Checks a value set under [`SCHEDULE_KEY`] (see [`Schedule::check`]).
pub fn check_value(value: &Value) -> Result<(), String> {
    let schedule: Schedule = serde_json::from_value(value.clone())
        .map_err(|e| format!("setting {SCHEDULE_KEY:?} is not a maintenance window: {e}"))?;
    schedule.check()
}

/// A time as RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// All settings after some prefix of the settings log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SettingsState {
    pub values: BTreeMap<String, Value>,
    pub maintenance: Maintenance,
    /// The maintenance window scheduled or in progress, read from [`SCHEDULE_KEY`] once per
    /// change, so the mode's readers (every gate check) do not parse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// One settings-log entry's payload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

impl Change {
    /// The change that turns the mode on (with an optional message) or off.
    pub fn maintenance(enabled: bool, message: Option<String>) -> Change {
        let mut change = Change::default();
        change.set.insert(MODE_KEY.into(), Value::Bool(enabled));
        match message {
            Some(m) if enabled => {
                change.set.insert(MESSAGE_KEY.into(), Value::String(m));
            }
            _ => change.unset.push(MESSAGE_KEY.into()),
        }
        change
    }

    pub(super) fn touches_mode(&self) -> bool {
        [MODE_KEY, MESSAGE_KEY]
            .iter()
            .any(|k| self.set.contains_key(*k) || self.unset.iter().any(|u| u == k))
    }
}

impl Change {
    /// Reads a settings-log entry's payload.
    pub fn decode(payload: &[u8]) -> Result<Change, String> {
        serde_json::from_slice(payload)
            .map_err(|e| format!("payload is not a settings change: {e}"))
    }

    /// The rules of SPEC §1 that hold whatever the settings are: key names, value and
    /// change sizes, the mode's and the message's types, the 255-character message. The
    /// primary checks them before appending and every secondary before applying.
    pub fn check(&self) -> Result<(), String> {
        let change = self;
        if change.set.is_empty() && change.unset.is_empty() {
            return Err("nothing to change: give at least one key to set or unset".into());
        }
        for key in change.set.keys().chain(&change.unset) {
            validate_key(key)?;
        }
        if let Some(key) = change.unset.iter().find(|k| change.set.contains_key(*k)) {
            return Err(format!("setting {key:?} is both set and unset"));
        }
        for (key, value) in &change.set {
            let len = value.to_string().len();
            if len > MAX_VALUE_BYTES {
                return Err(format!(
                    "setting {key:?} is {len} bytes of JSON; the limit is {MAX_VALUE_BYTES}"
                ));
            }
        }
        for (key, value) in change.set.iter().filter(|(k, _)| is_reserved(k)) {
            let record = check_record(key, value)?;
            validate_actor(&record.added_by)
                .map_err(|e| format!("setting {key:?}: added_by: {e}"))?;
        }
        if let Some(v) = change.set.get(SCHEDULE_KEY) {
            check_value(v)?;
        }
        for (key, value) in change.set.iter().filter(|(k, _)| super::is_site_sync(k)) {
            super::site_sync::check_site_sync(key, value)?;
        }
        if let Some(v) = change.set.get(MODE_KEY) {
            if !v.is_boolean() {
                return Err(format!("{MODE_KEY} must be true or false, not {v}"));
            }
        }
        if let Some(v) = change.set.get(MESSAGE_KEY) {
            let Some(message) = v.as_str() else {
                return Err(format!("{MESSAGE_KEY} must be a string, not {v}"));
            };
            validate_message(message)?;
        }
        let len = serde_json::to_vec(change).map_or(usize::MAX, |v| v.len());
        if len > MAX_CHANGE_BYTES {
            return Err(format!(
                "the change is {len} bytes of JSON; the limit is {MAX_CHANGE_BYTES}"
            ));
        }
        Ok(())
    }
}

impl SettingsState {
    /// Every registered site and its record, by site id.
    pub fn sites(&self) -> Vec<(String, SiteRecord)> {
        Registry(&self.values).sites()
    }

    /// Whether `site_id` is registered.
    pub fn is_site(&self, site_id: &str) -> bool {
        Registry(&self.values).is_site(site_id)
    }

    /// The site whose token hashes to `sha256` (lowercase hex).
    pub fn site_with_token_sha256(&self, sha256: &str) -> Option<String> {
        Registry(&self.values).site_with_token_sha256(sha256)
    }

    /// The site a presented token identifies.
    pub fn site_with_token(&self, token: &[u8]) -> Option<String> {
        self.site_with_token_sha256(&token_sha256(token))
    }

    /// Checks `change` against SPEC §1 and this state; nothing is applied.
    pub fn validate(&self, change: &Change) -> Result<(), String> {
        change.check()?;
        let mut after = self.clone();
        after.apply_change(change, "", 0);
        if change.set.contains_key(MESSAGE_KEY) && !after.maintenance.enabled {
            return Err(format!(
                "{MESSAGE_KEY} can only be set while maintenance mode is enabled"
            ));
        }
        let mut hashes: Vec<_> = after
            .sites()
            .into_iter()
            .map(|(_, r)| r.token_sha256)
            .collect();
        hashes.sort();
        if hashes.windows(2).any(|w| w[0] == w[1]) {
            return Err(
                "that token is already registered for another site: give each site its own token"
                    .into(),
            );
        }
        if after.values.len() > MAX_KEYS {
            return Err(format!("at most {MAX_KEYS} settings can be stored"));
        }
        Ok(())
    }

    /// Applies a settings-log entry (its payload is a JSON [`Change`]).
    pub fn apply_entry(&mut self, entry: &Entry) -> Result<(), String> {
        let change = Change::decode(&entry.payload)?;
        self.apply_change(&change, &entry.author, entry.timestamp_ms);
        Ok(())
    }

    fn apply_change(&mut self, change: &Change, author: &str, timestamp_ms: i64) {
        for key in &change.unset {
            self.values.remove(key);
        }
        for (key, value) in &change.set {
            self.values.insert(key.clone(), value.clone());
        }
        let enabled = self.values.get(MODE_KEY) == Some(&Value::Bool(true));
        if !enabled {
            // SPEC §1: the message is cleared when the mode is disabled.
            self.values.remove(MESSAGE_KEY);
        }
        let message = self
            .values
            .get(MESSAGE_KEY)
            .and_then(Value::as_str)
            .map(str::to_string);
        self.maintenance.enabled = enabled;
        self.maintenance.message = message;
        self.schedule = self
            .values
            .get(SCHEDULE_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        if change.touches_mode() {
            self.maintenance.updated_by = Some(author.to_string());
            self.maintenance.updated_at_ms = Some(timestamp_ms);
        }
    }
}

/// Keys are 1–128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("setting key must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "setting key is {} characters; the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "setting key {key:?} contains {c:?}; keys use letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// SPEC §1: at most 255 characters (characters, not bytes).
pub fn validate_message(message: &str) -> Result<(), String> {
    let n = message.chars().count();
    if n > MAX_MESSAGE_CHARS {
        return Err(format!(
            "maintenance mode message is {n} characters; the limit is {MAX_MESSAGE_CHARS}"
        ));
    }
    Ok(())
}

/// Who made a change: 1–128 printable characters.
pub fn validate_actor(actor: &str) -> Result<(), String> {
    if actor.is_empty() || actor.len() > MAX_ACTOR_LEN || actor.chars().any(char::is_control) {
        return Err(format!(
            "actor must be 1-{MAX_ACTOR_LEN} printable characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(state: &mut SettingsState, change: &Change, author: &str, ts: i64) {
        state.validate(change).unwrap();
        state.apply_change(change, author, ts);
    }

    #[test]
    fn enabling_records_message_author_and_time() {
        let mut s = SettingsState::default();
        apply(
            &mut s,
            &Change::maintenance(true, Some("upgrade".into())),
            "alice",
            7,
        );
        assert_eq!(
            s.maintenance,
            Maintenance {
                enabled: true,
                message: Some("upgrade".into()),
                updated_by: Some("alice".into()),
                updated_at_ms: Some(7),
            }
        );
    }

    #[test]
    fn disabling_clears_the_message_however_it_is_done() {
        let mut s = SettingsState::default();
        apply(&mut s, &Change::maintenance(true, Some("m".into())), "a", 1);
        apply(&mut s, &Change::maintenance(false, None), "b", 2);
        assert!(!s.maintenance.enabled);
        assert_eq!(s.maintenance.message, None);
        assert!(!s.values.contains_key(MESSAGE_KEY));

        apply(&mut s, &Change::maintenance(true, Some("m".into())), "a", 3);
        let mut off = Change::default();
        off.set.insert(MODE_KEY.into(), json!(false));
        apply(&mut s, &off, "c", 4);
        assert_eq!(s.maintenance.message, None);
        assert_eq!(s.maintenance.updated_by.as_deref(), Some("c"));
    }

    #[test]
    fn other_settings_do_not_touch_the_mode_record() {
        let mut s = SettingsState::default();
        apply(&mut s, &Change::maintenance(true, None), "a", 1);
        let mut c = Change::default();
        c.set.insert("signup_enabled".into(), json!(false));
        apply(&mut s, &c, "b", 2);
        assert_eq!(s.maintenance.updated_by.as_deref(), Some("a"));
        assert_eq!(s.values["signup_enabled"], json!(false));
    }

    #[test]
    fn a_message_of_255_characters_is_the_limit() {
        let s = SettingsState::default();
        let ok = "é".repeat(255);
        assert!(s.validate(&Change::maintenance(true, Some(ok))).is_ok());
        let err = s
            .validate(&Change::maintenance(true, Some("x".repeat(256))))
            .unwrap_err();
        assert_eq!(
            err,
            "maintenance mode message is 256 characters; the limit is 255"
        );
    }

    #[test]
    fn bad_changes_are_refused_with_reasons() {
        let s = SettingsState::default();
        let cases: Vec<(Change, &str)> = vec![
            (Change::default(), "nothing to change"),
            (
                Change {
                    set: [("".to_string(), json!(1))].into(),
                    unset: vec![],
                },
                "must not be empty",
            ),
            (
                Change {
                    set: [("a b".to_string(), json!(1))].into(),
                    unset: vec![],
                },
                "contains ' '",
            ),
            (
                Change {
                    set: [(MODE_KEY.to_string(), json!("yes"))].into(),
                    unset: vec![],
                },
                "must be true or false",
            ),
            (
                Change {
                    set: [(MESSAGE_KEY.to_string(), json!("hi"))].into(),
                    unset: vec![],
                },
                "only be set while maintenance mode is enabled",
            ),
            (
                Change {
                    set: [("k".to_string(), json!(1))].into(),
                    unset: vec!["k".into()],
                },
                "both set and unset",
            ),
        ];
        for (change, want) in cases {
            let err = s.validate(&change).unwrap_err();
            assert!(err.contains(want), "{change:?}: {err}");
        }
    }

    #[test]
    fn values_and_changes_are_bounded() {
        let s = SettingsState::default();
        let big = |n: usize| Change {
            set: [("k".to_string(), json!("v".repeat(n)))].into(),
            unset: vec![],
        };
        assert!(s.validate(&big(MAX_VALUE_BYTES - 2)).is_ok());
        let err = s.validate(&big(MAX_VALUE_BYTES)).unwrap_err();
        assert!(err.contains("the limit is 16384"), "{err}");
        let many = Change {
            set: (0..4)
                .map(|i| (format!("k{i}"), json!("v".repeat(MAX_VALUE_BYTES - 2))))
                .collect(),
            unset: vec![],
        };
        let err = s.validate(&many).unwrap_err();
        assert!(err.contains("the change is"), "{err}");
        let err = validate_key(&"k".repeat(MAX_KEY_LEN + 1)).unwrap_err();
        assert!(err.contains("the limit is 128"), "{err}");
    }

    #[test]
    fn an_entry_with_a_foreign_payload_is_refused() {
        let mut s = SettingsState::default();
        let e = Entry::new(
            &crate::log::GENESIS,
            1,
            1,
            0,
            "a".into(),
            b"{\"drop\":1}".to_vec(),
        );
        assert!(s.apply_entry(&e).is_err());
        assert_eq!(s, SettingsState::default());
    }
}
