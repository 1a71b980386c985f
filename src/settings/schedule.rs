//! Scheduled maintenance windows (SPEC §6): a start, an optional end and a message, kept
//! as one settings key ([`SCHEDULE_KEY`]) so the announcement replicates to every site and
//! survives a failover like any other setting.
//!
//! Only the primary's clock decides. [`run`] is a task the primary runs: at the start it
//! appends one ordinary settings entry, authored by [`SCHEDULE_ACTOR`], that turns
//! maintenance mode on with the window's message *and* marks the window started; at the end
//! (if one was given) one entry that turns the mode off and removes the window. Each step is
//! a single entry, so a primary that crashes between them repeats nothing and skips nothing:
//! on coming back it takes the step that is due, late, and says how late. Secondaries only
//! show the window; a fenced primary takes no step (its settings refuse every change).
//!
//! The admin wins over the schedule: changing the mode by hand during a started window ends
//! the window in the same entry (see `Settings::set_maintenance`), and a mode that is
//! already on at the start is left to the admin who turned it on.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use super::state::{check_value, rfc3339, Schedule, SCHEDULE_KEY};
use super::state::{Change, MESSAGE_KEY, MODE_KEY};
use super::{Settings, SettingsError};
use crate::log::now_ms;

/// Who the entries the schedule makes are recorded as (`updated_by`).
pub const SCHEDULE_ACTOR: &str = "maintenance-schedule";
/// How far ahead a window may start: far enough for any plan, near enough that the
/// timestamps stay small.
pub const MAX_AHEAD_MS: i64 = 10 * 366 * 24 * 3600 * 1000;
/// The longest the task sleeps before looking at the clock again, so that a wall clock
/// that was set (NTP step) is noticed within this.
const RECHECK: Duration = Duration::from_secs(1);
/// How long the task waits after a step failed (a full disk, a closing log) to try again.
const RETRY: Duration = Duration::from_secs(1);

/// What the primary has to do about a window at `now_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing until this time (none: nothing at all).
    Wait(Option<i64>),
    /// The start has come: turn the mode on with the message, mark the window started.
    Start,
    /// The start has come but the mode is already on (an admin's): leave it, drop the window.
    Yield,
    /// The end has come: turn the mode off, drop the window.
    End,
    /// The whole window passed while this primary could not act: drop it, change nothing.
    Missed,
}

/// The pure decision: the window, whether the mode is on now, and the clock.
pub fn step(schedule: Option<&Schedule>, mode_on: bool, now_ms: i64) -> Step {
    let Some(w) = schedule else {
        return Step::Wait(None);
    };
    let ended = w.end_ms.is_some_and(|end| now_ms >= end);
    match (w.started(), now_ms >= w.start_ms) {
        (false, false) => Step::Wait(Some(w.start_ms)),
        (false, true) if ended => Step::Missed,
        (false, true) if mode_on => Step::Yield,
        (false, true) => Step::Start,
        (true, _) if ended => Step::End,
        (true, _) => Step::Wait(w.end_ms),
    }
}

impl Settings {
    /// The window scheduled or in progress, as this site has applied it.
    pub fn maintenance_schedule(&self) -> Option<Schedule> {
        self.log.view().schedule.clone()
    }

    /// Schedules a maintenance window (the primary only), replacing one that has not
    /// started. Refused, with nothing stored: a start not in the future of the primary's
    /// clock, an end not after the start, a missing or too long message, a window while
    /// another one is in progress.
    pub async fn schedule_maintenance(
        &self,
        start_ms: i64,
        end_ms: Option<i64>,
        message: String,
        actor: &str,
    ) -> Result<Schedule, SettingsError> {
        self.writable()?;
        let now = now_ms();
        let invalid = SettingsError::Invalid;
        if start_ms <= now {
            return Err(invalid(format!(
                "the start {} is not in the future: the primary's clock says {}",
                rfc3339(start_ms),
                rfc3339(now)
            )));
        }
        if start_ms - now > MAX_AHEAD_MS {
            return Err(invalid(format!(
                "the start {} is more than ten years ahead",
                rfc3339(start_ms)
            )));
        }
        let window = Schedule {
            start_ms,
            end_ms,
            message,
            scheduled_by: actor.to_string(),
            scheduled_at_ms: now,
            started_at_ms: None,
        };
        window.check().map_err(invalid)?;
        let serial = self.writing.lock().await;
        if let Some(current) = self.maintenance_schedule().filter(Schedule::started) {
            return Err(SettingsError::Conflict(format!(
                "a maintenance window is in progress (started {}{}); cancel it first (geo-agent maintenance schedule --cancel)",
                rfc3339(current.started_at_ms.unwrap_or(current.start_ms)),
                current
                    .end_ms
                    .map(|e| format!(", ends {}", rfc3339(e)))
                    .unwrap_or_default()
            )));
        }
        let mut change = Change::default();
        change.set.insert(SCHEDULE_KEY.into(), to_value(&window)?);
        self.change_serialised(&serial, change, actor).await?;
        info!(start = %rfc3339(start_ms), end = ?end_ms.map(rfc3339), %actor, "maintenance window scheduled");
        Ok(window)
    }

