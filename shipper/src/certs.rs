//! `logferry-shipper gen-certs DIR`: a private CA and the certificates a small deployment or
//! a test needs: the shipper's (server) and an agent's (client, for mutual TLS).

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Result, ShipperError};

/// The files `gen-certs` writes, by name inside its directory.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "shipper.pem",
    "shipper.key",
    "agent.pem",
    "agent.key",
];

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;

/// The paths `gen-certs` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The CA's certificate: the agent's `shipper.ca_file` and the shipper's
    /// `server.tls.client_ca`.
    pub ca: PathBuf,
    /// The shipper's certificate and key (`server.tls.cert`, `server.tls.key`).
    pub shipper: (PathBuf, PathBuf),
    /// The agent's client certificate and key (`shipper.client_cert`, `shipper.client_key`).
    pub agent: (PathBuf, PathBuf),
}

/// Writes a new CA and, signed by it, a server certificate for `hosts` (with `localhost`,
/// `127.0.0.1` and `::1` always added) and an agent client certificate, each valid for
/// `days`. Keys are written readable by their owner only. Refuses to overwrite any file.
///
/// # Errors
/// [`ShipperError::Tls`] naming a file that exists or cannot be written, or a host name
/// that cannot be in a certificate.
pub fn generate(dir: &Path, hosts: &[String], days: i64) -> Result<Written> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ShipperError::Tls(format!("creating {}: {e}", dir.display())))?;
    for name in FILES {
        let path = dir.join(name);
        if path.exists() {
            return Err(ShipperError::Tls(format!(
                "{} exists; gen-certs writes a new CA and never replaces one: choose an empty directory",
                path.display()
            )));
        }
    }
    let (ca_cert, issuer) = new_ca(days.max(CA_DAYS))?;
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let shipper = leaf(&issuer, "logferry-shipper", names, Role::Server, days)?;
    let agent = leaf(&issuer, "logferry-agent", Vec::new(), Role::Client, days)?;
    let out = |name: &str, text: &str, private: bool| -> Result<PathBuf> {
        let path = dir.join(name);
        write_new(&path, text.as_bytes(), private)
            .map_err(|e| ShipperError::Tls(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    };
    let written = Written {
        ca: out("ca.pem", &ca_cert.pem(), false)?,
        shipper: (
            out("shipper.pem", &shipper.0, false)?,
            out("shipper.key", &shipper.1, true)?,
        ),
        agent: (
            out("agent.pem", &agent.0, false)?,
            out("agent.key", &agent.1, true)?,
        ),
    };
    out("ca.key", &issuer.key().serialize_pem(), true)?;
    Ok(written)
}

enum Role {
    Server,
    Client,
}

fn tls_error(what: &str, e: &rcgen::Error) -> ShipperError {
    ShipperError::Tls(format!("{what}: {e}"))
}

/// The validity window: from a day ago (clocks disagree) to `days` from now.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = chrono::Utc::now();
    let ymd = |t: chrono::DateTime<chrono::Utc>| {
        use chrono::Datelike;
        rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8)
    };
    params.not_before = ymd(now - chrono::Duration::days(1));
    params.not_after = ymd(now + chrono::Duration::days(days));
}

fn new_ca(days: i64) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::new()).map_err(|e| tls_error("CA", &e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    // A name of its own: clients find a certificate's issuer by name, and two CAs named
    // alike would make a stranger's certificate fail as a bad signature instead of an
    // unknown issuer.
    let mut tag = [0u8; 4];
    getrandom::fill(&mut tag)
        .map_err(|e| ShipperError::Tls(format!("no system randomness: {e}")))?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("logferry private CA {}", hex::encode(tag)),
    );
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| tls_error("CA key", &e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| tls_error("CA certificate", &e))?;
    Ok((cert, Issuer::new(params, key)))
}

/// A certificate and its key (both PEM) signed by `issuer`.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    name: &str,
    sans: Vec<String>,
    role: Role,
    days: i64,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(sans)
        .map_err(|e| tls_error(&format!("{name}: a --host name"), &e))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match role {
        Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| tls_error(name, &e))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| tls_error(name, &e))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes a file that must not exist yet; `private` ones are mode 0600 from the start
/// (certificate keys, and `gen-key`'s master keys).
///
/// # Errors
/// The file exists, or cannot be written.
pub fn write_new(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_config::shipper::ServerTls;

    #[test]
    fn the_written_set_makes_a_server_config_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let w = generate(dir.path(), &["shipper.internal".into()], 30).unwrap();
        let tls = ServerTls {
            cert: w.shipper.0.clone(),
            key: w.shipper.1.clone(),
            client_ca: Some(w.ca.clone()),
        };
        crate::tls::server_config(&tls).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for key in [&w.agent.1, &w.shipper.1, &dir.path().join("ca.key")] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is its owner's alone", key.display());
        }
        let again = generate(dir.path(), &[], 30).unwrap_err().to_string();
        assert!(again.contains("ca.pem exists"), "{again}");
        let mismatched = ServerTls {
            cert: w.shipper.0,
            key: w.agent.1,
            client_ca: None,
        };
        let said = crate::tls::server_config(&mismatched)
            .unwrap_err()
            .to_string();
        assert!(said.contains("do not make a pair"), "{said}");
    }
}
