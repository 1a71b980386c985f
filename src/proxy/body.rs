//! Bodies as the proxy relays them: frame by frame as the other side asks for them (so a slow
//! reader slows the sender: backpressure, no buffer beyond one frame), each side allowed to go
//! silent for at most its timeout, and a request body's frames the gate already read replayed
//! first, exactly as they came.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// Why a relayed body stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the {side} sent nothing for {:.0}s in the middle of a body", .idle.as_secs_f64())]
    Idle { side: &'static str, idle: Duration },
    #[error("reading the {side}'s body failed: {source}")]
    Read {
        side: &'static str,
        source: hyper::Error,
    },
}

/// A body relayed from one side to the other.
pub struct Relay<B> {
    /// Frames read before (for the gate), sent first.
    replay: VecDeque<Frame<Bytes>>,
    /// What is still to come; `None` once it ended.
    rest: Option<B>,
    side: &'static str,
    idle: Duration,
    /// Armed while `rest` is pending; re-armed on every frame.
    timer: Pin<Box<Sleep>>,
    armed: bool,
    /// Told once the body has been read to its end (the response timeout starts then).
    ended: Option<Arc<Notify>>,
}

impl<B> Relay<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    pub fn new(rest: B, side: &'static str, idle: Duration) -> Relay<B> {
        Relay {
            replay: VecDeque::new(),
            rest: Some(rest),
            side,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            armed: false,
            ended: None,
        }
    }

    /// Tells `ended` once the whole body has been read (at once if there is none).
    pub fn on_end(mut self, ended: Arc<Notify>) -> Relay<B> {
        if self.is_end_stream() {
            ended.notify_one();
        } else {
            self.ended = Some(ended);
        }
        self
    }

    /// Reads frames until at least `limit` data bytes have arrived or the body ends, keeping
    /// them to replay. Returns the data bytes read (at most one frame past `limit`).
    pub async fn read_up_to(&mut self, limit: usize) -> Result<Vec<u8>, RelayError> {
        let mut data = Vec::new();
        while data.len() < limit {
            let frame = std::future::poll_fn(|cx| self.poll_rest(cx)).await;
            match frame {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        data.extend_from_slice(d.chunk());
                    }
                    self.replay.push_back(frame);
                }
            }
        }
        Ok(data)
    }

    fn finish(&mut self) {
        self.rest = None;
        if let Some(n) = self.ended.take() {
            n.notify_one();
        }
    }

    fn poll_rest(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.armed = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(source))) => {
                self.rest = None;
                Poll::Ready(Some(Err(RelayError::Read {
                    side: self.side,
                    source,
                })))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !self.armed {
                    self.timer.as_mut().reset(Instant::now() + self.idle);
                    self.armed = true;
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.rest = None;
                        Poll::Ready(Some(Err(RelayError::Idle {
                            side: self.side,
                            idle: self.idle,
                        })))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = RelayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RelayError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.replay.pop_front() {
            if this.replay.is_empty() && this.rest.as_ref().is_none_or(|r| r.is_end_stream()) {
                // The gate read it all: the body ends with this frame.
                this.finish();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        this.poll_rest(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let replay: u64 = self
            .replay
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.remaining() as u64)
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map(|r| r.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0));
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + replay);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + replay);
        }
        hint
    }
}

/// Whether `error` (as hyper or the client hands it back) is a relayed body's own failure,
/// and which.
pub fn relay_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a RelayError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(r) = e.downcast_ref::<RelayError>() {
            return Some(r);
        }
        cause = e.source();
    }
    None
}
