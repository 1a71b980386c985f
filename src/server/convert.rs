//! The one place where domain types and protobuf meet, both ways, and where domain errors
//! become gRPC statuses. Malformed fields from the wire become `INVALID_ARGUMENT` here.

use tonic::Status;

use super::pb;
use crate::gate;
use crate::log::{Entry, Head, HASH_LEN};
use crate::objects::{ObjectMeta, Row, SyncState, Verification};
use crate::replication::{FollowerState, FollowerStatus, Received};
use crate::settings::{ModeView, Schedule};
use crate::status;
use crate::types::{Promotion, Role};

pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn millis(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

/// A timestamp from the wire, in ms; out of range or malformed is `INVALID_ARGUMENT`.
pub fn checked_millis(t: &prost_types::Timestamp, field: &str) -> Result<i64, Status> {
    t.seconds
        .checked_mul(1000)
        .filter(|_| (0..1_000_000_000).contains(&t.nanos))
        .and_then(|ms| ms.checked_add(i64::from(t.nanos) / 1_000_000))
        .ok_or_else(|| Status::invalid_argument(format!("{field} is not a valid timestamp")))
}

pub fn schedule(w: &Schedule) -> pb::MaintenanceSchedule {
    pb::MaintenanceSchedule {
        start: Some(timestamp(w.start_ms)),
        end: w.end_ms.map(timestamp),
        message: w.message.clone(),
        scheduled_by: w.scheduled_by.clone(),
        scheduled_at: Some(timestamp(w.scheduled_at_ms)),
        started_at: w.started_at_ms.map(timestamp),
    }
}

pub fn role(r: Role) -> pb::Role {
    match r {
        Role::Primary => pb::Role::Primary,
        Role::Secondary => pb::Role::Secondary,
    }
}

pub fn mode_state(view: &ModeView, follower: Option<&FollowerStatus>) -> pb::ModeState {
    let m = &view.maintenance;
    pb::ModeState {
        maintenance_mode: m.enabled,
        message: m.message.clone().unwrap_or_default(),
        updated_by: m.updated_by.clone().unwrap_or_default(),
        updated_at: m.updated_at_ms.map(timestamp),
        settings_index: view.settings_index,
        epoch: view.epoch,
        site_id: view.site_id.to_string(),
        role: role(view.role) as i32,
        settings_hash: if view.settings_index == 0 {
            String::new()
        } else {
            hex::encode(view.settings_hash)
        },
        follower: follower.map(follower_status),
        fenced: view.fenced.clone().unwrap_or_default(),
        scheduled: view.scheduled.as_ref().map(schedule),
    }
}

fn follower_state(s: FollowerState) -> pb::FollowerState {
    match s {
        FollowerState::Connecting => pb::FollowerState::Connecting,
        FollowerState::Following => pb::FollowerState::Following,
        FollowerState::Diverged => pb::FollowerState::Diverged,
        FollowerState::Refused => pb::FollowerState::Refused,
        FollowerState::PrimaryFenced => pb::FollowerState::PrimaryFenced,
    }
}

pub fn follower_status(f: &FollowerStatus) -> pb::FollowerStatus {
    pb::FollowerStatus {
        state: follower_state(f.state) as i32,
        primary: f.primary.clone(),
        primary_head_index: f.primary_head,
        last_contact: f.last_contact_ms.map(timestamp),
        error: f.error.clone().unwrap_or_default(),
    }
}

pub fn log_entry(e: &Entry) -> pb::LogEntry {
    pb::LogEntry {
        index: e.index,
        epoch: e.epoch,
        timestamp_ms: e.timestamp_ms,
        author: e.author.clone(),
        payload: e.payload.clone(),
        hash: e.hash.to_vec(),
    }
}

pub fn promotion(p: &Promotion) -> pb::Promotion {
    pb::Promotion {
        site_id: p.site_id.clone(),
        epoch: p.epoch,
        signature: p.signature.clone(),
    }
}

/// A proof from the wire, as is: whether it proves anything is checked where it is used.
pub fn promotion_from(p: pb::Promotion) -> Promotion {
    Promotion {
        site_id: p.site_id,
        epoch: p.epoch,
        signature: p.signature,
    }
}

pub fn heartbeat(head: Head, epoch: u64, now_ms: i64, proof: Option<&Promotion>) -> pb::Heartbeat {
    pb::Heartbeat {
        head_index: head.index,
        head_hash: if head.index == 0 {
            Vec::new()
        } else {
            head.hash.to_vec()
        },
        epoch,
        primary_time: Some(timestamp(now_ms)),
        proof: proof.map(promotion),
    }
}

/// A message from a serving site, checked field by field.
pub fn received(m: pb::LogMessage) -> Result<Received, String> {
    match m.kind {
        Some(pb::log_message::Kind::Entry(e)) => Ok(Received::Entry(Entry {
            index: e.index,
            epoch: e.epoch,
            timestamp_ms: e.timestamp_ms,
            author: e.author,
            payload: e.payload,
            hash: hash(&e.hash)
                .ok_or_else(|| format!("entry {} has a {}-byte hash", e.index, e.hash.len()))?,
        })),
        Some(pb::log_message::Kind::Heartbeat(h)) => {
            let head_hash = if h.head_index == 0 {
                crate::log::GENESIS
            } else {
                hash(&h.head_hash)
                    .ok_or_else(|| format!("heartbeat has a {}-byte hash", h.head_hash.len()))?
            };
            Ok(Received::Heartbeat {
                head: Head {
                    index: h.head_index,
                    hash: head_hash,
                    epoch: h.epoch,
                },
                primary_time_ms: h.primary_time.as_ref().map(millis).unwrap_or(0),
                proof: h.proof.map(promotion_from),
            })
        }
        None => Err("a log message with neither entry nor heartbeat".into()),
    }
}

fn hash(raw: &[u8]) -> Option<[u8; HASH_LEN]> {
    raw.try_into().ok()
}

/// A timestamp as RFC 3339 in UTC, for JSON output.
pub fn rfc3339(t: &Option<prost_types::Timestamp>) -> Option<String> {
    t.as_ref().and_then(|t| {
        chrono::DateTime::from_timestamp_millis(millis(t))
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    })
}

/// The JSON object `mode get --json`, `mode watch --json` and the HTTP `/mode` print.
pub fn mode_json(m: &pb::ModeState) -> serde_json::Value {
    let role = match pb::Role::try_from(m.role) {
        Ok(pb::Role::Primary) => "primary",
        Ok(pb::Role::Secondary) => "secondary",
        _ => "unknown",
    };
    let mut out = serde_json::json!({
        "maintenance_mode": m.maintenance_mode,
        "message": m.message,
        "updated_by": m.updated_by,
        "updated_at": rfc3339(&m.updated_at),
        "settings_index": m.settings_index,
        "settings_hash": m.settings_hash,
        "epoch": m.epoch,
        "site_id": m.site_id,
        "role": role,
    });
    if !m.fenced.is_empty() {
        out["fenced"] = m.fenced.clone().into();
    }
    if let Some(w) = &m.scheduled {
        out["scheduled"] = schedule_json(w);
    }
    if let Some(f) = &m.follower {
        let state = match pb::FollowerState::try_from(f.state) {
            Ok(pb::FollowerState::Connecting) => "connecting",
            Ok(pb::FollowerState::Following) => "following",
            Ok(pb::FollowerState::Diverged) => "diverged",
            Ok(pb::FollowerState::Refused) => "refused",
            Ok(pb::FollowerState::PrimaryFenced) => "primary_fenced",
            _ => "unknown",
        };
        out["follower"] = serde_json::json!({
            "state": state,
            "primary": f.primary,
            "primary_head_index": f.primary_head_index,
            "last_contact": rfc3339(&f.last_contact),
            "error": f.error,
        });
    }
    out
}

/// A maintenance window as `mode get --json` and `maintenance schedule --json` print it.
pub fn schedule_json(w: &pb::MaintenanceSchedule) -> serde_json::Value {
    serde_json::json!({
        "start": rfc3339(&w.start),
        "end": rfc3339(&w.end),
        "message": w.message,
        "scheduled_by": w.scheduled_by,
        "scheduled_at": rfc3339(&w.scheduled_at),
        "started_at": rfc3339(&w.started_at),
    })
}

/// A gate question from the wire, checked field by field.
pub fn gate_request(req: pb::CheckRequest) -> Result<gate::Request, Status> {
    use pb::check_request::Request as R;
    let none_if_empty = |s: String| (!s.is_empty()).then_some(s);
    match req.request {
        None => Err(Status::invalid_argument(
            "a check needs one of: http, git, registry, action",
        )),
        Some(R::Http(h)) => {
            if h.method.is_empty() || h.path.is_empty() {
                return Err(Status::invalid_argument(
                    "an HTTP check needs a method and a path",
                ));
            }
            let client_ip = match h.client_ip.as_str() {
                "" => None,
                ip => Some(ip.parse().map_err(|_| {
                    Status::invalid_argument(format!("client_ip {ip:?} is not an IP address"))
                })?),
            };
            Ok(gate::Request::Http(gate::HttpRequest {
                method: h.method,
                path: h.path,
                accept: none_if_empty(h.accept),
                content_type: none_if_empty(h.content_type),
                referer: none_if_empty(h.referer),
                body: h.body,
                client_ip,
            }))
        }
        Some(R::Git(g)) => {
            let op = match pb::GitOperation::try_from(g.operation) {
                Ok(pb::GitOperation::UploadPack) => gate::GitOp::UploadPack,
                Ok(pb::GitOperation::ReceivePack) => gate::GitOp::ReceivePack,
                _ => {
                    return Err(Status::invalid_argument(
                        "git operation must be upload-pack or receive-pack",
                    ))
                }
            };
            let protocol = match pb::GitProtocol::try_from(g.protocol) {
                Ok(pb::GitProtocol::Ssh) => gate::GitProtocol::Ssh,
                Ok(pb::GitProtocol::Http) => gate::GitProtocol::Http,
                _ => return Err(Status::invalid_argument("git protocol must be ssh or http")),
            };
            Ok(gate::Request::Git(gate::GitRequest {
                op,
                protocol,
                proxied: g.proxied,
            }))
        }
        Some(R::Registry(r)) => Ok(gate::Request::Registry(gate::RegistryRequest {
            scopes: r.scopes,
        })),
        Some(R::Action(a)) => Ok(gate::Request::Action(gate::ActionRequest {
            action: a.action,
            source: none_if_empty(a.source),
        })),
    }
}

pub fn decision(d: &gate::Decision) -> pb::Decision {
    pb::Decision {
        verdict: match d.verdict {
            gate::Verdict::Allow => pb::Verdict::Allow,
            gate::Verdict::ProxyToPrimary => pb::Verdict::ProxyToPrimary,
            gate::Verdict::Deny => pb::Verdict::Deny,
        } as i32,
        status: u32::from(d.status),
        content_type: d.content_type.to_string(),
        message: d.message.as_deref().unwrap_or_default().to_string(),
        body: d.body.as_deref().unwrap_or_default().to_string(),
        location: d.location.clone().unwrap_or_default(),
        retry_after: d.retry_after.unwrap_or(0),
        granted_scopes: d.granted_scopes.clone(),
        rule: d.rule.to_string(),
        reason: d.reason.to_string(),
    }
}

/// The JSON object `check --json` prints.
pub fn decision_json(d: &pb::Decision) -> serde_json::Value {
    let verdict = match pb::Verdict::try_from(d.verdict) {
        Ok(pb::Verdict::Allow) => "allow",
        Ok(pb::Verdict::ProxyToPrimary) => "proxy_to_primary",
        Ok(pb::Verdict::Deny) => "deny",
        _ => "unknown",
    };
    serde_json::json!({
        "verdict": verdict,
        "status": d.status,
        "content_type": d.content_type,
        "message": d.message,
        "body": d.body,
        "location": d.location,
        "retry_after": d.retry_after,
        "granted_scopes": d.granted_scopes,
        "rule": d.rule,
        "reason": d.reason,
    })
}

pub fn write_in_flight(w: &crate::objects::Write) -> pb::WriteInFlight {
    pb::WriteInFlight {
        what: w.what.clone(),
        from: w.from.clone(),
        since: Some(timestamp(w.since_ms)),
        id: w.id,
    }
}

pub fn object_meta(m: &ObjectMeta) -> pb::ObjectMeta {
    pb::ObjectMeta {
        name: m.name.clone(),
        kind: m.kind.clone(),
        size: m.size,
        sha256: m.sha256.clone(),
        version: m.version,
        updated_at: Some(timestamp(m.updated_at_ms)),
        updated_by: m.updated_by.clone(),
    }
}

pub fn replica(r: &Row) -> pb::Replica {
    pb::Replica {
        sync: match r.sync {
            SyncState::Pending => pb::SyncState::Pending,
            SyncState::Started => pb::SyncState::Started,
            SyncState::Synced => pb::SyncState::Synced,
            SyncState::Failed => pb::SyncState::Failed,
        } as i32,
        retry_count: r.retries,
        next_retry_at: (r.next_retry_ms > 0).then(|| timestamp(r.next_retry_ms)),
        last_error: r.last_error.clone().unwrap_or_default(),
        local_version: r.local.as_ref().map_or(0, |l| l.version),
        verification: match r.verification {
            Verification::Pending => pb::VerificationState::Pending,
            Verification::Succeeded => pb::VerificationState::Succeeded,
            Verification::Failed => pb::VerificationState::Failed,
        } as i32,
        verified_at: r.verified_at_ms.map(timestamp),
        checksum_mismatch: r.checksum_mismatch,
        verification_failure: r.verification_failure.clone().unwrap_or_default(),
    }
}

/// The JSON object `stat --json` and `pull`'s header print.
pub fn object_json(m: &pb::ObjectMeta) -> serde_json::Value {
    serde_json::json!({
        "name": m.name,
        "kind": m.kind,
        "size": m.size,
        "sha256": m.sha256,
        "version": m.version,
        "updated_at": rfc3339(&m.updated_at),
        "updated_by": m.updated_by,
    })
}

fn follower_state_from(raw: i32) -> Result<FollowerState, Status> {
    match pb::FollowerState::try_from(raw) {
        Ok(pb::FollowerState::Connecting) => Ok(FollowerState::Connecting),
        Ok(pb::FollowerState::Following) => Ok(FollowerState::Following),
        Ok(pb::FollowerState::Diverged) => Ok(FollowerState::Diverged),
        Ok(pb::FollowerState::Refused) => Ok(FollowerState::Refused),
        Ok(pb::FollowerState::PrimaryFenced) => Ok(FollowerState::PrimaryFenced),
        _ => Err(Status::invalid_argument("unknown follower state")),
    }
}

fn log_position(p: &status::LogPosition) -> pb::LogPosition {
    pb::LogPosition {
        applied: p.applied,
        applied_hash: p.applied_hash.clone(),
        follower: p.follower.as_ref().map(|f| pb::FollowerStatus {
            state: follower_state(f.state) as i32,
            primary: String::new(),
            primary_head_index: f.primary_head,
            last_contact: f.last_contact_ms.map(timestamp),
            error: f.error.clone().unwrap_or_default(),
        }),
    }
}

/// The longest follower error a report may carry (a follower's own errors are far shorter).
pub const MAX_REPORT_ERROR_BYTES: usize = 1024;

fn log_position_from(p: Option<pb::LogPosition>) -> Result<status::LogPosition, Status> {
    let p = p.ok_or_else(|| Status::invalid_argument("a report needs both log positions"))?;
    if !p.applied_hash.is_empty() && crate::objects::parse_sha256(&p.applied_hash).is_err() {
        return Err(Status::invalid_argument(
            "a report's applied_hash is empty or 64 lowercase hex digits",
        ));
    }
    if let Some(f) = &p.follower {
        if f.error.len() > MAX_REPORT_ERROR_BYTES {
            return Err(Status::invalid_argument(format!(
                "a report's follower error is {} bytes; the limit is {MAX_REPORT_ERROR_BYTES}",
                f.error.len()
            )));
        }
    }
    Ok(status::LogPosition {
        applied: p.applied,
        applied_hash: p.applied_hash,
        follower: match p.follower {
            None => None,
            Some(f) => Some(status::FollowerView {
                state: follower_state_from(f.state)?,
                primary_head: f.primary_head_index,
                last_contact_ms: f.last_contact.as_ref().map(millis),
                error: Some(f.error).filter(|e| !e.is_empty()),
            }),
        },
    })
}

pub fn site_report(r: &status::Report) -> pb::SiteReport {
    let o = &r.objects;
    pb::SiteReport {
        site_id: r.site_id.clone(),
        role: role(r.role) as i32,
        epoch: r.epoch,
        maintenance_mode: r.maintenance,
        settings: Some(log_position(&r.settings)),
        events: Some(log_position(&r.events)),
        objects: Some(pb::ObjectCounts {
            objects: o.objects,
            synced: o.synced,
            pending: o.pending,
            failed: o.failed,
            verified: o.verified,
            verification_failed: o.verification_failed,
            progress: o.progress.clone(),
            selective_sync: o.selective.as_ref().map(selection),
        }),
        writes_in_flight: r.writes_in_flight,
        reported_at: Some(timestamp(r.at_ms)),
        proof: None,
        advertise_url: r.advertise_url.clone().unwrap_or_default(),
        disk: r.disk.as_ref().map(|d| pb::DiskState {
            path: d.path.clone(),
            free_bytes: d.free_bytes,
            full: d.full,
            reserve: d.reserve,
        }),
        object_storage: r.object_storage.as_ref().map(|b| pb::ObjectStorageState {
            location: b.location.clone(),
            failing: b.failing,
            error: b.error.clone().unwrap_or_default(),
            failing_since: b.since_ms.map(timestamp),
        }),
    }
}

/// Lines of progress another site reports, bounded: they are shown as they are.
fn progress_from(lines: Vec<String>) -> Result<Vec<String>, Status> {
    const MAX_LINES: usize = 4;
    const MAX_LINE: usize = 1024;
    if lines.len() > MAX_LINES {
        return Err(Status::invalid_argument(format!(
            "a report carries at most {MAX_LINES} progress lines"
        )));
    }
    // An over-long line is shortened, not a reason to refuse the site's whole report.
    Ok(lines
        .into_iter()
        .map(|l| {
            if l.len() <= MAX_LINE {
                return l;
            }
            let mut end = MAX_LINE;
            while !l.is_char_boundary(end) {
                end -= 1;
            }
            l[..end].to_string()
        })
        .collect())
}

/// A report from the wire; malformed fields are INVALID_ARGUMENT.
pub fn site_report_from(r: pb::SiteReport) -> Result<status::Report, Status> {
    crate::types::validate_site_id(&r.site_id).map_err(Status::invalid_argument)?;
    let role = match pb::Role::try_from(r.role) {
        Ok(pb::Role::Primary) => Role::Primary,
        Ok(pb::Role::Secondary) => Role::Secondary,
        _ => return Err(Status::invalid_argument("a report needs a role")),
    };
    let o = r.objects.unwrap_or_default();
    let events = log_position_from(r.events)?;
    Ok(status::Report {
        site_id: r.site_id,
        role,
        epoch: r.epoch,
        maintenance: r.maintenance_mode,
        settings: log_position_from(r.settings)?,
        objects: crate::objects::Counts {
            objects: o.objects,
            synced: o.synced,
            pending: o.pending,
            failed: o.failed,
            verified: o.verified,
            verification_failed: o.verification_failed,
            events_applied: events.applied,
            selective: o.selective_sync.map(selection_from).transpose()?,
            damaged: Vec::new(),
            progress: progress_from(o.progress)?,
        },
        events,
        writes_in_flight: r.writes_in_flight,
        at_ms: r.reported_at.as_ref().map_or(0, millis),
        advertise_url: advertise_url_from(r.advertise_url)?,
        disk: match r.disk {
            None => None,
            Some(d) if d.path.len() > 4096 => {
                return Err(Status::invalid_argument(
                    "a report's disk path is over 4096 bytes",
                ))
            }
            Some(d) => Some(status::DiskView {
                path: d.path,
                free_bytes: d.free_bytes,
                full: d.full,
                reserve: d.reserve,
            }),
        },
        object_storage: r.object_storage.map(storage_from),
    })
}

/// A site's bucket as it reports it; over-long text is shortened, not refused.
fn storage_from(b: pb::ObjectStorageState) -> status::StorageView {
    const MAX: usize = 1024;
    status::StorageView {
        location: crate::types::truncate_chars(&b.location, MAX).to_string(),
        failing: b.failing,
        error: (!b.error.is_empty())
            .then(|| crate::types::truncate_chars(&b.error, MAX).to_string()),
        since_ms: b
            .failing_since
            .as_ref()
            .and_then(|t| checked_millis(t, "failing_since").ok()),
    }
}

/// The longest `advertise_url` a report may carry.
pub const MAX_ADVERTISE_URL_BYTES: usize = 2048;

/// A report's `advertise_url`: empty is none; anything else must be a site address.
fn advertise_url_from(url: String) -> Result<Option<String>, Status> {
    if url.is_empty() {
        return Ok(None);
    }
    if url.len() > MAX_ADVERTISE_URL_BYTES {
        return Err(Status::invalid_argument(format!(
            "a report's advertise_url is {} bytes; the limit is {MAX_ADVERTISE_URL_BYTES}",
            url.len()
        )));
    }
    crate::types::normalize_url(&url)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("a report's advertise_url: {e}")))
}

