//! `AdminService`: settings and maintenance mode. The admin token is checked before a call
//! reaches this file (see `auth`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, settings_status};
use super::pb;
use crate::settings::SettingsState;
use crate::site::Site;

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
