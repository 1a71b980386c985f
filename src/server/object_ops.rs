//! `ObjectService.ListObjects`, `ResyncObjects` and `ReverifyObjects`, and the stale read a
//! `Pull` at a secondary falls back to when its read-through cannot reach the primary.
//! Thin: check the request at this edge, call `Objects`, convert.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::auth::Caller;
use super::convert;
use super::error;
use super::pb;
use super::Site;
use crate::objects::{
    ObjectError, ObjectName, Objects, Operation, Scope, StateFilter, DEFAULT_PAGE, MAX_PAGE,
};
use crate::settings::validate_actor;

/// What a stale read streams (as `Pull` does).
pub type StaleStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::PullResponse, Status>> + Send>>;

/// A listing's state filter from the wire.
fn state_filter(raw: i32) -> Result<Option<StateFilter>, Status> {
    use pb::ObjectStateFilter as F;
    Ok(match F::try_from(raw) {
        Ok(F::Unspecified) => None,
        Ok(F::Synced) => Some(StateFilter::Synced),
        Ok(F::Pending) => Some(StateFilter::Pending),
        Ok(F::Started) => Some(StateFilter::Started),
        Ok(F::Failed) => Some(StateFilter::Failed),
        Ok(F::VerificationFailed) => Some(StateFilter::VerificationFailed),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "state {raw} is not an ObjectStateFilter"
            )))
        }
    })
}

/// A prefix is the beginning of some valid name (or empty).
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    ObjectName::parse(&format!("{prefix}x"))
        .map(drop)
        .map_err(|e| format!("the prefix {prefix:?} cannot begin a name: {e}"))
}

/// Runs registry work off the async threads.
async fn blocking<T: Send + 'static>(
    objects: &Arc<Objects>,
    f: impl FnOnce(&Objects) -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, Status> {
    let objects = Arc::clone(objects);
    tokio::task::spawn_blocking(move || f(&objects))
        .await
        .map_err(|e| {
            error::plain(
                crate::types::ErrorKind::Internal,
                format!("a registry task failed: {e}"),
            )
        })?
        .map_err(error::status)
}

pub async fn list_objects(
    site: &Site,
    req: pb::ListObjectsRequest,
) -> Result<pb::ListObjectsResponse, Status> {
    let state = state_filter(req.state)?;
    check_prefix(&req.prefix).map_err(Status::invalid_argument)?;
    if !req.after.is_empty() {
        ObjectName::parse(&req.after)
            .map_err(|e| Status::invalid_argument(format!("after is not a name: {e}")))?;
    }
    let limit = match req.limit {
        None => DEFAULT_PAGE,
        Some(n) if n == 0 || n as usize > MAX_PAGE => {
            return Err(Status::invalid_argument(format!(
                "limit must be 1 to {MAX_PAGE} (found {n})"
            )))
        }
        Some(n) => n as usize,
    };
    let (prefix, after) = (req.prefix, req.after);
    let (page, next) = blocking(&site.objects, move |o| {
        o.list_rows(state, &prefix, &after, limit)
    })
    .await?;
    Ok(pb::ListObjectsResponse {
        objects: page
            .iter()
            .map(|l| pb::ListedObject {
                name: l.name.clone(),
                object: l.meta.as_ref().map(convert::object_meta),
                replica: Some(convert::replica(&l.row)),
            })
            .collect(),
        next_after: next.unwrap_or_default(),
    })
}

/// The scope of a resync or reverification, and who asked; only the admin token.
fn marking(
    caller: Option<&Caller>,
    name: &str,
    scope: i32,
    actor: &str,
) -> Result<(Scope, String), Status> {
    if caller != Some(&Caller::Admin) {
        return Err(Status::permission_denied(
            "resync and reverify need the admin token; a site's token is not allowed here",
        ));
    }
    let scope = match (pb::ObjectsScope::try_from(scope), name) {
        (Ok(pb::ObjectsScope::Unspecified), "") => {
            return Err(Status::invalid_argument(
                "name an object, or ask for the failed ones or all",
            ))
        }
        (Ok(pb::ObjectsScope::Unspecified), n) => Scope::One(
            ObjectName::parse(n)
                .map_err(Status::invalid_argument)?
                .to_string(),
        ),
        (Ok(_), n) if !n.is_empty() => {
            return Err(Status::invalid_argument(
                "a name and a scope of many objects are exclusive",
            ))
        }
        (Ok(pb::ObjectsScope::Failed), _) => Scope::Failed,
        (Ok(pb::ObjectsScope::All), _) => Scope::All,
        (Err(_), _) => {
            return Err(Status::invalid_argument(format!(
                "scope {scope} is not an ObjectsScope"
            )))
        }
    };
    let by = if actor.is_empty() {
        "admin".to_string()
    } else {
        validate_actor(actor).map_err(Status::invalid_argument)?;
        actor.to_string()
    };
    Ok((scope, by))
}

