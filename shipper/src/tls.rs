//! TLS on the API: the server's rustls config from the PEM files of `[server.tls]` (the
//! handshakes themselves are [`crate::listen`]'s).

use std::path::Path;
use std::sync::Arc;

use logferry_config::shipper::ServerTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::error::{Result, ShipperError};

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