    /// Removes the window (the primary only) and returns it. A window in progress leaves
    /// the mode as it is: the admin turns it off (`maintenance disable`).
    pub async fn cancel_maintenance_schedule(
        &self,
        actor: &str,
    ) -> Result<Schedule, SettingsError> {
        self.writable()?;
        let serial = self.writing.lock().await;
        let Some(window) = self.maintenance_schedule() else {
            return Err(SettingsError::NotFound(
                "no maintenance window is scheduled".into(),
            ));
        };
        let mut change = Change::default();
        change.unset.push(SCHEDULE_KEY.into());
        self.change_serialised(&serial, change, actor).await?;
        info!(%actor, started = window.started(), "maintenance window cancelled");
        Ok(window)
    }

    /// Takes the step that is due now, if any; returns what it did.
    async fn take_step(&self) -> Result<Step, SettingsError> {
        // The step is decided and appended under the write lock: a cancel or an admin's
        // change of the mode that lands first is what the step is decided from.
        let serial = self.writing.lock().await;
        let state = self.log.view();
        let window = state.schedule.clone();
        let now = now_ms();
        let due = step(window.as_ref(), state.maintenance.enabled, now);
        let Some(w) = window else {
            return Ok(due);
        };
        let mut change = Change::default();
        match &due {
            Step::Wait(_) => return Ok(due),
            Step::Start => {
                let started = Schedule {
                    started_at_ms: Some(now),
                    ..w.clone()
                };
                change = Change::maintenance(true, Some(w.message.clone()));
                change.set.insert(SCHEDULE_KEY.into(), to_value(&started)?);
            }
            Step::End => {
                change.set.insert(MODE_KEY.into(), Value::Bool(false));
                change.unset = vec![MESSAGE_KEY.into(), SCHEDULE_KEY.into()];
            }
            Step::Yield | Step::Missed => change.unset.push(SCHEDULE_KEY.into()),
        }
        self.change_serialised(&serial, change, SCHEDULE_ACTOR)
            .await?;
        drop(serial);
        let late_ms = now - w.start_ms;
        match due {
            Step::Start if late_ms >= 1000 => warn!(
                start = %rfc3339(w.start_ms),
                late_ms,
                "maintenance window started late: this primary was not running at its start; maintenance mode is on now"
            ),
            Step::Start => info!(start = %rfc3339(w.start_ms), late_ms, "maintenance window started: maintenance mode is on"),
            Step::Yield => info!(
                "maintenance window reached its start with maintenance mode already on: the mode stays as the admin set it and the window is done"
            ),
            Step::End => info!(end = ?w.end_ms.map(rfc3339), late_ms = w.end_ms.map(|e| now - e), "maintenance window ended: maintenance mode is off"),
            Step::Missed => warn!(
                start = %rfc3339(w.start_ms),
                end = ?w.end_ms.map(rfc3339),
                "maintenance window passed entirely while this primary was not running: it is dropped and the mode is unchanged"
            ),
            Step::Wait(_) => {}
        }
        Ok(due)
    }
}

fn to_value(window: &Schedule) -> Result<Value, SettingsError> {
    serde_json::to_value(window)
        .map_err(|e| SettingsError::Invalid(format!("cannot encode the window: {e}")))
}

