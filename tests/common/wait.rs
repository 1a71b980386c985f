//! Waiting on conditions with deadlines: every wait in the tests and benches goes through
//! these, and ends as soon as its condition holds.

use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use super::DEADLINE;

/// Calls `probe` until it breaks with a value, sleeping as long as it asks between calls
/// (`Continue(pause)`). `None` once `deadline` has passed; the probe always runs at least
/// once, and the deadline is checked after each call.
pub fn poll_until<T>(
    deadline: Instant,
    mut probe: impl FnMut() -> ControlFlow<T, Duration>,
) -> Option<T> {
    loop {
        match probe() {
            ControlFlow::Break(v) => return Some(v),
            ControlFlow::Continue(pause) => {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(pause);
            }
        }
    }
}

/// Calls `probe` every `pause` until it returns `Some`, or panics with `what` once
/// `deadline` has passed.
pub fn wait_until<T>(
    what: &str,
    deadline: Instant,
    pause: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    poll_until(deadline, || match probe() {
        Some(v) => ControlFlow::Break(v),
        None => ControlFlow::Continue(pause),
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// The async [`poll_until`]: calls `probe` at once and then every `pause` (a zero pause
/// yields to the runtime between calls) until it returns `Some`; `None` once `deadline` has
/// passed.
pub async fn poll_until_async<T, F, Fut>(
    deadline: Instant,
    pause: Duration,
    mut probe: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let mut tick = (!pause.is_zero()).then(|| tokio::time::interval(pause));
    loop {
        match &mut tick {
            Some(tick) => {
                tick.tick().await;
            }
            None => tokio::task::yield_now().await,
        }
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Polls `probe` every 25 ms until it returns `Some`, or panics with `what` after the
/// [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until_async(Instant::now() + DEADLINE, Duration::from_millis(25), probe)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}
