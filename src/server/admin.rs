//! `AdminService`: settings and maintenance mode. The admin token is checked before a call
//! reaches this file (see `auth`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, settings_status};
use super::pb;
use crate::server::client::normalize_url;
use crate::settings::{Role, SettingsState};
use crate::site::Site;
use crate::store::Placement;

/// Who a change is recorded as when the client does not say.
pub const DEFAULT_ACTOR: &str = "admin";

pub struct AdminSvc {
    site: Arc<Site>,
}

impl AdminSvc {
    pub fn new(site: Arc<Site>) -> AdminSvc {
        AdminSvc { site }
    }

    fn settings_reply(&self, index: u64, state: &SettingsState) -> pb::Settings {
        pb::Settings {
            values: state
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            settings_index: index,
            mode: Some(self.site.mode_state()),
        }
    }
}

fn actor(given: &str) -> &str {
    if given.is_empty() {
        DEFAULT_ACTOR
    } else {
        given
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminSvc {
    async fn set_maintenance_mode(
        &self,
        req: Request<pb::SetMaintenanceModeRequest>,
    ) -> Result<Response<pb::ModeState>, Status> {
        let req = req.into_inner();
        let view = self
            .site
            .settings
            .set_maintenance(req.enabled, Some(req.message), actor(&req.actor))
            .await
            .map_err(settings_status)?;
        tracing::info!(
            enabled = req.enabled,
            index = view.settings_index,
            actor = actor(&req.actor),
            "maintenance mode changed"
        );
        Ok(Response::new(convert::mode_state(
            &view,
            self.site.follower_status().as_ref(),
        )))
    }

    async fn get_settings(
        &self,
        _req: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let (index, state) = self.site.settings.current();
        Ok(Response::new(self.settings_reply(index, &state)))
    }

    async fn get_maintenance_status(
        &self,
        _req: Request<pb::GetMaintenanceStatusRequest>,
    ) -> Result<Response<pb::MaintenanceStatus>, Status> {
        let site = &self.site;
        // Read the heads before the writes: a write that ends in between only makes the
        // answer "not drained" once more, never "drained" with heads that still move.
        let heads = (site.settings.log().head(), site.objects.log().head());
        let writes = site.objects.inflight().list();
        let mode = site.mode_state();
        let drained = mode.maintenance_mode && writes.is_empty();
        let head = |h: crate::log::Head| pb::LogHead {
            index: h.index,
            hash: if h.index == 0 {
                String::new()
            } else {
                hex::encode(h.hash)
            },
        };
        Ok(Response::new(pb::MaintenanceStatus {
            mode: Some(mode),
            in_flight: writes
                .iter()
                .map(|w| pb::WriteInFlight {
                    what: w.what.clone(),
                    from: w.from.clone(),
                    since: Some(convert::timestamp(w.since_ms)),
                })
                .collect(),
            drained,
            settings_head: drained.then(|| head(heads.0)),
            events_head: drained.then(|| head(heads.1)),
        }))
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::PromoteResponse>, Status> {
        let req = req.into_inner();
        let site = &self.site;
        let settings = &site.settings;
        let me = settings.site_id().to_string();
        if let Some(reason) = settings.fenced() {
            return Err(Status::failed_precondition(format!(
                "{reason}; repoint it and let it catch up before promoting it"
            )));
        }
        if settings.role() == Role::Primary {
            return Err(Status::failed_precondition(format!(
                "site {me} is already the primary (epoch {})",
                settings.primary_epoch()
            )));
        }
        let readiness = super::status::readiness_of(site, String::new()).await?;
        let failed: Vec<pb::Criterion> = readiness.criteria.into_iter().filter(|c| !c.ok).collect();
        if !failed.is_empty() && !req.force {
            let list: Vec<String> = failed
                .iter()
                .map(|c| format!("✗ {}: {}", c.name, c.detail))
                .collect();
            return Err(Status::failed_precondition(format!(
                "site {me} is not ready to be promoted:\n  {}\nwait (geo-agent failover check --wait), or promote with --force and lose what the primary has that this site lacks",
                list.join("\n  ")
            )));
        }
        let epoch = settings.epoch() + 1;
        let placement = Placement {
            role: Role::Primary,
            primary: None,
            fenced: None,
            fence_target: settings.primary().map(str::to_string),
        };
        site.store
            .promote(epoch, &placement)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(
            epoch,
            forced = !failed.is_empty(),
            actor = actor(&req.actor),
            "promoted to primary; opening again as the primary"
        );
        site.reopen();
        Ok(Response::new(pb::PromoteResponse {
            epoch,
            forced: !failed.is_empty(),
            failed,
            site_id: me,
        }))
    }

    async fn demote(
        &self,
        req: Request<pb::DemoteRequest>,
    ) -> Result<Response<pb::ModeState>, Status> {
        let req = req.into_inner();
        let site = &self.site;
        let settings = &site.settings;
        if settings.role() != Role::Primary {
            return Err(Status::failed_precondition(format!(
                "site {} is not a primary",
                settings.site_id()
            )));
        }
        if !settings.mode().maintenance.enabled {
            return Err(Status::failed_precondition(
                "turn maintenance mode on first: a demoted site refuses writes, and users should see why",
            ));
        }
        let placement = Placement {
            role: Role::Secondary,
            primary: None,
            fenced: Some(format!(
                "site {} was demoted by {} at epoch {}: it is read-only until repointed at the current primary",
                settings.site_id(),
                actor(&req.actor),
                settings.primary_epoch()
            )),
            fence_target: None,
        };
        site.store
            .set_placement(&placement)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(
            actor = actor(&req.actor),
            "demoted; opening again read-only"
        );
        let state = site.mode_state();
        site.reopen();
        Ok(Response::new(state))
    }

    async fn set_primary(
        &self,
        req: Request<pb::SetPrimaryRequest>,
    ) -> Result<Response<pb::ModeState>, Status> {
        let req = req.into_inner();
        let site = &self.site;
        let settings = &site.settings;
        let url = normalize_url(&req.primary).map_err(Status::invalid_argument)?;
        if settings.role() == Role::Primary && settings.fenced().is_none() {
            return Err(Status::failed_precondition(format!(
                "site {} is the primary; demote it first",
                settings.site_id()
            )));
        }
        let placement = Placement {
            role: Role::Secondary,
            primary: Some(url.clone()),
            fenced: None,
            fence_target: None,
        };
        site.store
            .set_placement(&placement)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(primary = %url, actor = actor(&req.actor), "repointed; opening again to follow the new primary");
        let state = site.mode_state();
        site.reopen();
        Ok(Response::new(state))
    }

    async fn update_settings(
        &self,
        req: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let req = req.into_inner();
        let set = req.set.into_iter().collect();
        let (index, state) = self
            .site
            .settings
            .update(set, req.unset, actor(&req.actor))
            .await
            .map_err(settings_status)?;
        Ok(Response::new(self.settings_reply(index, &state)))
    }
}
