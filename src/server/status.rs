//! `StatusService`: replication status and failover readiness, for runbooks and dashboards.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::client::{authorized, CALL_TIMEOUT};
use super::convert;
use super::error;
use super::pb;
use super::Site;
use crate::log::now_ms;
use crate::status;
use crate::types::{ErrorKind, Role};

pub struct StatusSvc {
    site: Arc<Site>,
}

impl StatusSvc {
    pub fn new(site: Arc<Site>) -> StatusSvc {
        StatusSvc { site }
    }
}

/// Runs `f` on a blocking thread (status calls count the registry).
async fn blocking<T: Send + 'static>(
    site: &Arc<Site>,
    f: impl FnOnce(&Site) -> Result<T, crate::objects::ObjectError> + Send + 'static,
) -> Result<T, Status> {
    let site = Arc::clone(site);
    tokio::task::spawn_blocking(move || f(&site))
        .await
        .map_err(|e| error::plain(ErrorKind::Internal, format!("status task failed: {e}")))?
        .map_err(error::status)
}

#[tonic::async_trait]
impl pb::status_service_server::StatusService for StatusSvc {
    async fn get_replication_status(
        &self,
        _req: Request<pb::GetReplicationStatusRequest>,
    ) -> Result<Response<pb::ReplicationStatus>, Status> {
        let statuses = blocking(&self.site, |s| s.local().statuses()).await?;
        Ok(Response::new(pb::ReplicationStatus {
            answered_by: self.site.settings.site_id().to_string(),
            generated_at: Some(convert::timestamp(now_ms())),
            sites: statuses.iter().map(convert::site_status).collect(),
        }))
    }

    async fn check_failover_readiness(
        &self,
        req: Request<pb::CheckFailoverReadinessRequest>,
    ) -> Result<Response<pb::FailoverReadiness>, Status> {
        readiness_of(&self.site, req.into_inner().site_id)
            .await
            .map(Response::new)
    }
}

/// Readiness for promoting `site_id` (empty: this secondary). A primary judges it; a
/// secondary asks its primary, and judges itself from what it last heard when it cannot.
pub async fn readiness_of(
    site: &Arc<Site>,
    site_id: String,
) -> Result<pb::FailoverReadiness, Status> {
    let own_id = site.settings.site_id().to_string();
    let reply = |site_id: String, criteria: Vec<status::Criterion>, judged_by: String| {
        pb::FailoverReadiness {
            ready: criteria.iter().all(|c| c.ok),
            criteria: criteria.iter().map(convert::criterion).collect(),
            site_id,
            judged_by,
        }
    };
    match site.settings.role() {
        Role::Primary => {
            if site_id.is_empty() || site_id == own_id {
                return Err(Status::invalid_argument(
                    "name the secondary to promote (--site ID); this site is the primary",
                ));
            }
            let target = site_id.clone();
            let criteria = blocking(site, move |s| s.local().readiness(&target)).await?;
            Ok(reply(site_id, criteria, own_id))
        }
        Role::Secondary => {
            let site_id = if site_id.is_empty() {
                own_id.clone()
            } else {
                site_id
            };
            let primary = site.settings.primary().unwrap_or_default().to_string();
            let asked = match &site.primary_channel {
                Some(channel) => {
                    let mut client = pb::StatusClient::new(channel.clone());
                    let mut req = tonic::Request::new(pb::CheckFailoverReadinessRequest {
                        site_id: site_id.clone(),
                    });
                    req.set_timeout(CALL_TIMEOUT);
                    client
                        .check_failover_readiness(req)
                        .await
                        .map(|r| r.into_inner())
                }
                None => Err(error::plain(
                    ErrorKind::Unavailable,
                    "no primary is configured",
                )),
            };
            match asked {
                Ok(r) => Ok(r),
                Err(e) if site_id == own_id => {
                    let own = blocking(site, |s| s.local().statuses()).await?;
                    let why = if e.code() == tonic::Code::Cancelled
                        || e.code() == tonic::Code::DeadlineExceeded
                    {
                        format!(
                            "the primary did not answer within {:.1} s",
                            CALL_TIMEOUT.as_secs_f64()
                        )
                    } else {
                        format!("the primary did not answer: {}", e.message())
                    };
                    let criteria = status::readiness_without_primary(&own[0], &primary, &why);
                    Ok(reply(site_id, criteria, own_id))
                }
                Err(e) => Err(super::objects::forwarded_status(e, &primary)),
            }
        }
    }
}

/// Sends this site's report to the primary (`ReplicationService.ReportStatus`).
pub async fn report_to_primary(site: &Arc<Site>) -> Result<(), String> {
    let Some(channel) = site.primary_channel.clone() else {
        return Ok(());
    };
    let report = blocking(site, |s| s.local().report())
        .await
        .map_err(|e| e.message().to_string())?;
    let mut client = pb::ReplicationClient::new(channel);
    let mut message = convert::site_report(&report);
    message.proof = site.settings.proof().as_ref().map(convert::promotion);
    let mut req = authorized(message, &site.site_token)?;
    req.set_timeout(CALL_TIMEOUT);
    client
        .report_status(req)
        .await
        .map_err(|s| s.message().to_string())?;
    Ok(())
}
