//! The event log's [`Machine`]: what the primary holds (the catalog) and what this site
//! holds (the registry), kept in the event log's state tree so that recording an event and
//! scheduling its sync are one transaction.
//!
//! Per name it writes the catalog record, the registry row and the queue marker (the
//! keys and records are in `state.rs`), through the writers there that keep the registry's
//! counters in step in the same transaction.
//!
//! On the primary an event describes bytes it already committed, so the row says synced.
//! On a secondary it only records the event (cheap) and queues the name; sync workers move
//! the bytes. Both behaviours are fixed when the machine is built, so applying an entry
//! still depends on nothing but the state and the entry — and, on a selectively synced
//! secondary, the selection in force, which never changes while a batch is applied
//! (`selection.rs`): an object outside it gets its catalog record and no row.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::name::{parse_kind, parse_sha256, ObjectName};
use super::selection::{settle, SelectionCell};
use super::state::{
    decode, key, set_catalog, set_queued, set_row, Local, ObjectMeta, Row, TxResult, REGISTRY,
};
use crate::log::{Entry, Machine};

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

/// Applies events to the catalog and the registry (see the module doc).
pub struct EventsMachine {
    /// True on the primary: the bytes of every event are already here.
    pub authoritative: bool,
    /// What this site holds a copy of (a secondary with selective sync; see
    /// `selection.rs`): an unselected object gets a catalog record but no row.
    pub selection: Arc<SelectionCell>,
}

impl EventsMachine {
    /// Records `event` (see the module doc).
    fn record(&self, t: &TransactionalTree, entry: &Entry, event: Event) -> TxResult<()> {
        let row: Option<Row> = match t.get(key(REGISTRY, event.name()))? {
            None => None,
            Some(raw) => {
                Some(decode(&raw, "a registry row").map_err(ConflictableTransactionError::Abort)?)
            }
        };
        // The copy held now stays (its file too) until the new version is fetched; if it
        // was verified, it remains what a read may get while the primary is unreachable.
        let verified = row
            .as_ref()
            .and_then(|r| r.verified_local().map(|(_, at)| at));
        let local = row.and_then(|r| r.local);
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
                set_catalog(t, &name, Some(&meta))?;
                if self.authoritative {
                    let here = Local {
                        version: entry.index,
                        sha256,
                        size,
                    };
                    set_row(t, &name, Some(&Row::synced(here, entry.timestamp_ms)))?;
                    set_queued(t, &name, false)?;
                } else if self.selection.selects(&name, &meta.kind) {
                    let pending = Row {
                        local_verified_ms: verified.filter(|_| local.is_some()),
                        ..Row::pending(local)
                    };
                    set_row(t, &name, Some(&pending))?;
                    set_queued(t, &name, true)?;
                } else {
                    settle(t, &name, false)?;
                }
            }
            Event::Delete { name } => {
                set_catalog(t, &name, None)?;
                if self.authoritative || local.is_none() {
                    set_row(t, &name, None)?;
                    set_queued(t, &name, false)?;
                } else {
                    // The local copy stays until a worker has removed its file.
                    set_row(t, &name, Some(&Row::pending(local)))?;
                    set_queued(t, &name, true)?;
                }
            }
        }
        Ok(())
    }
}

impl Machine for EventsMachine {
    type View = ();

    fn apply(&self, state: &TransactionalTree, entry: &Entry) -> Result<(), String> {
        let event = Event::decode(&entry.payload)?;
        self.record(state, entry, event).map_err(|e| match e {
            ConflictableTransactionError::Abort(reason) => reason,
            other => other.to_string(),
        })
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