/// The primary's scheduler: takes each step of the window when its time comes, until
/// `shutdown`. It waits on the clock and on the settings log (a new or cancelled window),
/// never longer than [`RECHECK`]. A site that is not an unfenced primary never acts.
pub async fn run(settings: std::sync::Arc<Settings>, shutdown: CancellationToken) {
    let mut changed = settings.log.subscribe();
    loop {
        let wait = if settings.fenced().is_some() || settings.role() != crate::types::Role::Primary
        {
            RECHECK
        } else {
            match settings.take_step().await {
                Ok(Step::Wait(Some(at))) => Duration::from_millis(
                    (at - now_ms()).clamp(0, RECHECK.as_millis() as i64) as u64,
                ),
                Ok(Step::Wait(None)) => RECHECK,
                // A step was taken: look again at once (the entry changed the window).
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    warn!(%error, "cannot take the maintenance window's step; trying again");
                    RETRY
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            r = changed.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: i64, end: Option<i64>, started: Option<i64>) -> Schedule {
        Schedule {
            start_ms: start,
            end_ms: end,
            message: "upgrade".into(),
            scheduled_by: "alice".into(),
            scheduled_at_ms: 1,
            started_at_ms: started,
        }
    }

    #[test]
    fn each_step_comes_at_its_time() {
        use Step::*;
        let cases = [
            (None, false, 50, Wait(None)),
            (
                Some(window(100, Some(200), None)),
                false,
                50,
                Wait(Some(100)),
            ),
            (Some(window(100, Some(200), None)), false, 100, Start),
            (Some(window(100, None, None)), false, 10_000, Start),
            (Some(window(100, Some(200), None)), true, 150, Yield),
            (Some(window(100, Some(200), None)), false, 250, Missed),
            (
                Some(window(100, Some(200), Some(100))),
                true,
                150,
                Wait(Some(200)),
            ),
            // The admin turned the mode off: the window was dropped in that entry, but a
            // started one found with the mode off still ends at its end and no earlier.
            (
                Some(window(100, Some(200), Some(100))),
                false,
                150,
                Wait(Some(200)),
            ),
            (Some(window(100, Some(200), Some(120))), true, 200, End),
            (Some(window(100, None, Some(100))), true, 10_000, Wait(None)),
        ];
        for (w, on, now, want) in cases {
            assert_eq!(step(w.as_ref(), on, now), want, "{w:?} on={on} now={now}");
        }
    }

    async fn primary(fenced: Option<String>) -> (tempfile::TempDir, std::sync::Arc<Settings>) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let s = Settings::open(store, "p", crate::types::Role::Primary, None, fenced)
            .await
            .unwrap();
        (dir, std::sync::Arc::new(s))
    }

    #[tokio::test]
    async fn each_step_is_one_entry_made_by_the_schedule() {
        let (_d, s) = primary(None).await;
        let start = now_ms() + 100;
        s.schedule_maintenance(start, Some(start + 200), "m".into(), "alice")
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(s.clone(), shutdown.clone()));
        let mut watch = s.watch_mode();
        let mut seen = vec![];
        while seen.len() < 3 {
            let v = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .expect("the window's steps come")
                .unwrap();
            seen.push((
                v.settings_index,
                v.maintenance.enabled,
                v.scheduled.is_some(),
            ));
            if v.settings_index == 3 {
                break;
            }
        }
        assert_eq!(seen, [(1, false, true), (2, true, true), (3, false, false)]);
        let mode = s.mode().maintenance;
        assert_eq!(mode.updated_by.as_deref(), Some(SCHEDULE_ACTOR));
        assert!(mode.updated_at_ms.unwrap() >= start + 200);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_admin_changing_the_mode_ends_a_started_window() {
        let (_d, s) = primary(None).await;
        let start = now_ms() + 50;
        s.schedule_maintenance(start, None, "m".into(), "alice")
            .await
            .unwrap();
        while now_ms() < start {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(s.take_step().await.unwrap(), Step::Start);
        assert!(s.maintenance_schedule().unwrap().started());
        s.set_maintenance(false, None, "bob").await.unwrap();
        assert_eq!(s.maintenance_schedule(), None);
        assert_eq!(s.take_step().await.unwrap(), Step::Wait(None));
        assert!(!s.mode().maintenance.enabled);
    }

    #[tokio::test]
    async fn a_fenced_primary_takes_no_window() {
        let (_d, s) = primary(Some("demoted".into())).await;
        let err = s
            .schedule_maintenance(now_ms() + 60_000, None, "m".into(), "alice")
            .await
            .unwrap_err();
        assert!(matches!(err, SettingsError::Fenced(_)), "{err}");
        assert_eq!(s.log().head().index, 0);
    }

    #[test]
    fn a_window_must_make_sense_wherever_it_is_applied() {
        assert!(window(100, Some(200), None).check().is_ok());
        let err = window(100, Some(100), None).check().unwrap_err();
        assert!(err.contains("must be after its start"), "{err}");
        let mut w = window(100, None, None);
        w.message = "x".repeat(256);
        assert!(w.check().unwrap_err().contains("the limit is 255"));
        w.message = "  ".into();
        assert!(w.check().unwrap_err().contains("message"));
        let err = check_value(&serde_json::json!({"start_ms": 1})).unwrap_err();
        assert!(err.contains("not a maintenance window"), "{err}");
    }
}
