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
    /// How long a stopping shipper waits for the requests in flight (the longest an upload
    /// may take, `server.upload_timeout_ms`); a client that never reads its answer holds
    /// the exit no longer.
    pub drain: Duration,
}

/// The address a peer is counted under: itself for IPv4, its /64 for IPv6 (one host
/// usually holds a whole /64).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(seg.into())
        }
    }
}

/// Counts refused connections and says so at the 1st, 2nd, 4th, 8th ... of a kind, so that a
/// flood of them is not a flood of log lines written on the accept loop.
#[derive(Default)]
struct Refusals(u64);

impl Refusals {
    fn should_say(&mut self) -> bool {
        self.0 += 1;
        self.0.is_power_of_two()
    }
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
    let (mut over_all, mut over_peer) = (Refusals::default(), Refusals::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
                if !matches!(e.kind(), ConnectionAborted | ConnectionReset) {
                    // Out of descriptors, mostly: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            if over_all.should_say() {
                tracing::warn!(%peer, refused = over_all.0, "{} connections open (server.max_connections); connection closed", limits.max_connections);
            }
            continue;
        };
        let Some(slot) = peers.take(peer_key(peer.ip()), limits.per_peer) else {
            if over_peer.should_say() {
                tracing::warn!(%peer, refused = over_peer.0, "{} connections open from this address (server.max_connections_per_peer); connection closed", limits.per_peer);
            }
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
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still unanswered after {} s; stopping without them",
            limits.drain.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_places_come_back() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(peer_key(v4), v4);
        let peers = Arc::new(Peers::default());
        let first = peers.take(peer_key(a), 1).unwrap();
        assert!(peers.take(peer_key(b), 1).is_none(), "the /64 is full");
        drop(first);
        assert!(peers.take(peer_key(b), 1).is_some(), "its place came back");
        let mut r = Refusals::default();
        let said: Vec<bool> = (0..5).map(|_| r.should_say()).collect();
        assert_eq!(said, [true, true, false, true, false]);
    }
}
