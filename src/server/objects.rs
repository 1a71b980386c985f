//! `ObjectService`: push, pull, stat, list and delete objects. The token is checked before a
//! call reaches this file; [`Caller`] says which one it was.
//!
//! A secondary forwards writes to the primary over one shared connection, relaying the
//! stream chunk by chunk (nothing is buffered beyond a few chunks) and always ending it
//! with a trailer, so a relay cut short can never be committed as a shorter object.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use super::auth::Caller;
use super::client::{authorized, fetch_object};
use super::convert;
use super::error::{self, PrimaryUnreachable};
use super::object_ops;
use super::pb;
use super::Site;
use crate::objects::{
    parse_kind, parse_sha256, ObjectError, ObjectName, Proxied, Route, WriteGuard,
};
use crate::settings::validate_actor;
use crate::types::{validate_site_id, ErrorKind};

/// Chunks relayed between the client and the primary at a time.
const RELAY_QUEUE: usize = 4;

pub type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullResponse, Status>> + Send>>;

pub struct ObjectSvc {
    site: Arc<Site>,
}

impl ObjectSvc {
    pub fn new(site: Arc<Site>) -> ObjectSvc {
        ObjectSvc { site }
    }
}

/// The next message of a push. A client that sends nothing for `idle` loses its push:
/// otherwise it would hold a write in flight, and keep maintenance mode from draining,
/// forever.
///
/// A push still receiving when its site stops (after the shutdown timeout, or to open again
/// with a new placement) ends with UNAVAILABLE, and one an admin aborts (`write`, once it
/// is in flight) with ABORTED; nothing of either is stored.
async fn next(
    site: &Site,
    write: Option<&WriteGuard>,
    incoming: &mut Streaming<pb::PushRequest>,
) -> Result<Option<pb::PushRequest>, Status> {
    let idle = site.limits.stream_idle_timeout;
    let aborted = async {
        match write {
            Some(w) => w.aborted().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = aborted => Err(error::status(ObjectError::Aborted(
            site.settings.site_id().to_string(),
        ))),
        message = tokio::time::timeout(idle, incoming.message()) => match message {
            Ok(message) => message,
            Err(_) => Err(error::status(ObjectError::Idle(idle.as_secs_f64()))),
        },
        _ = site.shutdown.cancelled() => Err(error::status(ObjectError::Stopping(
            site.settings.site_id().to_string(),
        ))),
    }
}

fn name(raw: &str) -> Result<ObjectName, Status> {
    ObjectName::parse(raw).map_err(Status::invalid_argument)
}

/// The forwarding site, which only that site (with its registered token) may claim to be;
/// a site token writes nothing else.
fn proxied(p: Option<pb::ProxiedBy>, caller: Option<&Caller>) -> Result<Option<Proxied>, Status> {
    match p {
        // A site's credential is for its job: forwarding its users' writes, never writing
        // on its own account.
        None if caller.and_then(Caller::site).is_some() => Err(Status::permission_denied(
            "a site token writes only what its site forwards (proxied_by); push with the admin token",
        )),
        None => Ok(None),
        Some(_) if caller.and_then(Caller::site).is_none() => Err(Status::permission_denied(
            "only a site (with its registered token) can forward a write",
        )),
        Some(p) if validate_site_id(&p.site_id).is_err() => Err(Status::invalid_argument(
            "proxied_by names no valid site id: 1-64 letters, digits, '_', '.', '-'",
        )),
        Some(p) if caller.and_then(Caller::site) != Some(p.site_id.as_str()) => {
            Err(Status::permission_denied(format!(
                "this token is site {}'s; it cannot forward a write as site {:?}",
                caller.and_then(Caller::site).unwrap_or_default(),
                p.site_id
            )))
        }
        Some(p) => Ok(Some(Proxied {
            site_id: p.site_id,
            epoch: p.epoch,
        })),
    }
}

/// Who a write is recorded as: the actor given (checked before anything is received or
/// stored: it enters the event log), or who the caller is; forwarded writes name the site.
fn author(
    actor: &str,
    proxied: Option<&Proxied>,
    caller: Option<&Caller>,
) -> Result<String, Status> {
    if !actor.is_empty() {
        validate_actor(actor).map_err(Status::invalid_argument)?;
    }
    let who = if actor.is_empty() {
        match caller {
            Some(Caller::Site(_)) => "site",
            _ => "admin",
        }
    } else {
        actor
    };
    Ok(match proxied {
        Some(p) => format!("{who} via {}", p.site_id),
        None => who.to_string(),
    })
}

#[tonic::async_trait]
impl pb::object_service_server::ObjectService for ObjectSvc {
    async fn push(
        &self,
        req: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let mut incoming = req.into_inner();
        let header = match next(&self.site, None, &mut incoming).await? {
            Some(pb::PushRequest {
                part: Some(pb::push_request::Part::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "a push starts with its header (name, kind)",
                ))
            }
        };
        let object = name(&header.name)?;
        let kind = parse_kind(&header.kind).map_err(Status::invalid_argument)?;
        let expected_sha = match header.sha256.as_str() {
            "" => None,
            s => Some(parse_sha256(s).map_err(Status::invalid_argument)?),
        };
        let proxied = proxied(header.proxied_by.clone(), caller.as_ref())?;
        let who = author(&header.actor, proxied.as_ref(), caller.as_ref())?;
        let from = match &proxied {
            Some(p) => format!("{} (forwarded)", p.site_id),
            None => peer,
        };
        let objects = &self.site.objects;
        let write = objects
            .inflight()
            .begin_abortable(format!("push {object}"), from.clone());
        match objects.route(proxied.as_ref()).map_err(error::status)? {
            Route::Forward { primary } => {
                let mut reply = self
                    .forward_push(&primary, header, incoming, &write)
                    .await?;
                reply.proxied = true;
                Ok(Response::new(reply))
            }
            Route::Commit => {
                // A full disk refuses pushes before a byte is stored; deletes go on, as
                // they free space (a small event the disk reserve leaves room for).
                objects.disk().check_writable().map_err(error::status)?;
                let mut sink = objects.blobs().sink(None, header.size).map_err(|e| {
                    error::status(ObjectError::io("cannot start writing the object")(e))
                })?;
                let mut trailer = None;
                let mut received = 0u64;
                while let Some(msg) = next(&self.site, Some(&write), &mut incoming).await? {
                    match msg.part {
                        Some(pb::push_request::Part::Chunk(c)) if trailer.is_none() => {
                            received += c.len() as u64;
                            if header.size.is_some_and(|n| received > n) {
                                return Err(Status::invalid_argument(format!(
                                    "more bytes than the {} the header announced",
                                    header.size.unwrap_or(0)
                                )));
                            }
                            sink.write(c).await.map_err(|e| {
                                error::status(ObjectError::io("cannot write the object")(e))
                            })?;
                        }
                        Some(pb::push_request::Part::Trailer(t)) if trailer.is_none() => {
                            trailer = Some(t)
                        }
                        _ => return Err(Status::invalid_argument(
                            "after the header a push sends only chunks, then at most one trailer",
                        )),
                    }
                }
                if proxied.is_some() && trailer.is_none() {
                    return Err(Status::invalid_argument(
                        "a forwarded push must end with a trailer; this one was cut short",
                    ));
                }
                let (staged, digest) = sink
                    .finish()
                    .await
                    .map_err(|e| error::status(ObjectError::io("cannot write the object")(e)))?;
                let mut problems = Vec::new();
                if let Some(n) = header.size.filter(|n| *n != digest.size) {
                    problems.push(format!("the header announced {n} bytes"));
                }
                if let Some(sha) = expected_sha.filter(|s| *s != digest.sha256) {
                    problems.push(format!("the header announced sha256 {}", hex::encode(sha)));
                }
                if let Some(t) = &trailer {
                    if t.size != digest.size {
                        problems.push(format!("the trailer says {} bytes", t.size));
                    }
                    if !t.sha256.is_empty() && t.sha256 != digest.hex() {
                        problems.push(format!("the trailer says sha256 {}", t.sha256));
                    }
                }
                if !problems.is_empty() {
                    drop(staged);
                    return Err(error::status(ObjectError::Mismatch(format!(
                        "received {} bytes with sha256 {}, but {}; nothing was stored",
                        digest.size,
                        digest.hex(),
                        problems.join(" and ")
                    ))));
                }
                let meta = objects
                    .commit_put(&object, &kind, staged, digest, &who)
                    .await
                    .map_err(error::status)?;
                info!(object = %object, version = meta.version, size = meta.size, %from, "object committed");
                Ok(Response::new(pb::PushResponse {
                    object: Some(convert::object_meta(&meta)),
                    proxied: false,
                    committed_by: self.site.settings.site_id().to_string(),
                }))
            }
        }
    }

    type PullStream = PullStream;

    async fn pull(&self, req: Request<pb::PullRequest>) -> Result<Response<PullStream>, Status> {
        let object = name(&req.get_ref().name)?;
        let objects = &self.site.objects;
        match local_stream(&self.site, &object, None).await {
            Ok(Some(stream)) => return Ok(Response::new(stream)),
            Ok(None) => {}
            // This site's bucket does not answer: a secondary reads through from the
            // primary, as for a copy it does not hold.
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && objects.blobs().fault().is_some()
                    && self.site.primary_channel.is_some() =>
            {
                tracing::warn!(object = %object, error = %s.message(), "this site's object storage fails; reading through from the primary");
            }
            Err(s) => return Err(s),
        }
        let (Some(channel), Some(primary)) =
            (&self.site.primary_channel, objects.settings().primary())
        else {
            return Err(error::status(ObjectError::NotFound(object.to_string())));
        };
        // Not here (yet): read it through from the primary, and say so.
        let stream = match fetch_object(
            channel.clone(),
            &self.site.site_token,
            self.site.settings.site_id(),
            object.as_str(),
            "",
        )
        .await
        {
            Ok(stream) => stream,
            Err(raw) => {
                // The primary is gone (not: it answered with a refusal): the newest
                // verified copy here, marked stale, unless the client wants the strict
                // answer.
                let gone = unanswered(&raw) && !req.get_ref().no_stale;
                let s = forwarded_status(raw, primary);
                if gone {
                    if let Some(stale) = object_ops::stale_stream(&self.site, &object, &s).await? {
                        return Ok(Response::new(stale));
                    }
                }
                return Err(s);
            }
        };
        let primary = primary.to_string();
        Ok(Response::new(Box::pin(stream.map(
            move |item| match item {
                Ok(mut m) => {
                    if let Some(pb::pull_response::Part::Header(h)) = &mut m.part {
                        h.read_through = true;
                    }
                    Ok(m)
                }
                Err(s) => Err(forwarded_status(s, &primary)),
            },
        ))))
    }

    async fn stat(
        &self,
        req: Request<pb::StatRequest>,
    ) -> Result<Response<pb::ObjectInfo>, Status> {
        let object = name(&req.get_ref().name)?;
        let objects = &self.site.objects;
        let meta = objects.meta(object.as_str()).map_err(error::status)?;
        let row = objects.row(object.as_str()).map_err(error::status)?;
        if meta.is_none() && row.is_none() {
            return Err(error::status(ObjectError::NotFound(object.to_string())));
        }
        Ok(Response::new(pb::ObjectInfo {
            object: meta.as_ref().map(convert::object_meta),
            replica: row.as_ref().map(convert::replica),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let req = req.into_inner();
        if req.prefix.len() > crate::objects::name::MAX_NAME_BYTES {
            return Err(Status::invalid_argument(
                "the prefix is longer than any name",
            ));
        }
        if !req.page_token.is_empty() {
            name(&req.page_token).map_err(|_| {
                Status::invalid_argument("page_token is not one this service returned")
            })?;
        }
        let size = match req.page_size {
            0 => crate::objects::DEFAULT_PAGE,
            n => n as usize,
        };
        let (page, next) = self
            .site
            .objects
            .list(&req.prefix, &req.page_token, size)
            .map_err(error::status)?;
        Ok(Response::new(pb::ListResponse {
            objects: page.iter().map(convert::object_meta).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn list_objects(
        &self,
        req: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        object_ops::list_objects(&self.site, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn resync_objects(
        &self,
        req: Request<pb::ResyncObjectsRequest>,
    ) -> Result<Response<pb::ResyncObjectsResponse>, Status> {
        object_ops::resync_objects(&self.site, req).await
    }

    async fn reverify_objects(
        &self,
        req: Request<pb::ReverifyObjectsRequest>,
    ) -> Result<Response<pb::ReverifyObjectsResponse>, Status> {
        object_ops::reverify_objects(&self.site, req).await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = req.extensions().get::<Caller>().cloned();
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let req = req.into_inner();
        let object = name(&req.name)?;
        let proxied = proxied(req.proxied_by.clone(), caller.as_ref())?;
        let who = author(&req.actor, proxied.as_ref(), caller.as_ref())?;
        let from = proxied
            .as_ref()
            .map_or(peer, |p| format!("{} (forwarded)", p.site_id));
        let objects = &self.site.objects;
        let _write = objects.inflight().begin(format!("delete {object}"), from);
        match objects.route(proxied.as_ref()).map_err(error::status)? {
            Route::Forward { primary } => {
                let channel = self.site.primary_channel.clone().ok_or_else(|| {
                    error::status(ObjectError::Refused {
                        message: "no primary to forward to".into(),
                        primary: None,
                    })
                })?;
                let mut client = pb::object_service_client::ObjectServiceClient::new(channel);
                let forwarded = pb::DeleteRequest {
                    name: req.name,
                    proxied_by: Some(self.proxied_by()),
                    actor: req.actor,
                };
                let request = authorized(forwarded, &self.site.site_token)
                    .map_err(|e| error::plain(ErrorKind::Internal, e))?;
                let mut reply = client
                    .delete(request)
                    .await
                    .map_err(|s| forwarded_status(s, &primary))?
                    .into_inner();
                reply.proxied = true;
                Ok(Response::new(reply))
            }
            Route::Commit => {
                let version = objects
                    .commit_delete(&object, &who)
                    .await
                    .map_err(error::status)?;
                info!(object = %object, version, "object deleted");
                Ok(Response::new(pb::DeleteResponse {
                    version,
                    proxied: false,
                }))
            }
        }
    }
}

impl ObjectSvc {
    fn proxied_by(&self) -> pb::ProxiedBy {
        pb::ProxiedBy {
            site_id: self.site.settings.site_id().to_string(),
            epoch: self.site.settings.epoch(),
        }
    }

    /// Relays a push to the primary: the header marked as forwarded, each chunk as it
    /// arrives, then a trailer with what was relayed. If the client's stream fails, the
    /// call to the primary is dropped (cancelled) without a trailer, so nothing is stored.
    async fn forward_push(
        &self,
        primary: &str,
        mut header: pb::PushHeader,
        mut incoming: Streaming<pb::PushRequest>,
        write: &WriteGuard,
    ) -> Result<pb::PushResponse, Status> {
        let channel = self.site.primary_channel.clone().ok_or_else(|| {
            error::status(ObjectError::Refused {
                message: "no primary to forward to".into(),
                primary: None,
            })
        })?;
        header.proxied_by = Some(self.proxied_by());
        let (tx, rx) = tokio::sync::mpsc::channel(RELAY_QUEUE);
        let first = pb::PushRequest {
            part: Some(pb::push_request::Part::Header(header)),
        };
        // The channel has room: the first send cannot wait.
        tx.send(first)
            .await
            .map_err(|_| error::plain(ErrorKind::Internal, "the relay closed before it started"))?;
        let request = authorized(ReceiverStream::new(rx), &self.site.site_token)
            .map_err(|e| error::plain(ErrorKind::Internal, e))?;
        let mut client = pb::ObjectClient::new(channel);
        let call = client.push(request);
        tokio::pin!(call);
        // The relay owns the sender: when it ends, so does the stream to the primary. Only a
        // relay that completed sends the trailer, and the primary commits nothing forwarded
        // without one.
        let relay = async move {
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            let mut client_trailer = None;
            while let Some(msg) = next(&self.site, Some(write), &mut incoming).await? {
                match msg.part {
                    Some(pb::push_request::Part::Chunk(c)) if client_trailer.is_none() => {
                        use sha2::Digest;
                        hasher.update(&c);
                        size += c.len() as u64;
                        let chunk = pb::PushRequest {
                            part: Some(pb::push_request::Part::Chunk(c)),
                        };
                        if tx.send(chunk).await.is_err() {
                            // The primary ended the call: its answer says why.
                            return Ok(());
                        }
                    }
                    Some(pb::push_request::Part::Trailer(t)) if client_trailer.is_none() => {
                        client_trailer = Some(t)
                    }
                    _ => {
                        return Err(Status::invalid_argument(
                            "after the header a push sends only chunks, then at most one trailer",
                        ))
                    }
                }
            }
            use sha2::Digest;
            let ours = hex::encode(hasher.finalize());
            if let Some(t) = client_trailer {
                if t.size != size || (!t.sha256.is_empty() && t.sha256 != ours) {
                    return Err(Status::invalid_argument(format!(
                        "received {size} bytes with sha256 {ours}, but the trailer says {} bytes, sha256 {:?}; nothing was stored",
                        t.size, t.sha256
                    )));
                }
            }
            let trailer = pb::PushRequest {
                part: Some(pb::push_request::Part::Trailer(pb::PushTrailer {
                    size,
                    sha256: ours,
                })),
            };
            let _ = tx.send(trailer).await;
            Ok::<(), Status>(())
        };
        tokio::pin!(relay);
        let answer = tokio::select! {
            relayed = &mut relay => {
                // A failed relay returns here, dropping (cancelling) the call.
                relayed?;
                (&mut call).await
            }
            answer = &mut call => answer,
        };
        answer
            .map(|r| r.into_inner())
            .map_err(|s| forwarded_status(s, primary))
    }
}

/// A status from the primary, passed on as it is — except a transport failure, which says
/// the primary cannot be reached.
pub fn forwarded_status(s: Status, primary: &str) -> Status {
    if !unanswered(&s) {
        return s;
    }
    error::status(PrimaryUnreachable {
        primary: primary.to_string(),
        detail: s.message().to_string(),
    })
}

/// Whether a call to another site failed without an answer from it: a status made on this
/// side (no response headers), because the connection failed, was cut (a peer killed
/// mid-call reads as "operation was canceled") or timed out. A status the other site sent
/// always carries headers, and stands as it is.
pub fn unanswered(s: &Status) -> bool {
    s.metadata().is_empty()
        && matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        )
}

/// Streams this site's copy of `object`'s current version (optionally only if its checksum
/// is `sha256`), or `None` when this site does not hold it.
pub async fn local_stream(
    site: &Site,
    object: &ObjectName,
    sha256: Option<&str>,
) -> Result<Option<PullStream>, Status> {
    // The bytes of a version can be replaced between the lookup and the open: look again.
    for _ in 0..3 {
        let Some(meta) = site
            .objects
            .local_copy(object.as_str())
            .map_err(error::status)?
        else {
            return Ok(None);
        };
        if let Some(want) = sha256.filter(|w| *w != meta.sha256) {
            return Err(error::status(ObjectError::Superseded(format!(
                "{object}: the current version has sha256 {}, not {want}",
                meta.sha256
            ))));
        }
        match site
            .objects
            .blobs()
            .reader(object.as_str(), &meta.sha256)
            .await
        {
            Ok(rx) => {
                let header = pb::PullResponse {
                    part: Some(pb::pull_response::Part::Header(pb::PullHeader {
                        object: Some(convert::object_meta(&meta)),
                        read_through: false,
                        stale: None,
                    })),
                };
                let chunks = ReceiverStream::new(rx).map(|c| match c {
                    Ok(chunk) => Ok(pb::PullResponse {
                        part: Some(pb::pull_response::Part::Chunk(chunk)),
                    }),
                    Err(e) => Err(error::status(ObjectError::io("cannot read the object")(e))),
                });
                return Ok(Some(Box::pin(tokio_stream::once(Ok(header)).chain(chunks))));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(error::status(ObjectError::io(format!(
                    "cannot open {object}"
                ))(e)))
            }
        }
    }
    // Still missing while the registry names it: likely damage rather than a replacement.
    // The verifier looks at it now (and on the primary puts it back from a secondary).
    if let Err(e) = site.objects.suspect(object.as_str()) {
        tracing::warn!(object = %object, error = %e, "cannot queue the verification of a missing copy");
    }
    Err(error::status(ObjectError::Replacing(object.to_string())))
}
