//! Settings and maintenance mode: the settings log, who may change it, and what it says now.
//!
//! On the primary, [`Settings`] validates a change (SPEC §1), appends it to the settings
//! log and answers once it is durable. On a secondary it refuses changes, naming the
//! primary, and applies what the follower streams in. Either way the current mode is a
//! [`ModeView`] read from a `watch` channel — no database read — because every gate check
//! and every `GetMode` asks for it.

pub mod schedule;
mod site_sync;
mod sites;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::TransactionalTree;
use tokio::sync::watch;
use tracing::warn;

use crate::log::{Entry, Hash, Log, LogError, Machine, Published};
use crate::store::{Store, StoreError};
use crate::types::{Classify, ErrorKind, Promotion, Role, UNPROVEN_EPOCHS};

pub use schedule::{Schedule, SCHEDULE_ACTOR, SCHEDULE_KEY};
pub use site_sync::{
    is_site_sync, site_sync_key, Limit, Selection, SiteSync, SiteSyncUpdate, SITE_SYNC_PREFIX,
};
pub use sites::{check_sha256, is_reserved, site_key, token_sha256, SiteRecord, SITES_PREFIX};
pub use state::{
    validate_actor, validate_key, validate_message, Change, Maintenance, SettingsState,
    MAX_MESSAGE_CHARS, MESSAGE_KEY, MODE_KEY,
};

/// The setting a promoted primary records itself under: `{"site_id": …, "epoch": …}`.
pub const PRIMARY_KEY: &str = "geo_primary";

