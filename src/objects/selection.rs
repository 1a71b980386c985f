//! Selective sync on a secondary: which objects of the primary's catalog this site keeps
//! a copy of ([`Selection`], set per site at the primary and carried by the settings log).
//!
//! The catalog always holds every object (it is what the primary has); only selected
//! objects get a registry row, so the registry's counters — synced, pending, failed,
//! verified — count the selection and nothing else, with no scan. Three places keep that
//! true:
//! - the event log's machine ([`EventsMachine`](super::EventsMachine)) gives a row (and a
//!   sync) only to a selected object; an unselected one that still has a local copy is
//!   queued so a worker removes it;
//! - a change of selection ([`Objects::apply_selection`]) walks the catalog once:
//!   newly selected objects get a pending row (backfill), unselected rows are queued for
//!   removal; the selection it finished with is stored (`#selection`), so a restart walks
//!   again only if the selection changed while the site was down (or the walk was cut
//!   short);
//! - a sync worker re-checks the selection when it picks a name ([`Objects::start_sync`]),
//!   so a copy is never fetched or kept for a name that is no longer selected.
//!
//! A batch of events and a change of selection never interleave: applying a batch holds
//! the selection's read gate until the batch is applied, and a change takes it for
//! writing, so every batch is judged by one selection and the walk sees its result. On the
//! primary none of this applies: it holds every object.

use std::sync::{Arc, RwLock};

use sled::transaction::TransactionalTree;
use tracing::info;

use super::state::{
    decode, key, set_queued, set_row, ObjectMeta, Row, TxResult, CATALOG, REGISTRY,
};
use super::{ObjectError, Objects};
use crate::settings::Selection;
use crate::types::Role;

/// Where the selection this site last walked the catalog for is stored.
const APPLIED_KEY: &[u8] = b"#selection";
/// Names settled per transaction while walking the catalog.
const WALK_BATCH: usize = 512;

/// The selection in force, shared by the event log's machine and the sync workers.
#[derive(Debug, Default)]
pub struct SelectionCell {
    current: RwLock<Option<Arc<Selection>>>,
    /// Held for reading while a batch of events is applied, for writing while the
    /// selection changes.
    pub(super) gate: tokio::sync::RwLock<()>,
}

impl SelectionCell {
    pub fn new(selection: Option<Selection>) -> SelectionCell {
        SelectionCell {
            current: RwLock::new(selection.map(Arc::new)),
            gate: tokio::sync::RwLock::new(()),
        }
    }

    /// The selection in force (`None`: everything).
    pub fn get(&self) -> Option<Arc<Selection>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, selection: Option<Selection>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = selection.map(Arc::new);
    }

    /// Whether an object `name` of `kind` is to be held here.
    pub fn selects(&self, name: &str, kind: &str) -> bool {
        self.get().is_none_or(|s| s.selects(name, kind))
    }
}

/// What a walk of the catalog changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// Objects that became selected and are now queued to be fetched.
    pub backfilled: u64,
    /// Objects no longer selected whose row is gone or whose copy is queued for removal.
    pub unselected: u64,
}

/// Brings `name`'s row in step with `selected` (inside a transaction): a pending row
/// for a selected object without one, removal for an unselected one. Returns what it did.
pub(super) fn settle(t: &TransactionalTree, name: &str, selected: bool) -> TxResult<Walked> {
    let row: Option<Row> = match t.get(key(REGISTRY, name))? {
        None => None,
        Some(raw) => Some(
            decode(&raw, "a registry row")
                .map_err(sled::transaction::ConflictableTransactionError::Abort)?,
        ),
    };
    let mut done = Walked::default();
    match (selected, row) {
        (true, None) => {
            set_row(t, name, Some(&Row::pending(None)))?;
            set_queued(t, name, true)?;
            done.backfilled = 1;
        }
        (false, Some(row)) if row.local.is_some() => {
            // The worker removes the file first, then the row (`start_sync`).
            set_queued(t, name, true)?;
            done.unselected = 1;
        }
        (false, Some(_)) => {
            set_row(t, name, None)?;
            set_queued(t, name, false)?;
            done.unselected = 1;
        }
        _ => {}
    }
    Ok(done)
}

