//! Ctrl-C, SIGTERM and SIGHUP during a restore: instead of dying with the target
//! half-loaded, the restore stops feeding at the next transaction boundary, lets the server
//! apply what it was sent, puts the target's settings back and says where it stands.

use tokio::sync::watch;

/// Whether the operator asked the running command to stop. Cheap to clone; every clone
/// sees the same request.
#[derive(Debug, Clone)]
pub struct Interrupt {
    requested: watch::Receiver<bool>,
}

impl Interrupt {
    /// An interrupt that never comes (exports, drills, tests).
    pub fn never() -> Self {
        let (_, requested) = watch::channel(false);
        Interrupt { requested }
    }

    /// Listens for SIGINT, SIGTERM and SIGHUP from now on; the first one requests the stop
    /// (and replaces the default of dying at once), a second one exits at once.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (tx, requested) = watch::channel(false);
        tokio::spawn(async move {
            let mut asked = false;
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                if asked {
                    // The operator insists: a stuck stop must not need SIGKILL.
                    tracing::error!("second signal ({name}): exiting at once; the target may hold a partial transaction batch, start over with --force");
                    std::process::exit(130);
                }
                asked = true;
                tracing::warn!("{name}: stopping at the next transaction boundary (a second signal exits at once)");
                let _ = tx.send(true);
            }
        });
        Ok(Interrupt { requested })
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves when a stop is requested; never for [`Interrupt::never`].
    pub async fn requested(&self) {
        let mut rx = self.requested.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_is_never_requested() {
        let i = Interrupt::never();
        assert!(!i.is_requested());
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(20), i.requested()).await;
        assert!(waited.is_err());
    }
}
