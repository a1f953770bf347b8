//! The agent's console port (`--console-address`): the only network door into a VM's
//! consoles. The console server dials it over mutual TLS (both sides' certificates signed
//! by the console CA the operator keeps; only the client CN `ironvisor-console` is served)
//! and asks with one WebSocket upgrade for the serial console or the VNC display of a VM
//! that runs here; the port bridges bytes until either side ends, and counts connections
//! into the VM's `status.console`.
//!
//! It never serves anything else, never listens without a certificate, and never reaches a
//! VM this agent did not define on this host. The VNC display itself listens nowhere: the
//! agent asks libvirt for a socket connected to it (`virDomainOpenGraphicsFD`) per
//! connection.

pub mod backend;
pub mod counter;
pub mod metrics;
pub mod pki;
pub mod request;
mod serial;
pub mod server;
pub mod tls;

use crate::hypervisor::libvirt::Libvirt;
use ironvisor_crds::console::ConsoleEndpoint;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The console port's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the port listens (`--console-address`).
    pub listen: SocketAddr,
    /// `host:port` the console server dials (`--console-advertise-address`; the listen
    /// address when absent, with this host's name in place of an unspecified address).
    pub advertise: Option<String>,
    /// Namespace of the console CA ConfigMap (the operator's).
    pub ca_namespace: String,
    /// Connections open at once.
    pub max_connections: usize,
    /// How often the endpoint, the certificate and the CA are synced with the API.
    pub sync_period: Duration,
}

/// Why the console port cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address cannot be bound.
    #[error("cannot listen on the console address {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// The key or request cannot be loaded or made.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// The host part of `host:port` (IPv6 without its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The address published for `config` on `node`.
pub fn advertised(config: &Config, node: &str) -> String {
    match &config.advertise {
        Some(a) => a.clone(),
        None if config.listen.ip().is_unspecified() => format!("{node}:{}", config.listen.port()),
        None => config.listen.to_string(),
    }
}

/// Start the port: bind, load the identity, and spawn the listener, the publisher and the
/// connection counter. The port refuses every connection until the operator has signed its
/// request.
pub async fn start(
    config: &Config,
    client: kube::Client,
    node: &str,
    libvirt: Libvirt,
    libvirt_uri: &str,
    state_dir: PathBuf,
    registry: &prometheus::Registry,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let address = advertised(config, node);
    let mut names = vec![node.to_owned()];
    let host = host_of(&address);
    if host != node {
        names.push(host.to_owned());
    }
    let identity = pki::load_or_create(&state_dir, node, &names)?;
    let tls = Arc::new(tls::TlsState::default());
    let metrics = Arc::new(metrics::ConsoleMetrics::new());
    if let Err(e) = metrics.register(registry) {
        tracing::warn!(error = %e, "console metrics not registered");
    }
    let port = Arc::new(server::Port {
        tls: tls.clone(),
        backend: Arc::new(backend::LibvirtBackend {
            libvirt,
            uri: libvirt_uri.to_owned(),
            node: node.to_owned(),
        }),
        counter: Some(counter::Counter::start(client.clone(), node.to_owned())),
        limit: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        metrics,
    });
    let publisher = pki::Publisher {
        client,
        node: node.to_owned(),
        ca_namespace: config.ca_namespace.clone(),
        endpoint: ConsoleEndpoint {
            address: address.clone(),
            csr: identity.csr_pem.clone(),
        },
        identity,
        tls,
        period: config.sync_period,
    };
    tracing::info!(listen = %config.listen, address, "console port listening");
    Ok(vec![
        tokio::spawn(server::serve(listener, port)),
        tokio::spawn(publisher.run()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_defaults_to_the_listen_address_or_the_host_name() {
        let mut c = Config {
            listen: "127.0.0.1:9443".parse().unwrap(),
            advertise: None,
            ca_namespace: "ironvisor-system".into(),
            max_connections: 4,
            sync_period: Duration::from_secs(5),
        };
        assert_eq!(advertised(&c, "host-a"), "127.0.0.1:9443");
        c.listen = "0.0.0.0:9443".parse().unwrap();
        assert_eq!(advertised(&c, "host-a"), "host-a:9443");
        c.advertise = Some("[fd00::1]:9443".into());
        assert_eq!(host_of(&advertised(&c, "host-a")), "fd00::1");
    }
}