fn health(h: status::Health) -> i32 {
    (match h {
        status::Health::Ok => pb::Health::Ok,
        status::Health::Warning => pb::Health::Warning,
        status::Health::Critical => pb::Health::Critical,
    }) as i32
}

pub fn site_status(s: &status::SiteStatus) -> pb::SiteStatus {
    let lag = |l: status::Lag| pb::Lag {
        entries: l.entries,
        seconds: l.millis as f64 / 1000.0,
    };
    pb::SiteStatus {
        report: Some(site_report(&s.report)),
        settings_head: s.settings_head,
        events_head: s.events_head,
        settings_lag: Some(lag(s.settings_lag)),
        events_lag: Some(lag(s.events_lag)),
        last_contact: s.last_contact_ms.map(timestamp),
        health: health(s.health),
        channels: s
            .channels
            .iter()
            .map(|c| pb::HealthChannel {
                name: c.name.to_string(),
                health: health(c.health),
                reasons: c.reasons.clone(),
            })
            .collect(),
    }
}

pub fn criterion(c: &status::Criterion) -> pb::Criterion {
    pb::Criterion {
        name: c.name.clone(),
        ok: c.ok,
        detail: c.detail.clone(),
    }
}

pub fn health_name(raw: i32) -> &'static str {
    match pb::Health::try_from(raw) {
        Ok(pb::Health::Ok) => "OK",
        Ok(pb::Health::Warning) => "WARNING",
        Ok(pb::Health::Critical) => "CRITICAL",
        _ => "UNKNOWN",
    }
}