impl Objects {
    /// The selection in force here (`None`: this site replicates everything).
    pub fn selection(&self) -> Option<Arc<Selection>> {
        match self.settings.role() {
            Role::Primary => None,
            Role::Secondary => self.selection.get(),
        }
    }

    /// Whether this site holds (or is to hold) a copy of `name` of `kind`.
    pub fn selects(&self, name: &str, kind: &str) -> bool {
        self.settings.role() == Role::Primary || self.selection.selects(name, kind)
    }

    /// Puts `selection` in force (a secondary; a primary holds everything and ignores it)
    /// and, unless the catalog was already walked for exactly it, walks the catalog:
    /// newly selected objects are queued to be fetched, copies no longer selected to be
    /// removed. Returns what the walk changed (`None`: no walk was needed).
    pub async fn apply_selection(
        &self,
        selection: Option<Selection>,
    ) -> Result<Option<Walked>, ObjectError> {
        if self.settings.role() == Role::Primary {
            return Ok(None);
        }
        let wanted = serde_json::to_vec(&selection).unwrap_or_default();
        {
            let _gate = self.selection.gate.write().await;
            self.selection.set(selection.clone());
        }
        let state = self.log.state();
        let stored = state
            .get(APPLIED_KEY)
            .map_err(|e| ObjectError::Corrupt(e.to_string()))?;
        if stored.as_deref() == Some(&wanted[..]) {
            return Ok(None);
        }
        let rows_cover_catalog = || self.counts().is_ok_and(|c| c.selected() >= c.objects);
        if stored.is_none() && selection.is_none() && rows_cover_catalog() {
            // Never selective: every catalog record already has its row (a walk cut
            // short, or events applied under a selection, would have left some without).
            state
                .insert(APPLIED_KEY, wanted)
                .map_err(|e| ObjectError::Corrupt(e.to_string()))?;
            return Ok(None);
        }
        let mut walked = Walked::default();
        let mut after: Option<Vec<u8>> = None;
        loop {
            // A page of catalog names, then one transaction that settles them.
            let start = match &after {
                Some(k) => {
                    let mut k = k.clone();
                    k.push(0);
                    k
                }
                None => vec![CATALOG],
            };
            let mut page: Vec<(String, bool)> = Vec::with_capacity(WALK_BATCH);
            let mut last = None;
            for item in state.range(start..vec![CATALOG + 1]).take(WALK_BATCH) {
                let (k, v) = item.map_err(|e| ObjectError::Corrupt(e.to_string()))?;
                let meta: ObjectMeta =
                    decode(&v, "a catalog record").map_err(ObjectError::Corrupt)?;
                // Judged by the selection in force now: a newer change walks again.
                page.push((
                    meta.name.clone(),
                    self.selection.selects(&meta.name, &meta.kind),
                ));
                last = Some(k.to_vec());
            }
            let Some(last) = last else { break };
            after = Some(last);
            let done = state
                .transaction(|t| {
                    let mut done = Walked::default();
                    for (name, selected) in &page {
                        // Deleted since the page was read: the event settled it.
                        if t.get(key(CATALOG, name))?.is_none() {
                            continue;
                        }
                        let d = settle(t, name, *selected)?;
                        done.backfilled += d.backfilled;
                        done.unselected += d.unselected;
                    }
                    Ok(done)
                })
                .map_err(|e: sled::transaction::TransactionError<String>| {
                    ObjectError::Corrupt(e.to_string())
                })?;
            walked.backfilled += done.backfilled;
            walked.unselected += done.unselected;
            if page.len() < WALK_BATCH {
                break;
            }
        }
        // Only a selection still in force is recorded as walked for.
        let current =
            serde_json::to_vec(&self.selection.get().as_deref().cloned()).unwrap_or_default();
        if current == wanted {
            state
                .insert(APPLIED_KEY, wanted)
                .map_err(|e| ObjectError::Corrupt(e.to_string()))?;
        }
        if walked != Walked::default() {
            info!(
                backfilled = walked.backfilled,
                unselected = walked.unselected,
                selection = %selection.map_or("everything".to_string(), |s| s.to_string()),
                "applied a new selective sync"
            );
            self.requeued.notify_one();
        }
        Ok(Some(walked))
    }
}
