//! The accept loop every embedded protocol shares: bounded sessions, back-off
//! on accept errors, and a clean stop that waits for running sessions.

use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Sessions per listener; more connections are closed at once so a flood
/// cannot exhaust file descriptors.
pub(super) const MAX_SESSIONS: usize = 512;

/// Accepts connections until `stopped` flips (or its sender is dropped),
/// handing each to `serve`; then aborts the sessions still running and waits for them.
pub(super) async fn accept_loop<F, Fut>(listener: TcpListener, mut stopped: watch::Receiver<bool>, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    if sessions.len() >= MAX_SESSIONS {
                        drop(tcp);
                        continue;
                    }
                    sessions.spawn(serve(tcp));
                }
                // Usually EMFILE or a connection reset before accept: back
                // off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    sessions.shutdown().await;
}
