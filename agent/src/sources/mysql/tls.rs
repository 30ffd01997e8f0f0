//! TLS to the MySQL server, with `ssl-mode`'s meanings (`[source.tls]`), for the binlog
//! connection and the snapshot replica's; the dump tool's flags are
//! [`MysqlTls::client_args`].

use std::time::Duration;

use logferry_config::{MysqlTls, TlsMode};
use mysql_async::{ClientIdentity, Conn, Opts, OptsBuilder, SslOpts};

/// `opts` with the TLS that `tls` asks for (`None` for plain).
fn with_tls(opts: &Opts, tls: &MysqlTls, mode: TlsMode) -> Opts {
    let ssl = match mode {
        TlsMode::Disabled => None,
        TlsMode::Preferred | TlsMode::Required => Some(
            SslOpts::default()
                .with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true),
        ),
        TlsMode::VerifyIdentity => Some(SslOpts::default()),
    };
    let ssl = ssl.map(|s| {
        let s = match &tls.ca {
            Some(ca) => s
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true),
            None => s,
        };
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => s.with_client_identity(Some(ClientIdentity::new(
                cert.clone().into(),
                key.clone().into(),
            ))),
            _ => s,
        }
    });
    OptsBuilder::from_opts(opts.clone()).ssl_opts(ssl).into()
}

/// Connects within `timeout` as `tls.mode` says: `preferred` falls back to plain, with a
/// warning naming `what`, when the server offers no TLS.
///
/// # Errors
/// `None` when no answer came within `timeout`; else the driver's error (a certificate the
/// CA did not sign, a server without TLS under `required`, a refused login).
pub async fn connect(
    opts: &Opts,
    tls: &MysqlTls,
    timeout: Duration,
    what: &str,
) -> Option<Result<Conn, mysql_async::Error>> {
    let first = tokio::time::timeout(timeout, Conn::new(with_tls(opts, tls, tls.mode)))
        .await
        .ok()?;
    match first {
        Err(mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
            if tls.mode == TlsMode::Preferred =>
        {
            tracing::warn!(
                "{what} offers no TLS: connected in clear (source.tls.mode = \"preferred\"; set \"verify_identity\" with source.tls.ca once the server has a certificate)"
            );
            tokio::time::timeout(timeout, Conn::new(with_tls(opts, tls, TlsMode::Disabled)))
                .await
                .ok()
        }
        other => Some(other),
    }
}

/// Whether a driver's error text is a TLS failure (a certificate refused, a handshake cut),
/// for errors to add where the fix lies.
pub fn is_tls_failure(said: &str) -> bool {
    ["certificate", "tls", "TLS", "handshake"]
        .iter()
        .any(|w| said.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_gives_the_driver_its_protection() {
        let opts = Opts::from_url("mysql://u:p@db:3306").unwrap();
        let files = MysqlTls {
            mode: TlsMode::VerifyIdentity,
            ca: Some("/etc/ca.pem".into()),
            cert: Some("/etc/c.pem".into()),
            key: Some("/etc/c.key".into()),
        };
        let full = with_tls(&opts, &files, TlsMode::VerifyIdentity);
        let ssl = full.ssl_opts().unwrap();
        assert!(!ssl.accept_invalid_certs() && !ssl.skip_domain_validation());
        assert!(ssl.disable_built_in_roots());
        assert!(ssl.client_identity().is_some());
        let required = with_tls(&opts, &MysqlTls::default(), TlsMode::Required);
        assert!(required.ssl_opts().unwrap().accept_invalid_certs());
        assert!(with_tls(&opts, &files, TlsMode::Disabled)
            .ssl_opts()
            .is_none());
    }
}
