//! The API's connections: accepted in one loop, each held to the limits of `[server]`
//! (connections in all and per peer address, the TLS handshake's time, the request head's
//! size and time to arrive), handshaken and served in a task of its own, and drained on
//! shutdown: the requests in flight are answered, idle connections closed.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::api::Peer;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one connection may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once, from everyone (`server.max_connections`).
    pub max_connections: usize,
    /// Connections open at once from one address (`server.max_connections_per_peer`), so
    /// that one host cannot take every place from the others.
    pub per_peer: usize,
    /// Largest request head (request line and headers) (`server.max_header_bytes`).
    pub header_bytes: usize,
    /// Time for a request head to arrive, and for an idle connection to send its next one
    /// (`server.header_timeout_ms`): a client that trickles its headers (slow loris) holds
    /// its place no longer.
    pub header_timeout: Duration,
}

/// The open connections of each peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One peer's place, given back when the connection ends.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    fn take(self: &Arc<Self>, ip: IpAddr, most: usize) -> Option<PeerSlot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .peers
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// waits for the requests in flight to be answered.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let peers = Arc::new(Peers::default());
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, mostly: wait instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "{} connections open (server.max_connections); connection closed", limits.max_connections);
            continue;
        };
        let Some(slot) = peers.take(peer.ip(), limits.per_peer) else {
            tracing::warn!(%peer, "{} connections open from this address (server.max_connections_per_peer); connection closed", limits.per_peer);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _held = (place, slot);
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(Peer(peer)));
                let mut app = app.clone();
                async move { app.call(req).await }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(limits.header_bytes);
            let served = match tls {
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(
                                %peer,
                                "TLS handshake not completed within {} s",
                                HANDSHAKE_TIMEOUT.as_secs()
                            );
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
