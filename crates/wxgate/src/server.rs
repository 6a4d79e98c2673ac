//! The HTTP/1.1 server loop of `wxgate serve`: connection limits, slow-client timeouts,
//! and a shutdown drain that keeps answering.
//!
//! axum's own `serve` has no header, body or idle timeout and no connection cap, so a few
//! hundred silent or slowloris sockets could pin every file descriptor. This loop drives
//! each connection with hyper directly and watches it:
//!
//! - a new connection must send a complete request header within `header_read_timeout`;
//! - a keep-alive connection may sit idle for `idle_timeout`, then must send its next
//!   header within `header_read_timeout` of the first byte;
//! - the body deadline (`body_read_timeout`) is enforced where the body is read (http.rs);
//! - at most `max_connections` are open; past the cap the oldest connection that is not
//!   inside a request (idle, silent or still dribbling its header) is closed to make room,
//!   so a real request always gets in while attackers only evict each other.
//!
//! Shutdown is a drain, never a blackout: the listener stays open throughout. While
//! handlers still run (up to `shutdown_grace`), new requests are served normally (recorded
//! and answered per the policy) and `/readyz` answers 503 so that a load balancer moves
//! traffic away; keep-alive connections are closed after their current request. Then new
//! requests get a fast 503 (WeChat retries) while the requests in flight finish, the
//! listener closes and the store is flushed.

use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Limits;
use crate::gateway::Gateway;
use crate::metrics::ReasonLabels;
use crate::pipeline::HOLD_FOR;

/// Descriptors kept free under the open-file limit for the store, upstream and WeChat API
/// sockets, and the log: at least this many, or an eighth of the limit when larger.
pub const FD_HEADROOM: u64 = 128;

/// The highest connection cap derived from the open-file limit.
pub const MAX_DERIVED_CONNECTIONS: u64 = 65_536;

/// The open-file limit at start, as found and as raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit before raising it.
    pub soft_before: u64,
    /// The soft limit in force (raised to the hard limit when allowed).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit (the usual 1,024 soft limit is far
/// below what a busy webhook needs) and reports both. On platforms without the notion
/// (or when the call fails) the limit is reported as unknown.
pub fn raise_file_limit() -> Option<FileLimit> {
    let (soft_before, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    let soft = rlimit::increase_nofile_limit(hard).unwrap_or(soft_before);
    Some(FileLimit {
        soft_before,
        soft,
        hard,
    })
}

/// The connection cap: the configured one, but never above what the open-file limit
/// leaves after the headroom; without a configured one, all that the limit leaves (up to
/// [`MAX_DERIVED_CONNECTIONS`]).
pub fn connection_cap(configured: Option<usize>, files: Option<FileLimit>) -> usize {
    let available = files.map(|f| {
        let headroom = FD_HEADROOM.max(f.soft / 8);
        f.soft
            .saturating_sub(headroom)
            .clamp(16, MAX_DERIVED_CONNECTIONS)
    });
    let cap = match (configured, available) {
        (Some(configured), Some(available)) => (configured as u64).min(available),
        (Some(configured), None) => configured as u64,
        (None, Some(available)) => available,
        (None, None) => 1024,
    };
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// Where the server is in its life (`SERVING`, `DRAINING`, `CLOSING`); read by the drain
/// middleware on every request.
#[derive(Debug)]
pub struct Lifecycle(AtomicU8);

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle(AtomicU8::new(SERVING))
    }
}

const SERVING: u8 = 0;
const DRAINING: u8 = 1;
const CLOSING: u8 = 2;

impl Lifecycle {
    fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::SeqCst);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

/// During the drain `/readyz` says 503 (take this instance out of rotation); once the
/// drain is over, every request but `/healthz` gets a fast 503 so that WeChat retries
/// (on another instance, or this one's successor) instead of waiting on a closing server.
async fn drain_guard(
    State(lifecycle): State<Arc<Lifecycle>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let refuse = match lifecycle.get() {
        DRAINING => path == "/readyz",
        CLOSING => path != "/healthz",
        _ => false,
    };
    if refuse {
        let reason = if lifecycle.get() == DRAINING {
            "draining"
        } else {
            "shutting down"
        };
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONNECTION, "close")],
            reason,
        )
            .into_response();
    }
    next.run(request).await
}

