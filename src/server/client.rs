//! Clients of other sites' gRPC APIs: address parsing, connecting, bearer tokens, and the
//! sources the followers and sync workers read the primary through.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use super::auth::Token;
use super::tls::ClientTls;
use super::{convert, error, pb, Site};
use crate::failover::{DeliveryError, FenceSender};
use crate::replication::{
    FetchError, LogSource, ObjectSource, OpenError, Outcome, Peers, Received, SourceError,
};
use crate::types::{check_plaintext, normalize_url, ErrorKind, Promotion, Role};

/// How long to wait for a TCP connection to a site.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a unary call to another site (a report, a readiness question, a fence) may
/// take: a primary whose traffic is silently dropped must not hold a promotion or a stop
/// until HTTP/2 keepalive gives up.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// An endpoint for `url` with the timeouts sites use; `https://` connects with `tls`.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, String> {
    let url = normalize_url(url)?;
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| format!("{url}: {e}"))?;
    let endpoint = if url.starts_with("https://") {
        endpoint
            .tls_config(tls.config())
            .map_err(|e| format!("{url}: {e}"))?
    } else {
        endpoint
    };
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        // Grow the HTTP/2 windows with the measured bandwidth-delay product, so one
        // connection carries bulk transfers at disk speed.
        .http2_adaptive_window(true))
}

/// Connects to the site at `url`.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<Channel, String> {
    let ep = endpoint(url, tls)?;
    ep.connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {}", ep.uri(), source_chain(&e)))
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &Token) -> Result<Request<T>, String> {
    let mut req = Request::new(message);
    let value = format!("Bearer {}", token.expose())
        .parse()
        .map_err(|_| "the token cannot be sent as a header".to_string())?;
    req.metadata_mut().insert("authorization", value);
    Ok(req)
}

/// An error with its causes, which tonic keeps in `source()` ("transport error" alone says
/// nothing).
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// A channel to `url` that connects on first use and reconnects by itself: what a site
/// keeps to its primary.
pub fn lazy_channel(url: &str, tls: &ClientTls) -> Result<Channel, String> {
    Ok(endpoint(url, tls)?.connect_lazy())
}

/// Which of the primary's logs a [`GrpcLogSource`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    Settings,
    Events,
}

/// Whether a stream broke on a message over the size limit (either side's): tonic says so
/// with OUT_OF_RANGE and this wording, and a retry would meet the same message.
fn too_large(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::OutOfRange && s.message().contains("message length too large")
}

/// Reads one of the primary's logs over gRPC.
pub struct GrpcLogSource {
    pub primary: String,
    pub channel: Channel,
    pub token: Token,
    pub site_id: String,
    pub log: LogKind,
}

type BoxedReceived = Pin<Box<dyn Stream<Item = Result<Received, SourceError>> + Send>>;

impl LogSource for GrpcLogSource {
    type Stream = BoxedReceived;

    async fn open(
        &self,
        from_index: u64,
        epoch: u64,
        proof: Option<Promotion>,
    ) -> Result<BoxedReceived, OpenError> {
        let mut client = pb::ReplicationClient::new(self.channel.clone());
        let req = authorized(
            pb::StreamLogRequest {
                from_index,
                site_id: self.site_id.clone(),
                epoch,
                proof: proof.as_ref().map(convert::promotion),
            },
            &self.token,
        )
        .map_err(|e| OpenError::from(SourceError(e)))?;
        let primary = self.primary.clone();
        let opened = match self.log {
            LogKind::Settings => client.stream_settings(req).await,
            LogKind::Events => client.stream_events(req).await,
        };
        let stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) if error::is_fenced(&s) => {
                return Err(OpenError::Fenced(format!("{primary}: {}", s.message())))
            }
            Err(s) => {
                let refused = format!("{primary} refused the stream: {}", s.message());
                return Err(SourceError(refused).into());
            }
        };
        Ok(Box::pin(stream.map(move |item| {
            match item {
                // The primary would send the same message again on every connection.
                Ok(m) => Ok(convert::received(m)
                    .unwrap_or_else(|e| Received::Unreadable(format!("from {primary}: {e}")))),
                Err(s) if too_large(&s) => Ok(Received::Unreadable(format!(
                    "from {primary}: a log message is larger than a stream message may be: {}",
                    s.message()
                ))),
                Err(s) => Err(SourceError(format!(
                    "stream from {primary} failed: {}",
                    s.message()
                ))),
            }
        })))
    }
}

/// Delivers fences over gRPC (`ReplicationService.Fence`), as this site.
pub struct GrpcFencer {
    pub tls: ClientTls,
    pub token: Token,
}

impl FenceSender for GrpcFencer {
    async fn send(
        &self,
        target: &str,
        site_id: &str,
        epoch: u64,
        proof: Option<Promotion>,
    ) -> Result<(), DeliveryError> {
        let channel = connect(target, &self.tls)
            .await
            .map_err(DeliveryError::Unreachable)?;
        let mut req = authorized(
            pb::FenceRequest {
                epoch,
                site_id: site_id.to_string(),
                proof: proof.as_ref().map(convert::promotion),
            },
            &self.token,
        )
        .map_err(DeliveryError::Refused)?;
        req.set_timeout(CALL_TIMEOUT);
        let mut client = pb::ReplicationClient::new(channel);
        match client.fence(req).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                Err(DeliveryError::Refused(s.message().to_string()))
            }
            Err(s) => Err(DeliveryError::Unreachable(s.message().to_string())),
        }
    }
}

