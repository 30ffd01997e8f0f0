//! TLS on the API: the server's rustls config from the PEM files of `[server.tls]`, and a
//! listener that completes each handshake in a task of its own, so that a client that opens
//! a connection and sends nothing cannot hold up everyone else's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logferry_config::shipper::ServerTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::{Result, ShipperError};

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the HTTP server to take them.
const READY: usize = 64;

/// Handshakes under way at once; a connection past them is closed at once, so a flood of
/// connections cannot use up the process's descriptors and memory.
const MAX_HANDSHAKES: usize = 1024;

/// The crypto provider of every TLS config here (the one the HTTP client already brings).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads every certificate of the PEM file at `path`, for the error of `key`.
///
/// # Errors
/// [`ShipperError::Tls`] naming the key and the file.
pub fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| ShipperError::Tls(format!("{key} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ShipperError::Tls(format!(
            "{key} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The server's TLS config: its certificate and key, and when `client_ca` is set, client
/// certificates required and checked against it (mutual TLS).
///
/// # Errors
/// [`ShipperError::Tls`] naming the `server.tls` key whose file is missing or unusable.
pub fn server_config(tls: &ServerTls) -> Result<Arc<ServerConfig>> {
    let chain = certificates(&tls.cert, "server.tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        ShipperError::Tls(format!(
            "server.tls.key {}: {e} (a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            tls.key.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ShipperError::Tls(e.to_string()))?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca, "server.tls.client_ca")? {
                roots.add(cert).map_err(|e| {
                    ShipperError::Tls(format!("server.tls.client_ca {}: {e}", ca.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| {
                    ShipperError::Tls(format!("server.tls.client_ca {}: {e}", ca.display()))
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        ShipperError::Tls(format!(
            "server.tls.cert {} and server.tls.key {} do not make a pair: {e}",
            tls.cert.display(),
            tls.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections come out TLS-handshaken; for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` from now on, handshaking under `config`, until this listener is
    /// dropped. A failed or slow handshake is logged with the peer and dropped.
    ///
    /// # Errors
    /// [`ShipperError::Tls`] when the listener has no local address.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Result<Self> {
        let local = tcp
            .local_addr()
            .map_err(|e| ShipperError::Tls(format!("the listener has no address: {e}")))?;
        let (tx, ready) = mpsc::channel(READY);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => break,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors, mostly: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "{MAX_HANDSHAKES} TLS handshakes under way; connection dropped");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => tracing::warn!(
                            %peer,
                            "TLS handshake not completed within {} s",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (it never does while this listener lives).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