pub fn criterion_from(c: pb::Criterion) -> status::Criterion {
    status::Criterion {
        name: c.name,
        ok: c.ok,
        detail: c.detail,
    }
}

/// A selective sync's selection (`settings::Selection`) on the wire.
pub fn selection(s: &crate::settings::Selection) -> pb::SelectiveSync {
    pb::SelectiveSync {
        prefixes: s.prefixes.clone(),
        kinds: s.kinds.clone(),
    }
}

/// A selection from the wire, checked (shape, lengths, counts).
pub fn selection_from(s: pb::SelectiveSync) -> Result<crate::settings::Selection, Status> {
    let s = crate::settings::Selection {
        prefixes: s.prefixes,
        kinds: s.kinds,
    };
    s.check().map_err(Status::invalid_argument)?;
    Ok(s)
}

/// Everything a peer or a client sends is decoded here first: whatever the bytes, decoding
/// and the checks behind it answer with a value or an error, never a panic.
#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::objects::Event;
    use crate::settings::Change;

    fn view(maintenance: bool) -> gate::SiteView {
        gate::SiteView {
            role: gate::SiteRole::Primary,
            maintenance,
            message: None,
            fenced: None,
        }
    }

    #[test]
    fn a_secondarys_disk_and_bucket_reach_the_primary_in_its_report() {
        let report = status::Report {
            site_id: "s1".into(),
            role: Role::Secondary,
            epoch: 1,
            maintenance: false,
            settings: status::LogPosition::default(),
            events: status::LogPosition::default(),
            objects: Default::default(),
            writes_in_flight: 0,
            at_ms: 1,
            advertise_url: None,
            disk: Some(status::DiskView {
                path: "/var/lib/geo-agent".into(),
                free_bytes: 4096,
                full: true,
                reserve: false,
            }),
            object_storage: Some(status::StorageView {
                location: "bucket b at http://127.0.0.1:3900".into(),
                failing: true,
                error: Some("connection refused".into()),
                since_ms: Some(1_000),
            }),
        };
        let back = site_report_from(site_report(&report)).expect("a valid report");
        assert_eq!(back.disk, report.disk);
        assert_eq!(back.object_storage, report.object_storage);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn log_messages_from_a_peer_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = pb::LogMessage::decode(raw.as_slice()) {
                if let Ok(Received::Entry(e)) = received(m) {
                    // What a follower's checks then do with the payload.
                    if let Ok(c) = Change::decode(&e.payload) {
                        let _ = c.check();
                    }
                    if let Ok(ev) = Event::decode(&e.payload) {
                        let _ = ev.check();
                    }
                }
            }
        }

        #[test]
        fn entry_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(c) = Change::decode(&payload) {
                let _ = c.check();
            }
            if let Ok(ev) = Event::decode(&payload) {
                let _ = ev.check();
            }
        }

        #[test]
        fn reports_from_a_peer_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(r) = pb::SiteReport::decode(raw.as_slice()) {
                let _ = site_report_from(r);
            }
        }

        #[test]
        fn gate_questions_never_panic_and_a_write_needs_a_rule(
            raw in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            if let Ok(q) = pb::CheckRequest::decode(raw.as_slice()) {
                if let Ok(req) = gate_request(q) {
                    if let Ok(d) = gate::decide(&req, &view(true), &gate::GateConfig::default()) {
                        if let gate::Request::Http(h) = &req {
                            let read = ["GET", "HEAD", "OPTIONS"].contains(&h.method.to_ascii_uppercase().as_str());
                            // In maintenance a write passes only under an allowlist row (or
                            // a body-less GraphQL or LFS request, judged by its URL).
                            if d.verdict == gate::Verdict::Allow && !read {
                                prop_assert!(
                                    d.rule.starts_with("allow.")
                                        || d.rule == "graphql.no_body"
                                        || d.rule == "lfs.no_body",
                                    "{d:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
