//! `ReplicationService`: what sites serve each other. The site token is checked before a
//! call reaches this file.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{debug, warn, Instrument};

use super::convert;
use super::pb;
use crate::log::now_ms;
use crate::site::Site;

/// Entries read from the log per batch while a follower catches up.
const BATCH: usize = 256;
/// Messages buffered per stream: enough to keep the link busy, small enough that a slow
/// follower pushes back on the reader instead of on memory.
const STREAM_BUFFER: usize = 64;

pub struct ReplicationSvc {
    site: Arc<Site>,
}

impl ReplicationSvc {
    pub fn new(site: Arc<Site>) -> ReplicationSvc {
        ReplicationSvc { site }
    }
}

#[tonic::async_trait]
impl pb::replication_service_server::ReplicationService for ReplicationSvc {
    type StreamSettingsStream = Pin<Box<dyn Stream<Item = Result<pb::LogMessage, Status>> + Send>>;

    async fn stream_settings(
        &self,
        req: Request<pb::StreamLogRequest>,
    ) -> Result<Response<Self::StreamSettingsStream>, Status> {
        let req = req.into_inner();
        let settings = Arc::clone(&self.site.settings);
        let ours = settings.epoch();
        if req.epoch > ours {
            return Err(Status::failed_precondition(format!(
                "site {} is at epoch {ours}, but the caller has seen epoch {}: this site is not the current primary",
                settings.site_id(),
                req.epoch
            )));
        }
        let mut tail = settings.log().tail(req.from_index);
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let shutdown = self.site.shutdown.clone();
        let mut heartbeat = tokio::time::interval(self.site.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let span =
            tracing::info_span!("stream_settings", follower = %req.site_id, from = req.from_index);
        tokio::spawn(
            async move {
                debug!("follower connected");
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tx.closed() => break,
                        _ = heartbeat.tick() => {
                            let hb = convert::heartbeat(settings.log().head(), settings.epoch(), now_ms());
                            Ok(vec![pb::log_message::Kind::Heartbeat(hb)])
                        }
                        batch = tail.next_batch(BATCH) => match batch {
                            None => break,
                            Some(Ok(entries)) => Ok(entries
                                .iter()
                                .map(|e| pb::log_message::Kind::Entry(convert::log_entry(e)))
                                .collect()),
                            Some(Err(e)) => {
                                warn!(error = %e, "cannot read the settings log");
                                Err(Status::internal(e.to_string()))
                            }
                        },
                    };
                    match message {
                        Ok(kinds) => {
                            for kind in kinds {
                                if tx.send(Ok(pb::LogMessage { kind: Some(kind) })).await.is_err() {
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
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
