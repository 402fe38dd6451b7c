//! Serving connections: hyper's HTTP/1 server under the router, with the
//! timeouts that keep a slow or silent client from holding a connection (and
//! its file descriptor) forever, and a graceful stop.
//!
//! `axum::serve` offers no header timeout: hyper needs a timer for one, which
//! it does not set. So connections are served here, with hyper's own builder.

use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::timeout::RequestBodyDeadlineLayer;

/// Accepts connections on `listener` until `shutdown` completes, then waits
/// for the connections it has to finish their requests in progress.
///
/// - A request's headers must arrive within `header_timeout` of the first
///   read, and a kept-alive connection waits that long for its next request
///   (hyper starts the same timer when it waits for a request): then the
///   connection is closed. This also bounds how long the stop waits.
/// - A request's body must arrive whole within `body_timeout`; reading it
///   fails after that, which the handlers answer as a bad request.
pub async fn serve(
    mut listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    body_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let app = RequestBodyDeadlineLayer::new(body_timeout).layer(app);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // axum's `Listener` retries failed accepts, pausing on errors such as
        // running out of file descriptors instead of spinning.
        let (stream, peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Raises this process's limit of open files to the most the system allows
/// it (the hard limit), so a burst of connections does not run the server out
/// of descriptors at a distribution's default soft limit of 1,024. Returns
/// the soft limit in force afterwards.
pub fn raise_fd_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

#[cfg(test)]
mod tests {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};

    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Lowering the soft limit needs no privilege; start a little below.
        setrlimit(Resource::RLIMIT_NOFILE, hard - 1, hard).unwrap();
        assert_eq!(raise_fd_limit().unwrap(), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }
}
