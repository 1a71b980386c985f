//! `ReplicationService`: what sites serve each other. The caller's token is checked before
//! a call reaches this file and names one registered site (`auth::Caller`); a request that
//! names another site is refused here (`auth::acting_as`).

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{debug, warn, Instrument};

use super::auth::acting_as;
use super::convert;
use super::error;
use super::objects::{local_stream, PullStream};
use super::pb;
use super::Site;
use crate::log::{now_ms, Log, Machine};
use crate::objects::{parse_sha256, ObjectError, ObjectName};
use crate::types::{ErrorKind, Role};

/// Entries read from the log per batch while a follower catches up.
const BATCH: usize = 256;
/// Messages buffered per stream: enough to keep the link busy, small enough that a slow
/// follower pushes back on the reader instead of on memory.
const STREAM_BUFFER: usize = 64;

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogMessage, Status>> + Send>>;

pub struct ReplicationSvc {
    site: Arc<Site>,
}

impl ReplicationSvc {
    pub fn new(site: Arc<Site>) -> ReplicationSvc {
        ReplicationSvc { site }
    }

    /// Streams `log` from the request's index on, then tails it, with heartbeats.
    async fn stream_log<M: Machine>(
        &self,
        log: Arc<Log<M>>,
        req: pb::StreamLogRequest,
    ) -> Result<LogStream, Status> {
        let settings = Arc::clone(&self.site.settings);
        let proof = req.proof.clone().map(convert::promotion_from);
        settings
            .refuse_superseded("the caller", req.epoch, proof.as_ref())
            .await
            .map_err(error::status)?;
        settings.serving_as_primary().map_err(error::status)?;
        let mut tail = log.tail(req.from_index);
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let shutdown = self.site.shutdown.clone();
        let mut heartbeat = tokio::time::interval(self.site.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let span = tracing::info_span!("stream_log", log = log.name(), follower = %req.site_id, from = req.from_index);
        tokio::spawn(
            async move {
                debug!("follower connected");
                // A heartbeat first: the follower learns the proof of this site's epoch
                // before any entry written at it.
                heartbeat.tick().await;
                let hb = convert::heartbeat(log.head(), settings.epoch(), now_ms(), settings.proof().as_ref());
                let first = pb::LogMessage { kind: Some(pb::log_message::Kind::Heartbeat(hb)) };
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tx.closed() => break,
                        _ = heartbeat.tick() => match settings.serving_as_primary() {
                            // Fenced while streaming: the follower must not wait on it.
                            Err(e) => Err(error::status(e)),
                            Ok(()) => {
                                let hb = convert::heartbeat(log.head(), settings.epoch(), now_ms(), settings.proof().as_ref());
                                Ok(vec![pb::log_message::Kind::Heartbeat(hb)])
                            }
                        },
                        batch = tail.next_batch(BATCH) => match batch {
                            None => break,
                            Some(Ok(entries)) => Ok(entries
                                .iter()
                                .map(|e| pb::log_message::Kind::Entry(convert::log_entry(e)))
                                .collect()),
                            Some(Err(e)) => {
                                warn!(error = %e, "cannot read the log");
                                Err(error::status(e))
                            }
                        },
                    };
                    match message {
                        Ok(kinds) => {
                            for kind in kinds {
                                if tx
                                    .send(Ok(pb::LogMessage { kind: Some(kind) }))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            }
                        }
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
                debug!("stream ended");
            }
            .instrument(span),
        );
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl pb::replication_service_server::ReplicationService for ReplicationSvc {
    type StreamSettingsStream = LogStream;

    async fn stream_settings(
        &self,
        req: Request<pb::StreamLogRequest>,
    ) -> Result<Response<LogStream>, Status> {
        acting_as(&req, &req.get_ref().site_id)?;
        let log = Arc::clone(self.site.settings.log());
        self.stream_log(log, req.into_inner())
            .await
            .map(Response::new)
    }

    type StreamEventsStream = LogStream;

    async fn stream_events(
        &self,
        req: Request<pb::StreamLogRequest>,
    ) -> Result<Response<LogStream>, Status> {
        acting_as(&req, &req.get_ref().site_id)?;
        let log = Arc::clone(self.site.objects.log());
        self.stream_log(log, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn report_status(
        &self,
        req: Request<pb::SiteReport>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        acting_as(&req, &req.get_ref().site_id)?;
        let mut req = req.into_inner();
        let proof = req.proof.take().map(convert::promotion_from);
        let report = convert::site_report_from(req)?;
        let settings = &self.site.settings;
        if settings.role() != Role::Primary {
            return Err(error::plain(
                ErrorKind::Refused,
                format!(
                    "site {} is not the primary; report to the primary",
                    settings.site_id()
                ),
            ));
        }
        settings
            .refuse_superseded(&report.site_id, report.epoch, proof.as_ref())
            .await
            .map_err(error::status)?;
        debug!(site = %report.site_id, "status report");
        // Only registered sites are kept: one report each, and none of a removed site.
        let received = now_ms();
        self.site
            .reports
            .record(report.clone(), received, |id| settings.is_site(id));
        // The charts' point: judged off the async threads; a failure costs only the point.
        let site = Arc::clone(&self.site);
        let charted = tokio::task::spawn_blocking(move || site.local().chart(report, received));
        if let Ok(Err(error)) = charted.await {
            debug!(%error, "cannot chart a status report");
        }
        Ok(Response::new(pb::ReportStatusResponse {
            epoch: settings.epoch(),
        }))
    }

    async fn fence(
        &self,
        req: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceResponse>, Status> {
        acting_as(&req, &req.get_ref().site_id)?;
        let req = req.into_inner();
        crate::types::validate_site_id(&req.site_id).map_err(Status::invalid_argument)?;
        let site = &self.site;
        let proof = req.proof.map(convert::promotion_from);
        let next = crate::failover::fence(
            &site.settings,
            &site.store,
            req.epoch,
            &req.site_id,
            proof.as_ref(),
        )
        .await
        .map_err(error::status)?;
        site.follow(next);
        Ok(Response::new(pb::FenceResponse {}))
    }

    type FetchObjectStream = PullStream;

    async fn fetch_object(
        &self,
        req: Request<pb::FetchObjectRequest>,
    ) -> Result<Response<PullStream>, Status> {
        acting_as(&req, &req.get_ref().site_id)?;
        // A fenced site serves nothing to other sites, read-through included.
        self.site
            .settings
            .serving_as_primary()
            .map_err(error::status)?;
        let req = req.into_inner();
        let object = ObjectName::parse(&req.name).map_err(Status::invalid_argument)?;
        if !req.sha256.is_empty() {
            parse_sha256(&req.sha256).map_err(Status::invalid_argument)?;
        }
        let sha = Some(req.sha256.as_str()).filter(|s| !s.is_empty());
        if self.site.settings.role() == Role::Secondary {
            // A secondary serves other sites (a primary repairing its copy) only what it
            // verified, with exactly the sha256 asked for.
            let objects = &self.site.objects;
            let held = match sha {
                Some(sha) => objects
                    .holds_verified(&req.name, sha)
                    .map_err(error::status)?,
                None => false,
            };
            if !held {
                return Err(error::plain(
                    ErrorKind::NotFound,
                    format!(
                        "site {} holds no verified copy of {object} with sha256 {}",
                        self.site.settings.site_id(),
                        sha.unwrap_or("(none asked)")
                    ),
                ));
            }
        }
        match local_stream(&self.site, &object, sha).await? {
            Some(stream) => Ok(Response::new(stream)),
            None => Err(error::status(ObjectError::NotFound(object.to_string()))),
        }
    }
}