/// Name of the settings log's sled trees.
pub const LOG_NAME: &str = "settings";
const STATE_KEY: &[u8] = b"state";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Invalid(String),
    #[error("site {site_id} is a secondary and does not accept settings changes; change them on the primary at {primary}")]
    NotPrimary { site_id: String, primary: String },
    /// A former primary, read-only until repointed.
    #[error("{0}")]
    Fenced(String),
    /// A site registration that clashes with another (its id or its token).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Superseded(#[from] Superseded),
    #[error(transparent)]
    Unproven(#[from] Unproven),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Another site has seen a higher epoch than this one: this site is not the current primary.
/// Whoever meets that (a stream, a report, a forwarded write) refuses with this one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("site {site_id} is at epoch {epoch}, but {caller} has seen epoch {seen}: this site is not the current primary")]
pub struct Superseded {
    pub site_id: String,
    pub epoch: u64,
    /// Who has seen the higher epoch ("the caller" when it is not known).
    pub caller: String,
    pub seen: u64,
}

/// Another site claimed an epoch higher than this site's without an admin's proof of it:
/// the claim is refused and nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("epoch {epoch} is not proven by an admin's promotion ({reason}); the claim of {from} is refused and not stored")]
pub struct Unproven {
    pub epoch: u64,
    /// Who made the claim.
    pub from: String,
    pub reason: String,
}

/// Checks that an admin signed a promotion proof (the admins' public key, in production:
/// `failover::promotion::PublicKey`).
pub trait ProofCheck: Send + Sync {
    fn check(&self, proof: &Promotion) -> Result<(), String>;
}

impl Classify for SettingsError {
    fn kind(&self) -> ErrorKind {
        match self {
            SettingsError::Invalid(_) => ErrorKind::Invalid,
            SettingsError::Conflict(_) => ErrorKind::Conflict,
            SettingsError::NotFound(_) => ErrorKind::NotFound,
            SettingsError::NotPrimary { .. } => ErrorKind::NotPrimary,
            SettingsError::Fenced(_) => ErrorKind::Fenced,
            SettingsError::Superseded(_) | SettingsError::Unproven(_) => ErrorKind::Refused,
            SettingsError::Log(e) => e.kind(),
            SettingsError::Store(e) => e.kind(),
        }
    }

    fn primary(&self) -> Option<&str> {
        match self {
            SettingsError::NotPrimary { primary, .. } => Some(primary),
            _ => None,
        }
    }
}

/// The settings log's [`Machine`]: the state is one JSON document of [`SettingsState`].
pub struct SettingsMachine;

impl Machine for SettingsMachine {
    type View = SettingsState;

    fn apply(&self, state: &TransactionalTree, entry: &Entry) -> Result<(), String> {
        let mut current = match state.get(STATE_KEY).map_err(|e| e.to_string())? {
            None => SettingsState::default(),
            Some(raw) => decode_state(&raw)?,
        };
        current.apply_entry(entry)?;
        let raw = serde_json::to_vec(&current).map_err(|e| e.to_string())?;
        state.insert(STATE_KEY, raw).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn check(&self, entry: &Entry) -> Result<(), String> {
        Change::decode(&entry.payload)?.check()
    }

    fn view(&self, state: &sled::Tree) -> Result<SettingsState, String> {
        match state.get(STATE_KEY).map_err(|e| e.to_string())? {
            None => Ok(SettingsState::default()),
            Some(raw) => decode_state(&raw),
        }
    }
}

fn decode_state(raw: &[u8]) -> Result<SettingsState, String> {
    serde_json::from_slice(raw).map_err(|e| format!("settings state is unreadable: {e}"))
}

/// The mode as a client sees it: the maintenance settings plus where this site stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeView {
    pub maintenance: Maintenance,
    pub settings_index: u64,
    pub settings_hash: Hash,
    pub epoch: u64,
    pub site_id: Arc<str>,
    pub role: Role,
    /// Why this site is read-only, when it is a former primary.
    pub fenced: Option<String>,
    /// The maintenance window scheduled or in progress (SPEC §6).
    pub scheduled: Option<Schedule>,
}

/// The settings subsystem of one site.
pub struct Settings {
    log: Arc<Log<SettingsMachine>>,
    store: Store,
    site_id: Arc<str>,
    role: Role,
    /// Where the primary is, for a secondary's refusals.
    primary: Option<String>,
    /// Highest epoch seen, cached from the store (it is read on every `GetMode`).
    epoch: AtomicU64,
    /// The epoch this site leads at (a primary); a higher epoch seen fences it.
    primary_epoch: u64,
    /// Why this site is read-only (demoted or fenced), from its placement.
    fenced: Option<String>,
    /// The admin's proof of the highest epoch seen, once this site holds one.
    proof: Mutex<Option<Promotion>>,
    /// Checks proofs; without one, no epoch above [`UNPROVEN_EPOCHS`] is ever taken from
    /// another site.
    checker: Option<Arc<dyn ProofCheck>>,
    /// Held from reading the state to appending the entry decided from it, by every writer
    /// at the primary: a scheduled step, a cancel and an admin's change of the mode cannot
    /// interleave, so none acts on a state another has just changed.
    writing: tokio::sync::Mutex<()>,
}

impl Settings {
    /// Stops the settings log taking entries and lets go of its files (the site stops).
    pub async fn close(&self) {
        self.log.close().await;
    }

    /// Opens the settings log. A primary that has never had an epoch takes epoch 1, and
    /// from then on leads at the epoch it first led at (or was promoted to).
    pub async fn open(
        store: Store,
        site_id: &str,
        role: Role,
        primary: Option<String>,
        fenced: Option<String>,
    ) -> Result<Settings, SettingsError> {
        let log = Log::open(&store, LOG_NAME, SettingsMachine).await?;
        let mut epoch = store.highest_epoch()?.max(log.head().epoch);
        if role == Role::Primary && epoch == 0 {
            epoch = store.raise_epoch(1).await?;
        }
        let proof = Mutex::new(store.proof()?);
        let primary_epoch = match (role, store.primary_epoch()?) {
            (_, Some(e)) => e,
            (Role::Primary, None) => {
                store.set_primary_epoch(epoch).await?;
                epoch
            }
            (Role::Secondary, None) => 0,
        };
        Ok(Settings {
            log: Arc::new(log),
            store,
            site_id: Arc::from(site_id),
            role,
            primary,
            epoch: AtomicU64::new(epoch),
            primary_epoch,
            fenced,
            proof,
            checker: None,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Checks promotion proofs with `checker` (the admins' public key).
    pub fn verifying(mut self, checker: Arc<dyn ProofCheck>) -> Settings {
        self.checker = Some(checker);
        self
    }

    /// The admin's proof of the highest epoch this site has seen, which it presents to
    /// other sites (none while that epoch needs none).
    pub fn proof(&self) -> Option<Promotion> {
        self.proof.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an admin signed `proof` (not whether it names what the caller wants).
    pub fn check_proof(&self, proof: &Promotion) -> Result<(), String> {
        match &self.checker {
            Some(c) => c.check(proof),
            None => Err("this site has no promotion public key to check proofs with".into()),
        }
    }

    /// The epoch this site leads at (0 if it never was a primary).
    pub fn primary_epoch(&self) -> u64 {
        self.primary_epoch
    }

    /// Why this site must not take writes although it may think itself primary: it was
    /// demoted, or it has seen a higher epoch than the one it leads at.
    pub fn fenced(&self) -> Option<String> {
        if let Some(reason) = &self.fenced {
            return Some(reason.clone());
        }
        let seen = self.epoch();
        (self.role == Role::Primary && seen > self.primary_epoch).then(|| {
            // The proof of the highest epoch names the site an admin promoted to it.
            let by = self
                .proof()
                .filter(|p| p.epoch == seen)
                .map(|p| format!("; {} is the primary at epoch {seen}", p.site_id))
                .unwrap_or_default();
            format!(
                "site {} was the primary at epoch {}, but epoch {seen} exists{by}: it is fenced and refuses writes; repoint it at the current primary",
                self.site_id, self.primary_epoch
            )
        })
    }

    pub fn log(&self) -> &Arc<Log<SettingsMachine>> {
        &self.log
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn site_id(&self) -> &str {
        &self.site_id
    }

    pub fn primary(&self) -> Option<&str> {
        self.primary.as_deref()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The current settings (values and mode).
    pub fn current(&self) -> (u64, Arc<SettingsState>) {
        let p = self.log.published();
        (p.head.index, p.view)
    }

    /// The current mode: a `watch` borrow, no database read.
    pub fn mode(&self) -> ModeView {
        self.mode_of(&self.log.published())
    }

    fn mode_of(&self, p: &Published<SettingsState>) -> ModeView {
        ModeView {
            maintenance: p.view.maintenance.clone(),
            settings_index: p.head.index,
            settings_hash: p.head.hash,
            epoch: self.epoch(),
            site_id: Arc::clone(&self.site_id),
            role: self.role,
            fenced: self.fenced(),
            scheduled: p.view.schedule.clone(),
        }
    }

    /// Turns maintenance mode on (optionally with a message) or off (clearing the message).
    pub async fn set_maintenance(
        &self,
        enabled: bool,
        message: Option<String>,
        actor: &str,
    ) -> Result<ModeView, SettingsError> {
        let message = message.filter(|m| !m.is_empty());
        if !enabled && message.is_some() {
            return Err(SettingsError::Invalid(
                "a message can only be given when enabling maintenance mode".into(),
            ));
        }
        if let Some(m) = &message {
            validate_message(m).map_err(SettingsError::Invalid)?;
        }
        self.change(Change::maintenance(enabled, message), actor)
            .await?;
        Ok(self.mode())
    }

    /// Records in the settings log that this site became the primary at its epoch (after a
    /// promotion), so every site that follows it sees where the new history begins.
    pub async fn record_promotion(&self, actor: &str) -> Result<(), SettingsError> {
        let mut change = Change {
            set: BTreeMap::new(),
            unset: Vec::new(),
        };
        let mut value = serde_json::json!({"site_id": &*self.site_id, "epoch": self.primary_epoch});
        if let Some(proof) = self.store.lead_proof()? {
            value["proof"] = serde_json::to_value(&proof)
                .map_err(|e| SettingsError::Invalid(format!("cannot encode the proof: {e}")))?;
        }
        change.set.insert(PRIMARY_KEY.to_string(), value);
        self.change(change, actor).await.map(drop)
    }

    /// Sets keys to JSON values (given as JSON text) and unsets keys, as one entry.
    pub async fn update(
        &self,
        set: BTreeMap<String, String>,
        unset: Vec<String>,
        actor: &str,
    ) -> Result<(u64, Arc<SettingsState>), SettingsError> {
        if set.contains_key(SCHEDULE_KEY) || unset.iter().any(|k| k == SCHEDULE_KEY) {
            return Err(SettingsError::Invalid(format!(
                "setting {SCHEDULE_KEY:?} holds the maintenance window: use `geo-agent maintenance schedule` (AdminService.ScheduleMaintenance, CancelMaintenanceSchedule)"
            )));
        }
        if let Some(key) = set.keys().chain(&unset).find(|k| is_site_sync(k)) {
            return Err(SettingsError::Invalid(format!(
                "setting {key:?} is under {SITE_SYNC_PREFIX:?}, which holds per-site replication settings: use `geo-agent sites set` (AdminService.SetSiteSync)"
            )));
        }
        if let Some(key) = set.keys().chain(&unset).find(|k| is_reserved(k)) {
            return Err(SettingsError::Invalid(format!(
                "setting {key:?} is under {SITES_PREFIX:?}, which holds the site registry: use `geo-agent sites add|remove` (AdminService.AddSite, RemoveSite)"
            )));
        }
        let mut change = Change {
            set: BTreeMap::new(),
            unset,
        };
        for (key, text) in set {
            validate_key(&key).map_err(SettingsError::Invalid)?;
            let value = serde_json::from_str(&text).map_err(|e| {
                SettingsError::Invalid(format!("the value of {key:?} is not valid JSON: {e}"))
            })?;
            change.set.insert(key, value);
        }
        self.change(change, actor).await?;
        Ok(self.current())
    }

    /// Registers `site_id` with the sha256 (lowercase hex) of its token. Registering a site
    /// again with the same token changes nothing; another token for a registered site, or a
    /// token another site has, is a conflict. Returns the record and whether it is new.
    pub async fn add_site(
        &self,
        site_id: &str,
        token_sha256: &str,
        actor: &str,
    ) -> Result<(SiteRecord, bool), SettingsError> {
        self.writable()?;
        crate::types::validate_site_id(site_id).map_err(SettingsError::Invalid)?;
        check_sha256(token_sha256).map_err(SettingsError::Invalid)?;
        let view = self.log.view();
        if let Some((_, record)) = view.sites().into_iter().find(|(id, _)| id == site_id) {
            if record.token_sha256 == token_sha256 {
                return Ok((record, false));
            }
            return Err(SettingsError::Conflict(format!(
                "site {site_id} is already registered with another token; remove it first (geo-agent sites remove {site_id})"
            )));
        }
        if let Some(other) = view.site_with_token_sha256(token_sha256) {
            return Err(SettingsError::Conflict(format!(
                "that token is already registered for site {other}: give each site its own token"
            )));
        }
        validate_actor(actor).map_err(SettingsError::Invalid)?;
        let record = SiteRecord {
            token_sha256: token_sha256.to_string(),
            added_by: actor.to_string(),
            added_at_ms: crate::log::now_ms(),
        };
        let value = serde_json::to_value(&record)
            .map_err(|e| SettingsError::Invalid(format!("cannot encode the record: {e}")))?;
        let mut change = Change::default();
        change.set.insert(site_key(site_id), value);
        self.change(change, actor).await?;
        Ok((record, true))
    }

    /// Removes `site_id` from the registry: its token is refused from then on.
    pub async fn remove_site(&self, site_id: &str, actor: &str) -> Result<(), SettingsError> {
        self.writable()?;
        crate::types::validate_site_id(site_id).map_err(SettingsError::Invalid)?;
        if !self.log.view().is_site(site_id) {
            return Err(SettingsError::NotFound(format!(
                "site {site_id} is not registered (see geo-agent sites list)"
            )));
        }
        let mut change = Change::default();
        change.unset.push(site_key(site_id));
        if self.log.view().site_sync(site_id).is_some() {
            change.unset.push(site_sync_key(site_id));
        }
        self.change(change, actor).await.map(drop)
    }

    /// Every registered site, by id.
    pub fn sites(&self) -> Vec<(String, SiteRecord)> {
        self.log.view().sites()
    }

    /// The registered site a presented token identifies: a `watch` borrow, no I/O.
    pub fn site_with_token(&self, token: &[u8]) -> Option<String> {
        self.log.view().site_with_token(token)
    }

    /// Whether `site_id` is registered now.
    pub fn is_site(&self, site_id: &str) -> bool {
        self.log.view().is_site(site_id)
    }

    /// Refuses a change at a fenced site or a secondary (naming the primary).
    fn writable(&self) -> Result<(), SettingsError> {
        if let Some(reason) = self.fenced() {
            return Err(SettingsError::Fenced(reason));
        }
        if self.role != Role::Primary {
            return Err(SettingsError::NotPrimary {
                site_id: self.site_id.to_string(),
                primary: self
                    .primary
                    .clone()
                    .unwrap_or_else(|| "(unknown)".to_string()),
            });
        }
        Ok(())
    }

    async fn change(&self, change: Change, actor: &str) -> Result<Entry, SettingsError> {
        let serial = self.writing.lock().await;
        self.change_serialised(&serial, change, actor).await
    }

    /// [`Settings::change`] for a caller that holds the write lock, having decided `change`
    /// from the state it read under it.
    async fn change_serialised(
        &self,
        _serial: &tokio::sync::MutexGuard<'_, ()>,
        mut change: Change,
        actor: &str,
    ) -> Result<Entry, SettingsError> {
        self.writable()?;
        // An admin who changes the mode during a started window ends the window with it:
        // the schedule never fights the admin (see `schedule`).
        if actor != SCHEDULE_ACTOR
            && change.touches_mode()
            && self.maintenance_schedule().is_some_and(|w| w.started())
        {
            change.unset.push(SCHEDULE_KEY.into());
        }
        validate_actor(actor).map_err(SettingsError::Invalid)?;
        self.log
            .view()
            .validate(&change)
            .map_err(SettingsError::Invalid)?;
        let payload = serde_json::to_vec(&change)
            .map_err(|e| SettingsError::Invalid(format!("cannot encode the change: {e}")))?;
        Ok(self.log.append(self.epoch(), actor, payload).await?)
    }

    /// Applies entries streamed from the primary (secondary), refusing an epoch lower than
    /// the highest this site has seen, or higher than any it holds proof of.
    pub async fn apply_replicated(&self, entries: Vec<Entry>) -> Result<usize, SettingsError> {
        self.refuse_stale(LOG_NAME, &entries)?;
        self.refuse_unproven(LOG_NAME, &entries)?;
        let applied = self.log.apply_batch(entries).await;
        // Entries before a refused one were applied: their epoch counts either way.
        self.observe_epoch(self.log.head().epoch, None, "the primary")
            .await?;
        Ok(applied?)
    }

    /// Refuses entries of `log` whose epoch is lower than the highest this site has seen.
    pub fn refuse_stale(&self, log: &str, entries: &[Entry]) -> Result<(), LogError> {
        let seen = self.epoch();
        match entries.iter().find(|e| e.epoch < seen) {
            None => Ok(()),
            Some(e) => Err(LogError::StaleEpoch {
                log: log.into(),
                index: e.index,
                epoch: e.epoch,
                current: seen,
            }),
        }
    }

    /// Refuses entries of `log` written at an epoch above the highest this site has seen
    /// (and proven): the primary's heartbeat, which comes first on every stream, carries
    /// the proof of its epoch.
    pub fn refuse_unproven(&self, log: &str, entries: &[Entry]) -> Result<(), Unproven> {
        let seen = self.epoch().max(UNPROVEN_EPOCHS);
        match entries.iter().find(|e| e.epoch > seen) {
            None => Ok(()),
            Some(e) => {
                let reason = format!(
                    "{log} log entry {} was written at it before any proof of it arrived",
                    e.index
                );
                warn!(epoch = e.epoch, %reason, "refused entries at an unproven epoch");
                Err(Unproven {
                    epoch: e.epoch,
                    from: "the primary".into(),
                    reason,
                })
            }
        }
    }

    /// Records that `epoch` exists (durably, before anything relies on it), on the word of
    /// `from`. An epoch above [`UNPROVEN_EPOCHS`] and above the highest seen is taken only
    /// with an admin's proof of it or of a higher one; without, nothing is stored.
    pub async fn observe_epoch(
        &self,
        epoch: u64,
        proof: Option<&Promotion>,
        from: &str,
    ) -> Result<(), SettingsError> {
        if epoch <= self.epoch() {
            return Ok(());
        }
        let raised = if epoch <= UNPROVEN_EPOCHS {
            self.store.raise_epoch(epoch).await?
        } else {
            let proof = self.proven(epoch, proof, from)?;
            let raised = self.store.raise_epoch_proven(epoch, proof).await?;
            let mut kept = self.proof.lock().unwrap_or_else(|e| e.into_inner());
            if kept.as_ref().is_none_or(|k| k.epoch < proof.epoch) {
                *kept = Some(proof.clone());
            }
            raised
        };
        self.epoch.fetch_max(raised, Ordering::AcqRel);
        Ok(())
    }

    /// `proof` if it is an admin's and covers `epoch`; else the refusal, logged.
    fn proven<'p>(
        &self,
        epoch: u64,
        proof: Option<&'p Promotion>,
        from: &str,
    ) -> Result<&'p Promotion, Unproven> {
        let reason = match proof {
            None => "no proof was given".to_string(),
            Some(p) if p.epoch < epoch => {
                format!("the proof given is for epoch {}, a lower one", p.epoch)
            }
            Some(p) => match self.check_proof(p) {
                Ok(()) => return Ok(p),
                Err(e) => e,
            },
        };
        warn!(epoch, from, %reason, "refused an epoch no admin's promotion proves");
        Err(Unproven {
            epoch,
            from: from.to_string(),
            reason,
        })
    }

    /// Whether this site may serve other sites as a primary would (log streams, object
    /// fetches, read-through): not once it is fenced. The refusal says at which epoch and by
    /// whom, as the fence recorded it.
    pub fn serving_as_primary(&self) -> Result<(), SettingsError> {
        match self.fenced() {
            None => Ok(()),
            Some(reason) => Err(SettingsError::Fenced(format!(
                "{reason}; it serves no log and no object to other sites: repoint them at the current primary"
            ))),
        }
    }

    /// Refuses a caller that has seen a higher epoch than this site, after learning that
    /// epoch (durably; a primary that learns it is fenced from then on) — which it does
    /// only with an admin's proof: an unproven higher claim is refused as such.
    pub async fn refuse_superseded(
        &self,
        caller: &str,
        seen: u64,
        proof: Option<&Promotion>,
    ) -> Result<(), SettingsError> {
        let epoch = self.epoch();
        if seen <= epoch {
            return Ok(());
        }
        self.observe_epoch(seen, proof, caller).await?;
        Err(self.superseded(epoch, caller, seen).into())
    }

    /// The refusal of a caller at `seen` by this site at `epoch`.
    pub fn superseded(&self, epoch: u64, caller: &str, seen: u64) -> Superseded {
        Superseded {
            site_id: self.site_id.to_string(),
            epoch,
            caller: caller.to_string(),
            seen,
        }
    }

    /// Every change of the mode from now on, the current mode first.
    pub fn watch_mode(self: &Arc<Self>) -> ModeWatch {
        let rx = self.log.subscribe();
        let p = rx.borrow().clone();
        let mut queue = VecDeque::new();
        queue.push_back(self.mode_of(&p));
        ModeWatch {
            settings: Arc::clone(self),
            rx,
            state: (*p.view).clone(),
            index: p.head.index,
            queue,
        }
    }
}

impl crate::log::Replica for Settings {
    fn log_name(&self) -> &str {
        LOG_NAME
    }

    fn head(&self) -> crate::log::Head {
        self.log.head()
    }

    fn epoch(&self) -> u64 {
        Settings::epoch(self)
    }

    fn proof(&self) -> Option<Promotion> {
        Settings::proof(self)
    }

    async fn observe_epoch(
        &self,
        epoch: u64,
        proof: Option<Promotion>,
    ) -> Result<(), crate::log::ReplicaError> {
        Settings::observe_epoch(self, epoch, proof.as_ref(), "the primary")
            .await
            .map_err(replica_error)
    }

    async fn apply(&self, entries: Vec<Entry>) -> Result<(), crate::log::ReplicaError> {
        use crate::log::ReplicaError;
        match self.apply_replicated(entries).await {
            Ok(_) => Ok(()),
            Err(SettingsError::Log(e)) if e.is_local_failure() => Err(ReplicaError::storage(e)),
            Err(SettingsError::Log(e)) => Err(ReplicaError::Refused(e)),
            Err(e) => Err(replica_error(e)),
        }
    }
}

/// How a follower hears a settings error: an unproven epoch is a fact about the stream
/// (try again later), anything else means this site cannot go on.
pub fn replica_error(e: SettingsError) -> crate::log::ReplicaError {
    match e {
        SettingsError::Unproven(e) => crate::log::ReplicaError::Unproven(e.to_string()),
        e => crate::log::ReplicaError::storage(e),
    }
}

/// A subscription to mode changes. Changes that land faster than the subscriber reads are
/// replayed from the log, so every change is seen, in order, even though the `watch`
/// channel underneath keeps only the latest value.
pub struct ModeWatch {
    settings: Arc<Settings>,
    rx: watch::Receiver<Published<SettingsState>>,
    /// The settings after `index`, as this subscriber has replayed them.
    state: SettingsState,
    index: u64,
    queue: VecDeque<ModeView>,
}

/// Entries replayed per read while catching up.
const REPLAY_BATCH: usize = 256;

impl ModeWatch {
    /// The next mode change; `None` once the site shuts down. Cancel-safe.
    pub async fn next(&mut self) -> Option<ModeView> {
        loop {
            if let Some(view) = self.queue.pop_front() {
                return Some(view);
            }
            let head = self.rx.borrow_and_update().head;
            if head.index > self.index {
                self.replay_to(head.index);
                continue;
            }
            self.rx.changed().await.ok()?;
        }
    }

    /// Replays entries after `self.index` up to `to`, queueing a view at each mode change.
    fn replay_to(&mut self, to: u64) {
        while self.index < to {
            let batch = match self.settings.log.range(self.index + 1, REPLAY_BATCH) {
                Ok(batch) if !batch.is_empty() => batch,
                result => {
                    // Cannot replay (should not happen): jump to the latest, losing nothing
                    // the subscriber could not also get from GetMode.
                    if let Err(error) = result {
                        tracing::error!(%error, "cannot replay the settings log for a mode watch");
                    }
                    self.jump_to_latest();
                    return;
                }
            };
            for entry in batch {
                let before = (self.state.maintenance.clone(), self.state.schedule.clone());
                if let Err(error) = self.state.apply_entry(&entry) {
                    tracing::error!(index = entry.index, %error, "cannot replay a settings entry");
                    self.jump_to_latest();
                    return;
                }
                self.index = entry.index;
                if (&self.state.maintenance, &self.state.schedule) != (&before.0, &before.1) {
                    self.queue.push_back(ModeView {
                        maintenance: self.state.maintenance.clone(),
                        settings_index: entry.index,
                        settings_hash: entry.hash,
                        epoch: self.settings.epoch().max(entry.epoch),
                        site_id: Arc::clone(&self.settings.site_id),
                        role: self.settings.role,
                        fenced: self.settings.fenced(),
                        scheduled: self.state.schedule.clone(),
                    });
                }
            }
        }
    }

    fn jump_to_latest(&mut self) {
        let p = self.rx.borrow().clone();
        let view = self.settings.mode_of(&p);
        if view.maintenance != self.state.maintenance || view.scheduled != self.state.schedule {
            self.queue.push_back(view);
        }
        self.state = (*p.view).clone();
        self.index = p.head.index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn site(role: Role) -> (tempfile::TempDir, Arc<Settings>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let primary = (role == Role::Secondary).then(|| "http://10.0.0.1:7600".to_string());
        let s = Settings::open(store, "s", role, primary, None)
            .await
            .unwrap();
        (dir, Arc::new(s))
    }

    #[tokio::test]
    async fn a_primary_starts_at_epoch_one_and_records_changes() {
        let (_d, s) = site(Role::Primary).await;
        assert_eq!(s.epoch(), 1);
        let view = s
            .set_maintenance(true, Some("upgrade".into()), "alice")
            .await
            .unwrap();
        assert!(view.maintenance.enabled);
        assert_eq!(view.settings_index, 1);
        assert_eq!(view.maintenance.updated_by.as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn a_secondary_refuses_changes_naming_the_primary() {
        let (_d, s) = site(Role::Secondary).await;
        let err = s.set_maintenance(true, None, "a").await.unwrap_err();
        assert!(err.to_string().contains("http://10.0.0.1:7600"), "{err}");
        assert_eq!(s.mode().settings_index, 0);
    }

    #[tokio::test]
    async fn invalid_values_store_nothing() {
        let (_d, s) = site(Role::Primary).await;
        let set = [("k".to_string(), "{not json".to_string())].into();
        let err = s.update(set, vec![], "a").await.unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = s
            .set_maintenance(true, Some("x".repeat(256)), "a")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("256 characters"), "{err}");
        assert_eq!(s.log().head().index, 0);
    }

    #[tokio::test]
    async fn the_site_registry_is_written_only_through_its_own_calls() {
        let (_d, s) = site(Role::Primary).await;
        let err = s
            .update([("geo.sites.s1".into(), "1".into())].into(), vec![], "a")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("site registry"), "{err}");
        let err = s
            .update(BTreeMap::new(), vec!["geo.sites.s1".into()], "a")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("site registry"), "{err}");
        let hash = token_sha256(b"token-of-s1-0123456789");
        assert!(s.add_site("s1", &hash, "alice").await.unwrap().1);
        assert!(
            !s.add_site("s1", &hash, "alice").await.unwrap().1,
            "again: no change"
        );
        assert_eq!(s.log().head().index, 1);
        let err = s.add_site("s2", &hash, "alice").await.unwrap_err();
        assert!(matches!(err, SettingsError::Conflict(_)), "{err}");
        let other = token_sha256(b"another-token-0123456789");
        let err = s.add_site("s1", &other, "alice").await.unwrap_err();
        assert!(matches!(err, SettingsError::Conflict(_)), "{err}");
        assert_eq!(
            s.site_with_token(b"token-of-s1-0123456789").as_deref(),
            Some("s1")
        );
        assert_eq!(s.sites()[0].1.added_by, "alice");
        s.remove_site("s1", "alice").await.unwrap();
        assert_eq!(s.site_with_token(b"token-of-s1-0123456789"), None);
        let err = s.remove_site("s1", "alice").await.unwrap_err();
        assert!(matches!(err, SettingsError::NotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn a_secondary_refuses_to_register_sites() {
        let (_d, s) = site(Role::Secondary).await;
        let err = s.add_site("s1", &"a".repeat(64), "a").await.unwrap_err();
        assert!(matches!(err, SettingsError::NotPrimary { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_slow_watcher_still_sees_every_change_in_order() {
        let (_d, s) = site(Role::Primary).await;
        let mut watch = s.watch_mode();
        assert!(!watch.next().await.unwrap().maintenance.enabled);
        s.set_maintenance(true, Some("one".into()), "a")
            .await
            .unwrap();
        s.update([("other".into(), "1".into())].into(), vec![], "a")
            .await
            .unwrap();
        s.set_maintenance(false, None, "a").await.unwrap();
        s.set_maintenance(true, Some("two".into()), "a")
            .await
            .unwrap();
        let mut seen = vec![];
        for _ in 0..3 {
            let v = watch.next().await.unwrap();
            seen.push((
                v.settings_index,
                v.maintenance.enabled,
                v.maintenance.message,
            ));
        }
        assert_eq!(
            seen,
            [
                (1, true, Some("one".into())),
                (3, false, None),
                (4, true, Some("two".into()))
            ]
        );
    }
}
