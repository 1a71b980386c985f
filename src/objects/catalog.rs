//! The event log's [`Machine`]: what the primary holds (the catalog) and what this site
//! holds (the registry), kept in the event log's state tree so that recording an event and
//! scheduling its sync are one transaction.
//!
//! Keys in the state tree, by first byte (names never contain NUL, so the prefixes cannot
//! collide with a name):
//! - `c<name>`: the object as the primary's event log describes it ([`ObjectMeta`]);
//! - `r<name>`: this site's copy ([`Row`]: sync and verification state);
//! - `q<name>`: present while the copy needs sync work, so workers scan only what is due.
//!
//! On the primary an event describes bytes it already committed, so the row says synced.
//! On a secondary it only records the event (cheap) and queues the name; sync workers move
//! the bytes. Both behaviours are fixed when the machine is built, so applying an entry
//! still depends on nothing but the state and the entry.

use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;

use super::name::{parse_kind, parse_sha256, ObjectName};
use crate::log::{Entry, Machine};

pub const CATALOG: u8 = b'c';
pub const REGISTRY: u8 = b'r';
pub const QUEUE: u8 = b'q';

/// The payload of an event-log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Event {
    /// An object was created or replaced.
    Put {
        name: String,
        kind: String,
        size: u64,
        /// 64 hex digits.
        sha256: String,
    },
    Delete {
        name: String,
    },
}

impl Event {
    pub fn name(&self) -> &str {
        match self {
            Event::Put { name, .. } | Event::Delete { name } => name,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // An enum of strings and integers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(raw: &[u8]) -> Result<Event, String> {
        serde_json::from_slice(raw).map_err(|e| format!("not an object event: {e}"))
    }

    /// The rules a push or a delete obeys on the primary, for an event however it arrives:
    /// a valid name, a kind label (already defaulted), a sha256 in lowercase hex.
    pub fn check(&self) -> Result<(), String> {
        ObjectName::parse(self.name())?;
        if let Event::Put { kind, sha256, .. } = self {
            if kind.is_empty() || parse_kind(kind)? != *kind {
                return Err(format!("kind {kind:?} is not a label"));
            }
            let raw = parse_sha256(sha256)?;
            if hex::encode(raw) != *sha256 {
                return Err("the sha256 must be lowercase hex".into());
            }
        }
        Ok(())
    }
}

/// One object version, as the primary's event log describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub name: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
    /// The index of the event that created this version.
    pub version: u64,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    Pending,
    Started,
    Synced,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    Pending,
    Succeeded,
    Failed,
}

/// The bytes this site holds for an object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Local {
    pub version: u64,
    pub sha256: String,
    pub size: u64,
}

/// This site's registry row for one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub sync: SyncState,
    pub retries: u32,
    pub next_retry_ms: i64,
    pub last_error: Option<String>,
    /// What is on disk here, if anything.
    pub local: Option<Local>,
    pub verification: Verification,
    pub verified_at_ms: Option<i64>,
    pub checksum_mismatch: bool,
    pub verification_failure: Option<String>,
}

impl Row {
    pub fn pending(local: Option<Local>) -> Row {
        Row {
            sync: SyncState::Pending,
            retries: 0,
            next_retry_ms: 0,
            last_error: None,
            local,
            verification: Verification::Pending,
            verified_at_ms: None,
            checksum_mismatch: false,
            verification_failure: None,
        }
    }

    /// A copy whose bytes were hashed as they were written (a push, or a checked fetch).
    pub fn synced(local: Local, verified_at_ms: i64) -> Row {
        Row {
            sync: SyncState::Synced,
            local: Some(local),
            verification: Verification::Succeeded,
            verified_at_ms: Some(verified_at_ms),
            ..Row::pending(None)
        }
    }
}

