//! `GateService`: the gate over gRPC, for front ends that are not nginx.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::error;
use super::pb;
use super::Site;

pub struct GateSvc {
    site: Arc<Site>,
}

impl GateSvc {
    pub fn new(site: Arc<Site>) -> GateSvc {
        GateSvc { site }
    }
}

#[tonic::async_trait]
impl pb::gate_service_server::GateService for GateSvc {
    async fn check(
        &self,
        req: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::Decision>, Status> {
        let question = convert::gate_request(req.into_inner())?;
        let decision = self.site.check(&question).map_err(error::status)?;
        Ok(Response::new(convert::decision(&decision)))
    }
}