/// Calls `FetchObject` on `channel`'s site.
pub async fn fetch_object(
    channel: Channel,
    token: &Token,
    site_id: &str,
    name: &str,
    sha256: &str,
) -> Result<tonic::Streaming<pb::PullResponse>, tonic::Status> {
    let mut client = pb::ReplicationClient::new(channel);
    let req = authorized(
        pb::FetchObjectRequest {
            name: name.to_string(),
            sha256: sha256.to_string(),
            site_id: site_id.to_string(),
        },
        token,
    )
    .map_err(|e| error::plain(ErrorKind::Internal, e))?;
    Ok(client.fetch_object(req).await?.into_inner())
}

/// Fetches object bytes from the primary for the sync workers.
pub struct GrpcObjectSource {
    pub primary: String,
    pub channel: Channel,
    pub token: Token,
    pub site_id: String,
}

type BoxedChunks = Pin<Box<dyn Stream<Item = Result<Vec<u8>, SourceError>> + Send>>;

impl ObjectSource for GrpcObjectSource {
    type Chunks = BoxedChunks;

    async fn fetch(&self, name: &str, sha256: &str) -> Result<BoxedChunks, FetchError> {
        let primary = self.primary.clone();
        let failed = move |s: tonic::Status| SourceError(format!("{primary}: {}", s.message()));
        let mut stream = match fetch_object(
            self.channel.clone(),
            &self.token,
            &self.site_id,
            name,
            sha256,
        )
        .await
        {
            Ok(s) => s,
            // Replaced or deleted since the event this site has: the newer event follows.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                return Err(FetchError::Superseded(s.message().to_string()))
            }
            Err(s) => return Err(failed(s).into()),
        };
        match stream.message().await.map_err(failed.clone())? {
            Some(pb::PullResponse {
                part: Some(pb::pull_response::Part::Header(_)),
            }) => {}
            _ => {
                let site = &self.primary;
                return Err(SourceError(format!("{site} sent no header")).into());
            }
        }
        Ok(Box::pin(stream.map(move |item| match item {
            Ok(pb::PullResponse {
                part: Some(pb::pull_response::Part::Chunk(c)),
            }) => Ok(c),
            Ok(_) => Err(SourceError("a second header came".into())),
            Err(s) => Err(failed(s)),
        })))
    }
}

/// The secondaries a primary repairs a damaged copy from: those whose latest report carries
/// an `advertise_url`, most recently heard first, asked with `FetchObject` as this site
/// (its own token; every site is registered in the settings log, so a secondary knows it).
/// A secondary answers only with a copy it verified; the bytes are checked here anyway.
pub struct GrpcPeers {
    pub site: Arc<Site>,
}

impl GrpcPeers {
    fn url_of(&self, peer: &str) -> Result<String, SourceError> {
        let (report, _) = self
            .site
            .reports
            .get(peer)
            .ok_or_else(|| SourceError(format!("no report from {peer}")))?;
        let url = report
            .advertise_url
            .ok_or_else(|| SourceError(format!("{peer} reports no advertise_url")))?;
        // This site's token goes there: the same plaintext rule as for any site it calls.
        check_plaintext(
            &url,
            self.site.server_tls.is_some(),
            self.site.allow_plaintext,
        )
        .map_err(SourceError)?;
        Ok(url)
    }
}

impl Peers for GrpcPeers {
    type Chunks = BoxedChunks;

    fn peers(&self) -> Vec<String> {
        let settings = &self.site.settings;
        let own = settings.site_id();
        let mut reports: Vec<_> = self
            .site
            .reports
            .all()
            .into_iter()
            .filter(|(r, _)| {
                r.site_id != own
                    && r.role == Role::Secondary
                    && r.advertise_url.is_some()
                    && settings.is_site(&r.site_id)
            })
            .collect();
        reports.sort_by_key(|(_, received)| std::cmp::Reverse(*received));
        reports.into_iter().map(|(r, _)| r.site_id).collect()
    }

    async fn fetch_from(
        &self,
        peer: &str,
        name: &str,
        sha256: &str,
    ) -> Result<BoxedChunks, SourceError> {
        let url = self.url_of(peer)?;
        let channel = connect(&url, &self.site.client_tls)
            .await
            .map_err(SourceError)?;
        let source = GrpcObjectSource {
            primary: format!("{peer} at {url}"),
            channel,
            token: self.site.site_token.clone(),
            site_id: self.site.settings.site_id().to_string(),
        };
        source.fetch(name, sha256).await.map_err(|e| match e {
            FetchError::Superseded(m) => SourceError(format!("{peer} at {url}: {m}")),
            FetchError::Failed(e) => e,
        })
    }

    fn counted(&self, outcome: Outcome) {
        self.site.counters.repair(outcome.label());
    }
}
