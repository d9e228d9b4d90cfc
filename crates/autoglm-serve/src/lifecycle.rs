//! Serving until the process is told to stop: reloads on SIGHUP and on a changed package,
//! drains on SIGTERM or Ctrl-C.

use crate::{serve_on, AppState, ServeOptions};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Binds `addr` and serves `state` until a shutdown signal; reloads on SIGHUP and when a
/// package changes on disk (every `poll`, unless zero).
pub async fn serve(
    state: AppState,
    addr: SocketAddr,
    poll: Duration,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        models = state.models().len(),
        tls = options.tls.is_some(),
        auth = state.inner.auth.is_some(),
        "serving"
    );
    let watcher = tokio::spawn(watch(state.clone(), poll));
    let grace = options.grace;
    let signal_state = state.clone();
    let stop = async move {
        shutdown_signal().await;
        signal_state.inner.ready.store(false, Ordering::Release);
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
    };
    let result = serve_on(state, listener, options, stop).await;
    watcher.abort();
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Reloads on SIGHUP (every model) and on a changed package (that model).
async fn watch(state: AppState, poll: Duration) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut ticker = (!poll.is_zero()).then(|| {
        let mut t = tokio::time::interval(poll);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let hup = async {
            #[cfg(unix)]
            if let Some(h) = hangup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let force = tokio::select! {
            () = hup => true,
            () = tick => false,
        };
        let s = state.clone();
        let reason = if force { "SIGHUP" } else { "package changed" };
        // Loading is seconds of CPU and disk: never on the executor that answers requests.
        let _ = tokio::task::spawn_blocking(move || s.reload(force, reason)).await;
    }
}
