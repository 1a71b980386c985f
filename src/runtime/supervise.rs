//! Supervision of a site's background tasks: a task that fails, panics or ends early stops
//! the site with an error, so the process exits non-zero rather than serve stale data.

use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use tracing::{error, warn};

use super::SiteError;
use crate::server::ServeError;
use crate::store::Disk;

/// How long the tasks of a stopping site have to end before they are aborted.
const TASK_STOP_GRACE: Duration = Duration::from_secs(2);

pub(super) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The background tasks of a site, each known by its name (also when it panics).
#[derive(Default)]
pub(super) struct Tasks {
    set: JoinSet<Result<(), SiteError>>,
    names: std::collections::HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = Result<(), SiteError>> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        self.names.insert(id, name);
    }

    /// The next task to end: its name, and its result or why it did not finish.
    async fn next(
        &mut self,
    ) -> Option<(
        &'static str,
        Result<Result<(), SiteError>, tokio::task::JoinError>,
    )> {
        let done = self.set.join_next_with_id().await?;
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let name = self.names.remove(&id).unwrap_or("a task");
        Some((name, done.map(|(_, r)| r)))
    }
}

/// Runs until `servers` end. A task that fails, panics, or ends by itself before shutdown
/// (a diverged follower waits instead) cancels `shutdown`, which stops the servers and the
/// other tasks; the first such failure is the result, so the process exits non-zero rather
/// than serve stale data. A full disk is the exception: a task that fails of it is noted on
/// `disk` and the site goes on serving reads, the mode and the gate; it opens again, with
/// every task, once space is freed (see `store::disk`).
pub(super) async fn supervise(
    servers: impl std::future::Future<Output = Result<(), ServeError>>,
    mut tasks: Tasks,
    shutdown: &CancellationToken,
    disk: &Disk,
) -> Result<(), SiteError> {
    tokio::pin!(servers);
    let mut failure: Option<SiteError> = None;
    let mut note = |name: &str, result: Result<Result<(), SiteError>, tokio::task::JoinError>| {
        let err = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(join) => SiteError::Panicked(format!("{name}: {join}")),
        };
        error!(task = name, error = %err, "critical task failed; shutting the site down");
        failure.get_or_insert(err);
    };
    let served = loop {
        tokio::select! {
            r = &mut servers => break r,
            Some((name, result)) = tasks.next(), if !tasks.set.is_empty() => {
                if let Ok(Err(e)) = &result {
                    if e.is_disk_full() && !shutdown.is_cancelled() {
                        error!(task = name, error = %e, "task stopped: the disk is full; the site goes on serving and opens again once space is freed");
                        disk.poison();
                        continue;
                    }
                }
                if result.as_ref().is_ok_and(|r| r.is_ok()) && !shutdown.is_cancelled() {
                    note(name, Ok(Err(SiteError::Panicked(format!("{name} stopped")))));
                } else {
                    note(name, result);
                }
                shutdown.cancel();
            }
        }
    };
    shutdown.cancel();
    // Every task stops on shutdown, but one stuck in a call to a site whose traffic is
    // dropped must not hold the stop (and a promotion's reopen) for long: past the grace,
    // what is left is aborted. Every task's work is crash-safe, as after `kill -9`.
    let stopped = tokio::time::timeout(TASK_STOP_GRACE, async {
        while let Some((name, result)) = tasks.next().await {
            note(name, result);
        }
    })
    .await;
    if stopped.is_err() {
        let left: Vec<&str> = tasks.names.values().copied().collect();
        warn!(tasks = ?left, grace_secs = TASK_STOP_GRACE.as_secs(), "tasks did not stop in time; aborting them");
        tasks.set.abort_all();
        while tasks.set.join_next().await.is_some() {}
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> Disk {
        Disk::new(&std::env::temp_dir())
    }

    /// Servers that run until shutdown, as the real ones do.
    fn servers(
        shutdown: &CancellationToken,
    ) -> impl std::future::Future<Output = Result<(), ServeError>> {
        let s = shutdown.clone();
        async move {
            s.cancelled().await;
            Ok(())
        }
    }

    /// A task that runs until shutdown and ends well.
    fn patient(tasks: &mut Tasks, shutdown: &CancellationToken) {
        let s = shutdown.clone();
        tasks.spawn("patient", async move {
            s.cancelled().await;
            Ok(())
        });
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_site_with_its_error() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::default();
        patient(&mut tasks, &shutdown);
        tasks.spawn("sync workers", async {
            Err(SiteError::Primary("the disk is gone".into()))
        });
        let r = supervise(servers(&shutdown), tasks, &shutdown, &disk()).await;
        assert!(shutdown.is_cancelled());
        assert!(matches!(r, Err(SiteError::Primary(m)) if m == "the disk is gone"));
    }

    #[tokio::test]
    async fn a_panicking_task_or_one_that_ends_early_is_a_failure() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::default();
        patient(&mut tasks, &shutdown);
        tasks.spawn("verifier", async { panic!("boom") });
        let r = supervise(servers(&shutdown), tasks, &shutdown, &disk()).await;
        assert!(
            matches!(&r, Err(SiteError::Panicked(m)) if m.starts_with("verifier: ") && m.contains("panic")),
            "{r:?}"
        );

        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::default();
        tasks.spawn("events follower", async { Ok(()) });
        let r = supervise(servers(&shutdown), tasks, &shutdown, &disk()).await;
        assert!(
            matches!(&r, Err(SiteError::Panicked(m)) if m == "events follower stopped"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_shutdown_with_healthy_tasks_is_a_success() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::default();
        patient(&mut tasks, &shutdown);
        patient(&mut tasks, &shutdown);
        shutdown.cancel();
        supervise(servers(&shutdown), tasks, &shutdown, &disk())
            .await
            .expect("a clean stop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_shutdown_is_aborted_after_the_grace() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::default();
        patient(&mut tasks, &shutdown);
        tasks.spawn("status reporter", std::future::pending());
        shutdown.cancel();
        let started = tokio::time::Instant::now();
        supervise(servers(&shutdown), tasks, &shutdown, &disk())
            .await
            .expect("a stop, not a failure");
        assert!(started.elapsed() >= TASK_STOP_GRACE);
    }
}
