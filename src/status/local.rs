//! Assembling reports and judgements from a running site: its logs, followers, registry and
//! writes in flight, and on the primary the reports secondaries sent.

use crate::log::{now_ms, Head, Log, Machine};
use crate::objects::{ObjectError, Objects};
use crate::replication::FollowerStatus;
use crate::settings::Settings;
use crate::types::Role;

use super::{readiness, Criterion, FollowerView, Judge, LogPosition, Report, Reports, SiteStatus};

/// What a running site shows the status judgements: its logs and registry, its followers'
/// positions, and (on the primary) the reports secondaries sent.
pub struct Local<'a> {
    pub settings: &'a Settings,
    pub objects: &'a Objects,
    pub settings_follower: Option<FollowerStatus>,
    pub events_follower: Option<FollowerStatus>,
    pub reports: &'a Reports,
    /// Where this site serves other sites (`advertise_url`), when configured.
    pub advertise_url: Option<&'a str>,
}

fn position(head: Head, follower: Option<FollowerStatus>) -> LogPosition {
    LogPosition {
        applied: head.index,
        applied_hash: if head.index == 0 {
            String::new()
        } else {
            hex::encode(head.hash)
        },
        follower: follower.map(|f| FollowerView {
            state: f.state,
            primary_head: f.primary_head,
            last_contact_ms: f.last_contact_ms,
            error: f.error,
        }),
    }
}

/// How long ago the first entry after `applied` was written (0 when there is none).
fn lag_ms<M: Machine>(log: &Log<M>, applied: u64, now: i64) -> i64 {
    match log.entry(applied + 1) {
        Ok(Some(e)) => (now - e.timestamp_ms).max(0),
        _ => 0,
    }
}

impl Local<'_> {
    /// What this site knows of itself. Reads the registry's counters (a few sled reads, which
    /// may touch the disk): call off the async threads.
    pub fn report(&self) -> Result<Report, ObjectError> {
        let mode = self.settings.mode();
        Ok(Report {
            site_id: self.settings.site_id().to_string(),
            role: mode.role,
            epoch: mode.epoch,
            maintenance: mode.maintenance.enabled,
            settings: position(self.settings.log().head(), self.settings_follower.clone()),
            events: position(self.objects.log().head(), self.events_follower.clone()),
            objects: self.objects.counts()?,
            writes_in_flight: self.objects.inflight().list().len() as u64,
            at_ms: now_ms(),
            advertise_url: self.advertise_url.map(str::to_string),
            disk: Some(self.objects.disk().state().into()),
            object_storage: super::StorageView::of(self.objects.blobs()),
        })
    }

    /// Every site this one can judge: on the primary itself and each reporting secondary,
    /// against its own heads; on a secondary itself, against the primary's heads as last
    /// heard.
    pub fn statuses(&self) -> Result<Vec<SiteStatus>, ObjectError> {
        let own = self.report()?;
        let now = now_ms();
        if own.role != Role::Primary {
            let heard = |p: &LogPosition| p.follower.as_ref().map_or(p.applied, |f| f.primary_head);
            let lag = |p: &LogPosition| {
                let f = p.follower.as_ref()?;
                (heard(p) > p.applied).then(|| now - f.last_contact_ms.unwrap_or(now))
            };
            let judge = Judge {
                now_ms: now,
                settings_head: heard(&own.settings).max(own.settings.applied),
                events_head: heard(&own.events).max(own.events.applied),
                settings_lag_ms: lag(&own.settings),
                events_lag_ms: lag(&own.events),
                primary_objects: own.objects.objects,
            };
            let contact = own
                .settings
                .follower
                .as_ref()
                .and_then(|f| f.last_contact_ms);
            return Ok(vec![judge.site(own, contact)]);
        }
        let settings = self.settings.log();
        let events = self.objects.log();
        let judge_for = |r: &Report| Judge {
            now_ms: now,
            settings_head: settings.head().index,
            events_head: events.head().index,
            settings_lag_ms: Some(lag_ms(settings, r.settings.applied, now)),
            events_lag_ms: Some(lag_ms(events, r.events.applied, now)),
            primary_objects: own.objects.objects,
        };
        let mut out = vec![judge_for(&own).site(own.clone(), Some(now))];
        let registered = self.reports.all().into_iter();
        for (report, received) in registered.filter(|(r, _)| self.settings.is_site(&r.site_id)) {
            out.push(judge_for(&report).site(report, Some(received)));
        }
        Ok(out)
    }

    /// Judges a secondary's report received at `received_ms` against this primary's heads
    /// and adds it to the site's chart history. Reads the registry's counters: call off the
    /// async threads.
    pub fn chart(&self, report: Report, received_ms: i64) -> Result<(), ObjectError> {
        let settings = self.settings.log();
        let events = self.objects.log();
        let judge = Judge {
            now_ms: received_ms,
            settings_head: settings.head().index,
            events_head: events.head().index,
            settings_lag_ms: Some(lag_ms(settings, report.settings.applied, received_ms)),
            events_lag_ms: Some(lag_ms(events, report.events.applied, received_ms)),
            primary_objects: self.objects.counts()?.objects,
        };
        let site_id = report.site_id.clone();
        let status = judge.site(report, Some(received_ms));
        self.reports
            .history
            .record(&site_id, super::Point::of(&status, received_ms), |id| {
                self.settings.is_site(id)
            });
        Ok(())
    }

    /// Readiness for promoting `target`, judged here (the primary).
    pub fn readiness(&self, target: &str) -> Result<Vec<Criterion>, ObjectError> {
        let statuses = self.statuses()?;
        let own = &statuses[0];
        let target_status = statuses[1..].iter().find(|s| s.report.site_id == target);
        Ok(readiness(
            own,
            &self.objects.inflight().list(),
            target,
            target_status,
            now_ms(),
        ))
    }
}