/// Serves `router` (the gateway's, maybe with the console merged) on `listener` until `shutdown` resolves, then drains (see the module
/// documentation) and flushes the store.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let lifecycle = Arc::new(Lifecycle::default());
    let router = router.layer(axum::middleware::from_fn_with_state(
        Arc::clone(&lifecycle),
        drain_guard,
    ));
    let connections = Arc::new(Connections::new(max_connections));
    let stop_accepting = CancellationToken::new();
    let tracker = TaskTracker::new();
    let accept = tokio::spawn(accept_loop(
        Arc::clone(&gateway),
        listener,
        router,
        limits,
        Arc::clone(&connections),
        stop_accepting.clone(),
        tracker.clone(),
    ));

    shutdown.await;
    let grace = gateway.config().shutdown_grace;
    let deadline = Instant::now() + grace;
    lifecycle.set(DRAINING);
    connections.close_gently();
    tracing::info!(
        grace_secs = grace.as_secs(),
        "draining: still answering while handlers finish; /readyz now answers 503"
    );
    let handlers_done = gateway.wait_for_tasks(deadline).await;
    lifecycle.set(CLOSING);
    connections.close_gently();
    // Requests in flight are bounded by their budget, or a held attempt's hold.
    let in_flight_limit = HOLD_FOR + Duration::from_secs(1);
    tracker.close();
    if tokio::time::timeout(in_flight_limit, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the drain; closing them"
        );
        connections.evict_all();
    }
    stop_accepting.cancel();
    let _ = accept.await;
    let remaining = deadline.saturating_duration_since(Instant::now());
    match gateway.shutdown(remaining).await {
        Ok(0) if handlers_done => tracing::info!("all handlers finished; store flushed"),
        Ok(unfinished) => tracing::warn!(
            unfinished,
            "grace period over with handlers still running; store flushed"
        ),
        Err(e) => tracing::error!(error = %e, "store flush failed at shutdown"),
    }
    Ok(())
}

async fn accept_loop(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    connections: Arc<Connections>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the cap should
                // prevent it, but another part of the process may hold descriptors.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match Arc::clone(&connections.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !connections.evict_oldest_idle() {
                    tracing::warn!(
                        cap = connections.cap,
                        "connection cap reached with every connection inside a request; waiting"
                    );
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    permit = Arc::clone(&connections.slots).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = connections.register();
        let router = router.clone();
        let connections = Arc::clone(&connections);
        let gateway = Arc::clone(&gateway);
        gateway.metrics.connections_open.inc();
        tracker.spawn(async move {
            let closed = drive(stream, peer, router, limits, &shared).await;
            if let Some(reason) = closed {
                gateway
                    .metrics
                    .connections_closed
                    .get_or_create(&ReasonLabels {
                        reason: reason.to_owned(),
                    })
                    .inc();
            }
            gateway.metrics.connections_open.dec();
            connections.remove(shared.id);
            drop(permit);
        });
    }
}

/// Serves one connection under the watch of its deadlines, its eviction and the drain.
/// Returns why the server closed it, when it did (`None`: the client or hyper ended it).
async fn drive(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: Limits,
    shared: &Arc<ConnShared>,
) -> Option<&'static str> {
    let io = TokioIo::new(Tracked {
        inner: stream,
        shared: Arc::clone(shared),
    });
    let activity = Arc::clone(shared);
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let activity = Arc::clone(&activity);
        activity.begin_request();
        async move {
            // Marks the end of the request even if hyper drops this future.
            let _done = RequestDone(activity);
            router.oneshot(request.map(axum::body::Body::new)).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The watch below owns the header and idle deadlines.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut evicted = pin!(shared.evict.cancelled());
    let mut closing = pin!(shared.graceful.cancelled());
    let mut graceful_sent = false;
    let mut timer = Box::pin(sleep_until(Instant::now() + limits.idle_timeout));
    let mut armed: Option<Instant> = None;
    poll_fn(|cx: &mut Context<'_>| {
        if evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some("evicted"));
        }
        if !graceful_sent && closing.as_mut().poll(cx).is_ready() {
            conn.as_mut().graceful_shutdown();
            graceful_sent = true;
        }
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return Poll::Ready(None);
        }
        loop {
            let Some((deadline, reason)) = shared.deadline(&limits) else {
                // Inside a request: the connection wakes us when it is over.
                return Poll::Pending;
            };
            if armed != Some(deadline) {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if shared.deadline(&limits) == Some((deadline, reason)) => {
                    tracing::debug!(%peer, reason, "closing a slow or idle connection");
                    return Poll::Ready(Some(reason));
                }
                // The phase moved on while the timer fired: re-arm.
                Poll::Ready(()) => armed = None,
            }
        }
    })
    .await
}

