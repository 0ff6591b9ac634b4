//! Task accounting: every proxy task is spawned counted, so the run can wait (bounded) for all
//! of them after it cancels the stop token; and the accept loop that hands each connection of a
//! listener to its own counted task.
//!
//! Invariant: an accept loop ends when the stop token is cancelled; an accept error (EMFILE, an
//! aborted handshake) backs off and keeps listening, it never ends the loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Counts the proxy's live tasks so the run can wait for them after `stop`.
#[derive(Clone)]
pub struct Tasks {
    live: Arc<watch::Sender<usize>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks {
            live: Arc::new(watch::channel(0).0),
        }
    }
}

struct TaskGuard(Arc<watch::Sender<usize>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Tasks {
    /// Spawns a counted task.
    pub fn spawn<Fut>(&self, fut: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.live.send_modify(|n| *n += 1);
        let guard = TaskGuard(self.live.clone());
        tokio::spawn(async move {
            let _guard = guard;
            fut.await;
        });
    }

    /// Tasks still running.
    pub fn live(&self) -> usize {
        *self.live.borrow()
    }

    /// Waits until every counted task has ended, at most `deadline`; false on timeout.
    pub async fn join(&self, deadline: Duration) -> bool {
        let mut rx = self.live.subscribe();
        let done = tokio::time::timeout(deadline, rx.wait_for(|n| *n == 0))
            .await
            .is_ok();
        done
    }
}

/// Accepts connections on `listener` until `stop`, handing each to `on_accept`.
pub fn spawn_accept_loop<A, Fut>(
    tasks: &Tasks,
    listener: TcpListener,
    stop: CancellationToken,
    on_accept: A,
) where
    A: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let inner_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.cancelled() => return,
            };
            match accepted {
                Ok((stream, _)) => inner_tasks.spawn(on_accept(stream)),
                // Transient (EMFILE, aborted handshake): back off briefly, keep listening.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}
