//! The agent's side of the console PKI: its private key (made once, ECDSA P-256, kept 0600
//! under `<state-dir>/console/`, never leaving the host), the certificate request it
//! publishes in `Hypervisor.status.consoleEndpoint`, and picking up the certificate the
//! operator signs into `status.consoleCertificate` once its `csrSha256` (SHA-256 of the
//! request's DER, hex) is this request's.

use super::tls::{Material, TlsState, server_config};
use ironvisor_crds::console::ConsoleEndpoint;
use ironvisor_crds::hypervisor::Hypervisor;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Name of the ConfigMap (and key) the operator publishes the console CA certificate in.
pub const CA_CONFIGMAP: &str = "ironvisor-console-ca";
/// Its key.
pub const CA_KEY: &str = "ca.crt";

/// Why the agent's console identity cannot be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file under `<state-dir>/console/`.
    #[error("{0}: cannot read or write it")]
    Io(PathBuf, #[source] std::io::Error),
    /// The stored key is not a key rcgen reads (remove it to make a new one).
    #[error("{0} is not a usable private key (remove it and restart to make a new one)")]
    Key(PathBuf, #[source] rcgen::Error),
    /// The request cannot be made (a host name that is not a DNS name or IP address).
    #[error("cannot make the certificate request")]
    Request(#[source] rcgen::Error),
}

/// The agent's key and certificate request.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The request (PEM): CN `hypervisor:<node>`, SANs the node name and the endpoint host.
    pub csr_pem: String,
    /// SHA-256 of the request's DER, hex.
    pub csr_sha256: String,
}

/// The stored request, reused while the key and names are the same (a request is signed
/// with a random nonce: making it anew on every start would ask the operator for a new
/// certificate each time).
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct StoredRequest {
    common_name: String,
    names: Vec<String>,
    key_sha256: String,
    pem: String,
}

/// The common name of `node`'s console certificate.
pub fn common_name(node: &str) -> String {
    format!("hypervisor:{node}")
}

/// SHA-256 (hex) of the DER inside a PEM request; `None` when it is not PEM.
pub fn csr_sha256(pem: &str) -> Option<String> {
    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject as _;
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).ok()?;
    Some(hex::encode(Sha256::digest(der.as_ref())))
}

/// Load the key under `<state_dir>/console/` (or make it) and the request for `names`.
pub fn load_or_create(
    state_dir: &Path,
    node: &str,
    names: &[String],
) -> Result<Identity, PkiError> {
    let dir = state_dir.join("console");
    let io = |p: &Path| {
        let p = p.to_owned();
        move |e| PkiError::Io(p, e)
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    let key_path = dir.join("key.pem");
    let key_pem = match std::fs::read_to_string(&key_path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(PkiError::Request)?;
            write_private(&key_path, &key.serialize_pem()).map_err(io(&key_path))?;
            key.serialize_pem()
        }
        Err(e) => return Err(PkiError::Io(key_path, e)),
    };
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&key_path))?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Key(key_path.clone(), e))?;
    let wanted = StoredRequest {
        common_name: common_name(node),
        names: names.to_vec(),
        key_sha256: hex::encode(Sha256::digest(key.public_key_raw())),
        pem: String::new(),
    };
    let req_path = dir.join("request.json");
    let stored: Option<StoredRequest> = std::fs::read(&req_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let csr_pem = match stored {
        Some(s)
            if s.common_name == wanted.common_name
                && s.names == wanted.names
                && s.key_sha256 == wanted.key_sha256
                && csr_sha256(&s.pem).is_some() =>
        {
            s.pem
        }
        _ => {
            let mut params =
                rcgen::CertificateParams::new(names.to_vec()).map_err(PkiError::Request)?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, wanted.common_name.clone());
            let pem = params
                .serialize_request(&key)
                .and_then(|r| r.pem())
                .map_err(PkiError::Request)?;
            let stored = StoredRequest {
                pem: pem.clone(),
                ..wanted
            };
            let json = serde_json::to_vec(&stored).expect("serialisable");
            write_private(&req_path, &String::from_utf8_lossy(&json)).map_err(io(&req_path))?;
            pem
        }
    };
    let csr_sha256 = csr_sha256(&csr_pem).expect("checked or just made");
    Ok(Identity {
        key_pem,
        csr_pem,
        csr_sha256,
    })
}