/// Where one connection stands, for its deadline and for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request header, since this instant.
    Header(Instant),
    /// Between requests on a keep-alive connection, since this instant.
    Idle(Instant),
    /// This many requests are inside the service.
    Busy(usize),
}

/// The state one connection shares with the accept loop.
#[derive(Debug)]
struct ConnShared {
    id: u64,
    phase: Mutex<Phase>,
    /// Cancelled to close the connection now (eviction, end of the drain).
    evict: CancellationToken,
    /// Cancelled to close the connection after its current request (the drain).
    graceful: CancellationToken,
}

impl ConnShared {
    /// When the connection must be closed unless it moves on, and why.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Header(since) => Some((since + limits.header_read_timeout, "header_timeout")),
            Phase::Idle(since) => Some((since + limits.idle_timeout, "idle_timeout")),
            Phase::Busy(_) => None,
        }
    }

    fn busy(&self) -> bool {
        matches!(
            *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            Phase::Busy(_)
        )
    }

    /// Bytes arrived: an idle connection starts its next header.
    fn bytes_arrived(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Header(Instant::now());
        }
    }

    fn begin_request(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
    }

    fn end_request(&self) {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }
}

/// Ends a request's busy phase when dropped (answered, or dropped by hyper).
struct RequestDone(Arc<ConnShared>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// The open connections, oldest first, and the cap's slots.
#[derive(Debug)]
struct Connections {
    cap: usize,
    slots: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<ConnShared>>>,
    next_id: AtomicU64,
}

impl Connections {
    fn new(cap: usize) -> Connections {
        Connections {
            cap,
            slots: Arc::new(Semaphore::new(cap)),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    fn register(&self) -> Arc<ConnShared> {
        let shared = Arc::new(ConnShared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            // A new connection owes its first header from the accept on.
            phase: Mutex::new(Phase::Header(Instant::now())),
            evict: CancellationToken::new(),
            graceful: CancellationToken::new(),
        });
        self.lock().insert(shared.id, Arc::clone(&shared));
        shared
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the oldest connection that is not inside a request. Returns whether one was
    /// found.
    fn evict_oldest_idle(&self) -> bool {
        let open = self.lock();
        let victim = open.values().find(|c| !c.evict.is_cancelled() && !c.busy());
        match victim {
            Some(victim) => {
                tracing::debug!("connection cap reached: closing the oldest idle connection");
                victim.evict.cancel();
                true
            }
            None => false,
        }
    }

    /// Asks every connection that has served a request to close after its current one
    /// (keep-alive off). A connection still waiting for its first header is left alone:
    /// closing it now would drop a request that may be on its way; its request is
    /// answered (a 503 carries `Connection: close`) or its header deadline closes it.
    fn close_gently(&self) {
        for connection in self.lock().values() {
            let waiting_for_header = matches!(
                *connection.phase.lock().unwrap_or_else(|e| e.into_inner()),
                Phase::Header(_)
            );
            if !waiting_for_header {
                connection.graceful.cancel();
            }
        }
    }

    fn evict_all(&self) {
        for connection in self.lock().values() {
            connection.evict.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnShared>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The socket, telling its connection's watch when bytes arrive.
struct Tracked {
    inner: TcpStream,
    shared: Arc<ConnShared>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_under_the_file_limit() {
        let files = |soft| {
            Some(FileLimit {
                soft_before: soft,
                soft,
                hard: soft,
            })
        };
        // The common 1,024 limit: 128 kept free.
        assert_eq!(connection_cap(None, files(1024)), 896);
        // A large limit: an eighth kept free, and the derived cap bounded.
        assert_eq!(connection_cap(None, files(8192)), 7168);
        assert_eq!(connection_cap(None, files(1 << 20)), 65_536);
        // A configured cap never goes above what the limit allows.
        assert_eq!(connection_cap(Some(5000), files(1024)), 896);
        assert_eq!(connection_cap(Some(500), files(1024)), 500);
        // A tiny limit still allows a few connections.
        assert_eq!(connection_cap(None, files(64)), 16);
        assert_eq!(connection_cap(None, None), 1024);
    }
}
