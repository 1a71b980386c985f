//! `AdminService`: settings and maintenance mode. The admin token is checked before a call
//! reaches this file (see `auth`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::error;
use super::pb;
use super::Site;
use crate::failover;
use crate::objects::Abort;
use crate::settings::SettingsState;
use crate::types::ErrorKind;

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

fn site_record(
    id: &str,
    r: &crate::settings::SiteRecord,
    added: bool,
    sync: Option<&crate::settings::SiteSync>,
) -> pb::SiteRecord {
    pb::SiteRecord {
        sync: sync.map(super::site_sync::site_sync),
        site_id: id.to_string(),
        token_sha256: r.token_sha256.clone(),
        added_by: r.added_by.clone(),
        added_at: Some(convert::timestamp(r.added_at_ms)),
        added,
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
            .map_err(error::status)?;
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

    async fn schedule_maintenance(
        &self,
        req: Request<pb::ScheduleMaintenanceRequest>,
    ) -> Result<Response<pb::ScheduleMaintenanceResponse>, Status> {
        let req = req.into_inner();
        let start = req
            .start
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("start is required"))?;
        let start = convert::checked_millis(start, "start")?;
        let end = match &req.end {
            Some(t) => Some(convert::checked_millis(t, "end")?),
            None => None,
        };
        let window = self
            .site
            .settings
            .schedule_maintenance(start, end, req.message, actor(&req.actor))
            .await
            .map_err(error::status)?;
        Ok(Response::new(pb::ScheduleMaintenanceResponse {
            schedule: Some(convert::schedule(&window)),
            mode: Some(self.site.mode_state()),
        }))
    }

    async fn cancel_maintenance_schedule(
        &self,
        req: Request<pb::CancelMaintenanceScheduleRequest>,
    ) -> Result<Response<pb::CancelMaintenanceScheduleResponse>, Status> {
        let req = req.into_inner();
        let window = self
            .site
            .settings
            .cancel_maintenance_schedule(actor(&req.actor))
            .await
            .map_err(error::status)?;
        Ok(Response::new(pb::CancelMaintenanceScheduleResponse {
            cancelled: Some(convert::schedule(&window)),
            mode: Some(self.site.mode_state()),
        }))
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
            in_flight: writes.iter().map(convert::write_in_flight).collect(),
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
        // Answer before asking anyone when the site cannot be promoted at all, or not with
        // this proof.
        failover::promotable(&site.settings).map_err(error::status)?;
        let proof = req.proof.map(convert::promotion_from);
        failover::next_epoch(site.settings.epoch())
            .and_then(|epoch| failover::check_promotion(&site.settings, proof.as_ref(), epoch))
            .map_err(error::status)?;
        let readiness = super::status::readiness_of(site, String::new()).await?;
        let criteria: Vec<_> = readiness
            .criteria
            .into_iter()
            .map(convert::criterion_from)
            .collect();
        tracing::info!(
            actor = actor(&req.actor),
            force = req.force,
            "promotion requested"
        );
        let (epoch, next) = failover::promote(
            &site.settings,
            &site.store,
            &criteria,
            req.force,
            proof.as_ref(),
        )
        .await
        .map_err(error::status)?;
        site.follow(next);
        let failed: Vec<_> = criteria
            .iter()
            .filter(|c| !c.ok)
            .map(convert::criterion)
            .collect();
        Ok(Response::new(pb::PromoteResponse {
            epoch,
            forced: !failed.is_empty(),
            failed,
            site_id: site.settings.site_id().to_string(),
        }))
    }

    async fn demote(
        &self,
        req: Request<pb::DemoteRequest>,
    ) -> Result<Response<pb::ModeState>, Status> {
        let state = self.site.mode_state();
        let site = &self.site;
        let next = failover::demote(&site.settings, &site.store, actor(&req.get_ref().actor))
            .await
            .map_err(error::status)?;
        site.follow(next);
        Ok(Response::new(state))
    }

    async fn abort_write(
        &self,
        req: Request<pb::AbortWriteRequest>,
    ) -> Result<Response<pb::WriteInFlight>, Status> {
        let req = req.into_inner();
        match self.site.objects.inflight().abort(req.id) {
            Abort::Aborted(w) => {
                tracing::warn!(id = w.id, what = %w.what, from = %w.from, actor = actor(&req.actor), "write aborted by an admin");
                Ok(Response::new(convert::write_in_flight(&w)))
            }
            Abort::Unabortable(w) => Err(error::plain(ErrorKind::Refused, format!(
                "write {} ({}) finishes on its own and cannot be aborted",
                w.id, w.what
            ))),
            Abort::NotFound => Err(error::plain(ErrorKind::NotFound, format!(
                "no write {} is in flight at site {} (it may have finished): see geo-agent maintenance status",
                req.id,
                self.site.settings.site_id()
            ))),
        }
    }

    async fn set_primary(
        &self,
        req: Request<pb::SetPrimaryRequest>,
    ) -> Result<Response<pb::ModeState>, Status> {
        let req = req.into_inner();
        let state = self.site.mode_state();
        let site = &self.site;
        let transport = failover::Transport {
            serves_tls: site.server_tls.is_some(),
            allow_plaintext: site.allow_plaintext,
        };
        let (url, next) = failover::repoint(&site.settings, &site.store, transport, &req.primary)
            .await
            .map_err(error::status)?;
        site.follow(next);
        tracing::info!(primary = %url, actor = actor(&req.actor), "repointed");
        Ok(Response::new(state))
    }

    async fn get_fence(
        &self,
        _req: Request<pb::GetFenceRequest>,
    ) -> Result<Response<pb::FenceState>, Status> {
        let state =
            failover::fence_state(&self.site.settings, &self.site.store).map_err(error::status)?;
        Ok(Response::new(fence_state(state)))
    }

    async fn clear_fence(
        &self,
        req: Request<pb::ClearFenceRequest>,
    ) -> Result<Response<pb::FenceState>, Status> {
        let site = &self.site;
        let state = failover::fence_state(&site.settings, &site.store).map_err(error::status)?;
        let next = failover::clear_fence(&site.settings, &site.store, actor(&req.get_ref().actor))
            .await
            .map_err(error::status)?;
        site.follow(next);
        Ok(Response::new(fence_state(state)))
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
            .map_err(error::status)?;
        Ok(Response::new(self.settings_reply(index, &state)))
    }

    async fn add_site(
        &self,
        req: Request<pb::AddSiteRequest>,
    ) -> Result<Response<pb::SiteRecord>, Status> {
        let req = req.into_inner();
        let (record, added) = self
            .site
            .settings
            .add_site(&req.site_id, &req.token_sha256, actor(&req.actor))
            .await
            .map_err(error::status)?;
        if added {
            tracing::info!(site = %req.site_id, actor = actor(&req.actor), "site registered");
        }
        let sync = self.site.settings.current().1.site_sync(&req.site_id);
        Ok(Response::new(site_record(
            &req.site_id,
            &record,
            added,
            sync.as_ref(),
        )))
    }

    async fn remove_site(
        &self,
        req: Request<pb::RemoveSiteRequest>,
    ) -> Result<Response<pb::RemoveSiteResponse>, Status> {
        let req = req.into_inner();
        let settings = &self.site.settings;
        settings
            .remove_site(&req.site_id, actor(&req.actor))
            .await
            .map_err(error::status)?;
        tracing::info!(site = %req.site_id, actor = actor(&req.actor), "site unregistered");
        Ok(Response::new(pb::RemoveSiteResponse {
            settings_index: settings.current().0,
        }))
    }

    async fn list_sites(
        &self,
        _req: Request<pb::ListSitesRequest>,
    ) -> Result<Response<pb::ListSitesResponse>, Status> {
        let (index, state) = self.site.settings.current();
        Ok(Response::new(pb::ListSitesResponse {
            sites: state
                .sites()
                .iter()
                .map(|(id, r)| site_record(id, r, false, state.site_sync(id).as_ref()))
                .collect(),
            settings_index: index,
        }))
    }

    async fn set_site_sync(
        &self,
        req: Request<pb::SetSiteSyncRequest>,
    ) -> Result<Response<pb::SetSiteSyncResponse>, Status> {
        let req = req.into_inner();
        let update = super::site_sync::update_from(&req)?;
        let settings = &self.site.settings;
        let (index, sync) = settings
            .set_site_sync(&req.site_id, update, actor(&req.actor))
            .await
            .map_err(error::status)?;
        tracing::info!(site = %req.site_id, actor = actor(&req.actor), "site replication settings changed");
        let (_, state) = settings.current();
        let site = state
            .sites()
            .into_iter()
            .find(|(id, _)| *id == req.site_id)
            .map(|(id, r)| site_record(&id, &r, false, sync.as_ref()));
        Ok(Response::new(pb::SetSiteSyncResponse {
            site,
            settings_index: index,
        }))
    }
}

fn fence_state(s: failover::FenceState) -> pb::FenceState {
    pb::FenceState {
        fenced: s.fenced.unwrap_or_default(),
        epoch: s.epoch,
        lead_epoch: s.lead_epoch,
        replaced_by: s.replaced_by.unwrap_or_default(),
        proof: s.proof.as_ref().map(convert::promotion),
        proof_valid: s.proof_check.is_ok(),
        proof_error: s.proof_check.err().unwrap_or_default(),
    }
}