fn marked(site: &Site, op: &Operation) -> pb::ObjectsMarked {
    let progress = site
        .objects
        .counts()
        .ok()
        .and_then(|c| {
            let verb = match op.kind {
                crate::objects::OperationKind::Resync => "resync ",
                crate::objects::OperationKind::Reverify => "reverify ",
            };
            c.progress.into_iter().find(|l| l.starts_with(verb))
        })
        .unwrap_or_default();
    pb::ObjectsMarked {
        marked: op.marked,
        skipped: op.skipped,
        progress,
    }
}

pub async fn resync_objects(
    site: &Site,
    req: Request<pb::ResyncObjectsRequest>,
) -> Result<Response<pb::ResyncObjectsResponse>, Status> {
    let caller = req.extensions().get::<Caller>().cloned();
    let req = req.into_inner();
    let (scope, by) = marking(caller.as_ref(), &req.name, req.scope, &req.actor)?;
    let op = blocking(&site.objects, move |o| o.resync(&scope, &by)).await?;
    info!(scope = %op.scope, marked = op.marked, by = %op.by, "resync asked");
    Ok(Response::new(pb::ResyncObjectsResponse {
        result: Some(marked(site, &op)),
    }))
}

pub async fn reverify_objects(
    site: &Site,
    req: Request<pb::ReverifyObjectsRequest>,
) -> Result<Response<pb::ReverifyObjectsResponse>, Status> {
    let caller = req.extensions().get::<Caller>().cloned();
    let req = req.into_inner();
    let (scope, by) = marking(caller.as_ref(), &req.name, req.scope, &req.actor)?;
    let op = blocking(&site.objects, move |o| o.reverify(&scope, &by)).await?;
    info!(scope = %op.scope, marked = op.marked, by = %op.by, "reverify asked");
    Ok(Response::new(pb::ReverifyObjectsResponse {
        result: Some(marked(site, &op)),
    }))
}

/// Streams the newest verified copy of `object` held here, marked stale, or `None` when
/// there is none (then the caller's UNAVAILABLE stands).
pub async fn stale_stream(
    site: &Site,
    object: &ObjectName,
    failure: &Status,
) -> Result<Option<StaleStream>, Status> {
    let name = object.to_string();
    let Some(copy) = blocking(&site.objects, move |o| o.stale_copy(&name)).await? else {
        return Ok(None);
    };
    let rx = match site
        .objects
        .blobs()
        .reader(object.as_str(), &copy.meta.sha256)
        .await
    {
        Ok(rx) => rx,
        // Replaced or removed meanwhile: nothing to fall back to.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(error::status(ObjectError::io(format!(
                "cannot open {object}"
            ))(e)))
        }
    };
    let now = crate::log::now_ms();
    let current = copy.meta.version == copy.current.version;
    let mut meta = convert::object_meta(&copy.meta);
    if copy.meta.updated_at_ms == 0 {
        meta.updated_at = None;
    }
    let stale = pb::StaleRead {
        version: copy.meta.version,
        current_version: copy.current.version,
        superseded_at: (!current).then(|| convert::timestamp(copy.current.updated_at_ms)),
        age_seconds: if current {
            0.0
        } else {
            (now - copy.current.updated_at_ms).max(0) as f64 / 1000.0
        },
        verified_at: Some(convert::timestamp(copy.verified_at_ms)),
        reason: failure.message().to_string(),
    };
    warn!(object = %object, version = stale.version, current = stale.current_version, "primary unreachable; serving a stale verified copy");
    let header = pb::PullResponse {
        part: Some(pb::pull_response::Part::Header(pb::PullHeader {
            object: Some(meta),
            read_through: false,
            stale: Some(stale),
        })),
    };
    let chunks = ReceiverStream::new(rx).map(|c| match c {
        Ok(chunk) => Ok(pb::PullResponse {
            part: Some(pb::pull_response::Part::Chunk(chunk)),
        }),
        Err(e) => Err(error::status(ObjectError::io("cannot read the object")(e))),
    });
    Ok(Some(Box::pin(tokio_stream::once(Ok(header)).chain(chunks))))
}