/// Write `content` to `path` (mode 0600) through a temporary file and a rename.
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Keeps the endpoint published and the port's TLS configuration current.
pub struct Publisher {
    /// API client.
    pub client: Client,
    /// This host.
    pub node: String,
    /// Namespace of the CA ConfigMap (the operator's).
    pub ca_namespace: String,
    /// What to publish.
    pub endpoint: ConsoleEndpoint,
    /// The key and request.
    pub identity: Identity,
    /// Where the configuration goes.
    pub tls: Arc<TlsState>,
    /// How often the API is read.
    pub period: Duration,
}

impl Publisher {
    /// Run until aborted.
    pub async fn run(self) {
        let mut last: Option<Material> = None;
        let mut tick = tokio::time::interval(self.period);
        loop {
            tick.tick().await;
            if let Err(e) = self.sync(&mut last).await {
                tracing::warn!(error = %e, "console endpoint: cannot sync with the API");
            }
        }
    }

    async fn sync(&self, last: &mut Option<Material>) -> Result<(), kube::Error> {
        let hvs: Api<Hypervisor> = Api::all(self.client.clone());
        let Some(hv) = hvs.get_opt(&self.node).await? else {
            return Ok(()); // the heartbeat creates it
        };
        let status = hv.status.unwrap_or_default();
        if status.console_endpoint.as_ref() != Some(&self.endpoint) {
            let patch = serde_json::json!({
                "apiVersion": "ironvisor.io/v1alpha1",
                "kind": "Hypervisor",
                "status": {"consoleEndpoint": self.endpoint},
            });
            let params = PatchParams::apply(&super::counter::field_manager(&self.node)).force();
            hvs.patch_status(&self.node, &params, &Patch::Apply(&patch))
                .await?;
            tracing::info!(
                address = self.endpoint.address,
                "console endpoint published"
            );
        }
        let cert = status
            .console_certificate
            .filter(|c| c.csr_sha256.eq_ignore_ascii_case(&self.identity.csr_sha256));
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.ca_namespace);
        let ca = cms
            .get_opt(CA_CONFIGMAP)
            .await?
            .and_then(|cm| cm.data)
            .and_then(|mut d| d.remove(CA_KEY));
        let material = match (cert, ca) {
            (Some(cert), Some(ca_pem)) => Some(Material {
                ca_pem,
                cert_pem: cert.certificate,
                key_pem: self.identity.key_pem.clone(),
            }),
            _ => None,
        };
        if material == *last {
            return Ok(());
        }
        match material.as_ref().map(server_config).transpose() {
            Ok(config) => {
                let serving = config.is_some();
                self.tls.set(config);
                tracing::info!(serving, "console port: TLS configuration changed");
                *last = material;
            }
            Err(e) => {
                tracing::warn!(error = %e, "console port: the signed certificate is unusable");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_the_request_is_kept_while_names_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let names = vec!["host-a".to_owned(), "127.0.0.1".to_owned()];
        let first = load_or_create(tmp.path(), "host-a", &names).unwrap();
        let key = tmp.path().join("console/key.pem");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&tmp.path().join("console")), 0o700);
        assert!(
            first
                .csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert_eq!(first.csr_sha256.len(), 64);
        let again = load_or_create(tmp.path(), "host-a", &names).unwrap();
        assert_eq!(
            (&again.key_pem, &again.csr_pem),
            (&first.key_pem, &first.csr_pem)
        );
        // Another address: same key, a new request.
        let moved = load_or_create(tmp.path(), "host-a", &["host-a".to_owned()]).unwrap();
        assert_eq!(moved.key_pem, first.key_pem);
        assert_ne!(moved.csr_sha256, first.csr_sha256);
    }

    #[test]
    fn a_corrupt_key_is_reported_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("console")).unwrap();
        std::fs::write(tmp.path().join("console/key.pem"), "garbage").unwrap();
        let err = load_or_create(tmp.path(), "h", &["h".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("key.pem"), "{err}");
        assert_eq!(csr_sha256("garbage"), None);
    }
}
