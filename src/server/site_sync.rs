//! Per-site replication settings (selective sync, bandwidth limits) between protobuf and
//! the domain: `AdminService.SetSiteSync`, `ListSites` and the selection a report carries.
//! Malformed fields become `INVALID_ARGUMENT` here; the rules themselves are the settings
//! layer's (`settings::site_sync`).

use tonic::Status;

use super::convert::{self, selection, selection_from};
use super::pb;
use crate::settings::{Limit, SiteSync, SiteSyncUpdate};

fn limit(l: &Limit) -> pb::BandwidthLimit {
    pb::BandwidthLimit {
        limit: Some(match l {
            Limit::Unlimited => pb::bandwidth_limit::Limit::Unlimited(true),
            Limit::BytesPerSecond(r) => pb::bandwidth_limit::Limit::BytesPerSecond(*r),
        }),
    }
}

fn limit_from(l: pb::BandwidthLimit, what: &str) -> Result<Limit, Status> {
    match l.limit {
        Some(pb::bandwidth_limit::Limit::Unlimited(true)) => Ok(Limit::Unlimited),
        Some(pb::bandwidth_limit::Limit::BytesPerSecond(r))
            if (crate::types::MIN_RATE..=crate::types::MAX_RATE).contains(&r) =>
        {
            Ok(Limit::BytesPerSecond(r))
        }
        Some(pb::bandwidth_limit::Limit::BytesPerSecond(r)) => {
            Err(Status::invalid_argument(format!(
                "{what} of {r} bytes/s is out of range ({} to {})",
                crate::types::format_rate(crate::types::MIN_RATE),
                crate::types::format_rate(crate::types::MAX_RATE)
            )))
        }
        _ => Err(Status::invalid_argument(format!(
            "{what} needs bytes_per_second or unlimited = true"
        ))),
    }
}

pub fn site_sync(s: &SiteSync) -> pb::SiteSync {
    pb::SiteSync {
        selective_sync: s.selective.as_ref().map(selection),
        sync_bandwidth: s.sync_bandwidth.as_ref().map(limit),
        verify_bandwidth: s.verify_bandwidth.as_ref().map(limit),
        updated_by: s.updated_by.clone(),
        updated_at: Some(convert::timestamp(s.updated_at_ms)),
    }
}

/// The change a `SetSiteSyncRequest` asks for; contradictory fields are INVALID_ARGUMENT.
pub fn update_from(r: &pb::SetSiteSyncRequest) -> Result<SiteSyncUpdate, Status> {
    let both = |what: &str| {
        Status::invalid_argument(format!("{what}: give a new value or clear it, not both"))
    };
    let selective = match (&r.selective_sync, r.selective_sync_off) {
        (Some(_), true) => return Err(both("selective sync")),
        (Some(s), false) => Some(Some(selection_from(s.clone())?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let sync_bandwidth = match (&r.sync_bandwidth, r.clear_sync_bandwidth) {
        (Some(_), true) => return Err(both("the sync bandwidth limit")),
        (Some(l), false) => Some(Some(limit_from(*l, "a sync bandwidth limit")?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let verify_bandwidth = match (&r.verify_bandwidth, r.clear_verify_bandwidth) {
        (Some(_), true) => return Err(both("the verification bandwidth limit")),
        (Some(l), false) => Some(Some(limit_from(*l, "a verification bandwidth limit")?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    Ok(SiteSyncUpdate {
        selective,
        sync_bandwidth,
        verify_bandwidth,
    })
}
