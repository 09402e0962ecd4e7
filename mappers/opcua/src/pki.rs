//! The PKI directory (`<state dir>/pki`): the mapper's application instance
//! certificate (`own/cert.der`, `private/private.pem`, made once when missing
//! or expiring, unless a device gives `certificate` and `privateKey`), the
//! trusted server certificates (`trusted/`) and the rejected ones
//! (`rejected/`). A trusted certificate is pinned: its host names,
//! application URI and validity dates are not checked.

use std::path::{Path, PathBuf};

use futures::future::{BoxFuture, FutureExt, Shared};
use mapper_sdk::{DriverError, DriverResult};
use opcua::crypto::{CertificateStore, X509Data};
use opcua::types::{ApplicationDescription, ApplicationType, LocalizedText, UAString};

use crate::session::{APPLICATION_NAME, APPLICATION_URI};

type KeysFuture = Shared<BoxFuture<'static, Result<(), String>>>;

/// The PKI directory and the one-time making of the mapper's own keys.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    keys: tokio::sync::Mutex<Option<KeysFuture>>,
}

impl Pki {
    /// The PKI directory `dir` (created when first needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keys: tokio::sync::Mutex::new(None),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where untrusted server certificates are saved.
    pub fn rejected_dir(&self) -> PathBuf {
        self.dir.join("rejected")
    }

    /// Where trusted server certificates are kept.
    pub fn trusted_dir(&self) -> PathBuf {
        self.dir.join("trusted")
    }

    /// The mapper's own certificate (made when missing).
    pub fn own_certificate(&self) -> PathBuf {
        self.dir.join("own/cert.der")
    }

    /// Makes the directory layout and the mapper's own certificate and key
    /// when they are missing or the certificate has expired. Runs once per
    /// value on a blocking thread (an RSA key takes a while); a caller that
    /// is cancelled leaves the work running for the next one.
    ///
    /// # Errors
    /// The directory cannot be made or written.
    pub async fn ensure_own_keys(&self) -> Result<(), String> {
        let fut = {
            let mut slot = self.keys.lock().await;
            match slot.as_ref() {
                Some(f) => f.clone(),
                None => {
                    let dir = self.dir.clone();
                    let f: KeysFuture = async move {
                        tokio::task::spawn_blocking(move || make_own_keys(&dir))
                            .await
                            .map_err(|e| format!("making the mapper's certificate: {e}"))?
                    }
                    .boxed()
                    .shared();
                    *slot = Some(f.clone());
                    f
                }
            }
        };
        let r = fut.await;
        if r.is_err() {
            // Try again next time (the directory may become writable).
            *self.keys.lock().await = None;
        }
        r
    }

    /// Copies `path` (the device's `remoteCertificate`) into `trusted/`
    /// (and removes it from `rejected/`, which would otherwise win).
    ///
    /// # Errors
    /// [`DriverError::Config`]: not a certificate, or not writable.
    pub async fn trust(&self, path: &Path) -> DriverResult<()> {
        let (path, trusted) = (path.to_owned(), self.trusted_dir());
        tokio::task::spawn_blocking(move || {
            let cert = CertificateStore::read_cert(&path).map_err(|e| {
                DriverError::Config(format!("`remoteCertificate` {}: {e}", path.display()))
            })?;
            let der = cert.to_der().map_err(|e| {
                DriverError::Config(format!("`remoteCertificate` {}: {e}", path.display()))
            })?;
            let name = CertificateStore::cert_file_name(&cert);
            // A copy in rejected/ (from an earlier refusal) would win over trusted/.
            let rejected = trusted.with_file_name("rejected").join(&name);
            if rejected.exists() {
                std::fs::remove_file(&rejected).map_err(|e| {
                    DriverError::Config(format!(
                        "trusting `remoteCertificate`: cannot remove {}: {e}",
                        rejected.display()
                    ))
                })?;
            }
            let target = trusted.join(name);
            if std::fs::read(&target).is_ok_and(|d| d == der) {
                return Ok(());
            }
            std::fs::create_dir_all(&trusted)
                .and_then(|()| std::fs::write(&target, &der))
                .map_err(|e| {
                    DriverError::Config(format!(
                        "trusting `remoteCertificate`: cannot write {}: {e}",
                        target.display()
                    ))
                })
        })
        .await
        .map_err(|e| DriverError::Config(format!("trusting `remoteCertificate`: {e}")))?
    }
}

/// Whether the certificate at `path` exists and is valid for at least a day.
fn usable_certificate(path: &Path) -> bool {
    let Ok(cert) = CertificateStore::read_cert(path) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    cert.not_after().is_ok_and(|t| t.timestamp() > now + 86_400)
}

fn make_own_keys(dir: &Path) -> Result<(), String> {
    let store = CertificateStore::new(dir);
    store
        .ensure_pki_path()
        .map_err(|e| format!("PKI directory {}: {e}", dir.display()))?;
    let (cert, key) = (store.own_certificate_path(), store.own_private_key_path());
    if usable_certificate(&cert) && key.is_file() {
        return Ok(());
    }
    tracing::info!(pki = %dir.display(), "making the mapper's application instance certificate");
    let description = ApplicationDescription {
        application_uri: UAString::from(APPLICATION_URI),
        application_name: LocalizedText::new("", APPLICATION_NAME),
        application_type: ApplicationType::Client,
        ..Default::default()
    };
    let mut data = X509Data::from(description);
    data.certificate_duration_days = 3650;
    CertificateStore::create_certificate_and_key(&data, true, &cert, &key)
        .map_err(|e| format!("making {}: {e}", cert.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", key.display()))?;
    }
    Ok(())
}
