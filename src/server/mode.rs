//! `ModeService`: open to any client.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use super::pb;
use super::Site;

pub struct ModeSvc {
    site: Arc<Site>,
}

impl ModeSvc {
    pub fn new(site: Arc<Site>) -> ModeSvc {
        ModeSvc { site }
    }
}

/// Buffered mode changes per watcher; a slower watcher blocks only its own task, and the
/// watch replays from the log, so nothing is lost.
const WATCH_BUFFER: usize = 16;

#[tonic::async_trait]
impl pb::mode_service_server::ModeService for ModeSvc {
    async fn get_mode(
        &self,
        _req: Request<pb::GetModeRequest>,
    ) -> Result<Response<pb::ModeState>, Status> {
        Ok(Response::new(self.site.mode_state()))
    }

    type WatchModeStream = Pin<Box<dyn Stream<Item = Result<pb::ModeState, Status>> + Send>>;

    async fn watch_mode(
        &self,
        _req: Request<pb::WatchModeRequest>,
    ) -> Result<Response<Self::WatchModeStream>, Status> {
        let mut watch = self.site.settings.watch_mode();
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let shutdown = self.site.shutdown.clone();
        let site = Arc::clone(&self.site);
        tokio::spawn(async move {
            loop {
                let view = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    v = watch.next() => match v { Some(v) => v, None => return },
                };
                let follower = site.follower_status();
                let state = convert::mode_state(&view, follower.as_ref());
                if tx.send(Ok(state)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