pub fn key(prefix: u8, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(prefix);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The name in a key made by [`key`].
pub fn key_name(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw.get(1..).unwrap_or_default())
        .map_err(|_| "a registry key is not UTF-8".to_string())
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(raw: &'a [u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(raw).map_err(|e| format!("{what} is unreadable: {e}"))
}

/// Applies events to the catalog and the registry (see the module doc).
pub struct EventsMachine {
    /// True on the primary: the bytes of every event are already here.
    pub authoritative: bool,
}

impl Machine for EventsMachine {
    type View = ();

    fn apply(&self, state: &TransactionalTree, entry: &Entry) -> Result<(), String> {
        let event = Event::decode(&entry.payload)?;
        let name = event.name().to_string();
        let row: Option<Row> = match state.get(key(REGISTRY, &name)).map_err(|e| e.to_string())? {
            None => None,
            Some(raw) => Some(decode(&raw, "a registry row")?),
        };
        let local = row.and_then(|r| r.local);
        let put = |k: Vec<u8>, v: Vec<u8>| state.insert(k, v).map(drop).map_err(|e| e.to_string());
        let del = |k: Vec<u8>| state.remove(k).map(drop).map_err(|e| e.to_string());
        match event {
            Event::Put {
                name,
                kind,
                size,
                sha256,
            } => {
                let meta = ObjectMeta {
                    name: name.clone(),
                    kind,
                    size,
                    sha256: sha256.clone(),
                    version: entry.index,
                    updated_at_ms: entry.timestamp_ms,
                    updated_by: entry.author.clone(),
                };
                put(key(CATALOG, &name), encode(&meta))?;
                if self.authoritative {
                    let here = Local {
                        version: entry.index,
                        sha256,
                        size,
                    };
                    put(
                        key(REGISTRY, &name),
                        encode(&Row::synced(here, entry.timestamp_ms)),
                    )?;
                    del(key(QUEUE, &name))?;
                } else {
                    put(key(REGISTRY, &name), encode(&Row::pending(local)))?;
                    put(key(QUEUE, &name), Vec::new())?;
                }
            }
            Event::Delete { name } => {
                del(key(CATALOG, &name))?;
                if self.authoritative || local.is_none() {
                    del(key(REGISTRY, &name))?;
                    del(key(QUEUE, &name))?;
                } else {
                    // The local copy stays until a worker has removed its file.
                    put(key(REGISTRY, &name), encode(&Row::pending(local)))?;
                    put(key(QUEUE, &name), Vec::new())?;
                }
            }
        }
        Ok(())
    }

    fn check(&self, entry: &Entry) -> Result<(), String> {
        Event::decode(&entry.payload)?.check()
    }

    fn view(&self, _state: &sled::Tree) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_documented_json() {
        let e = Event::Put {
            name: "a/b".into(),
            kind: "lfs".into(),
            size: 3,
            sha256: "00".repeat(32),
        };
        let raw = e.encode();
        assert!(std::str::from_utf8(&raw)
            .unwrap()
            .starts_with(r#"{"op":"put","name":"a/b""#));
        assert_eq!(Event::decode(&raw).unwrap(), e);
        let d = Event::Delete { name: "x".into() };
        assert_eq!(Event::decode(&d.encode()).unwrap(), d);
        assert!(Event::decode(b"{}").is_err());
    }

    #[test]
    fn events_obey_the_rules_of_a_push() {
        let put = |name: &str, kind: &str, sha: String| Event::Put {
            name: name.into(),
            kind: kind.into(),
            size: 1,
            sha256: sha,
        };
        assert!(put("a/b", "lfs", "ab".repeat(32)).check().is_ok());
        let cases = [
            (put("../x", "blob", "ab".repeat(32)), "`..`"),
            (
                put(&"n".repeat(5000), "blob", "ab".repeat(32)),
                "bytes long",
            ),
            (put("a", "", "ab".repeat(32)), "not a label"),
            (put("a", "K K", "ab".repeat(32)), "not a label"),
            (put("a", "blob", "zz".into()), "not a sha256"),
            (put("a", "blob", "AB".repeat(32)), "lowercase"),
            (
                Event::Delete {
                    name: "a\nb".into(),
                },
                "U+000A",
            ),
        ];
        for (event, why) in cases {
            let err = event.check().unwrap_err();
            assert!(err.contains(why), "{event:?}: {err}");
        }
    }
}
