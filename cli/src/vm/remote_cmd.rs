//! `ivctl console` away from the VM's host and `ivctl vnc`: the terminal in raw mode bridged
//! to the serial console, or a loopback port a VNC client connects to, both through the
//! Kubernetes API ([`super::remote`]).

use std::io::IsTerminal as _;
use std::net::SocketAddr;

use kube::Client;
use nix::sys::termios::{self, SetArg, Termios};

use super::remote::{self, Kind, RemoteError};
use crate::cluster::{ClusterArgs, ClusterError};

/// Ctrl+] ends the session, as in virsh and telnet.
pub const ESCAPE: u8 = 0x1d;

/// Why a remote console failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteCmdError {
    /// The kubeconfig could not be used.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The console could not be opened.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The terminal or the local port failed.
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    /// The terminal mode could not be changed.
    #[error("cannot put the terminal in raw mode")]
    Termios(#[source] nix::Error),
    /// `--url` needs to know where the console server's page is.
    #[error(
        "the browser console's address is unknown: pass --console-url https://HOST[:PORT] or set IRONVISOR_CONSOLE_URL"
    )]
    NoConsoleUrl,
}

/// A client without the command line's short read timeout: a console may be idle for long.
pub async fn console_client(cluster: &ClusterArgs) -> Result<Client, ClusterError> {
    let mut config = cluster.config().await?;
    config.read_timeout = None;
    config.write_timeout = None;
    Client::try_from(config).map_err(ClusterError::Api)
}

/// Restores the terminal's mode when dropped.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> Result<Self, RemoteCmdError> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(Self(None));
        }
        let saved = termios::tcgetattr(&stdin).map_err(RemoteCmdError::Termios)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(RemoteCmdError::Termios)?;
        Ok(Self(Some(saved)))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}

/// The serial console of `namespace/name` on this terminal until Ctrl+] or the end.
pub async fn serial(
    cluster: &ClusterArgs,
    namespace: &str,
    name: &str,
) -> Result<(), RemoteCmdError> {
    let client = console_client(cluster).await?;
    let conn = remote::open(&client, namespace, name, Kind::Serial).await?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Connected to the serial console of {namespace}/{name} through the Kubernetes API; detach with Ctrl+]\r"
        );
    }
    let raw = RawMode::enter()?;
    let escape = interactive.then_some(ESCAPE);
    let r = remote::bridge(conn, tokio::io::stdin(), tokio::io::stdout(), escape).await;
    drop(raw);
    if interactive {
        eprintln!();
    }
    r.map_err(|e| RemoteCmdError::Io("the console connection failed".into(), e))
}

/// The browser console's address of `namespace/name`'s display.
pub fn browser_url(base: &str, namespace: &str, name: &str) -> String {
    format!("{}/#/{namespace}/{name}/vnc", base.trim_end_matches('/'))
}

/// Serves `namespace/name`'s display on `listen` (loopback) until interrupted: each VNC
/// client that connects gets its own connection through the API.
pub async fn vnc(
    cluster: &ClusterArgs,
    namespace: &str,
    name: &str,
    listen: SocketAddr,
) -> Result<(), RemoteCmdError> {
    let client = console_client(cluster).await?;
    // Fail early, with the cluster's reason, when the display cannot be reached at all.
    drop(remote::open(&client, namespace, name, Kind::Vnc).await?);
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| RemoteCmdError::Io(format!("cannot listen on {listen}"), e))?;
    let addr = l
        .local_addr()
        .map_err(|e| RemoteCmdError::Io("the local port".into(), e))?;
    println!("{addr}");
    eprintln!(
        "The display of {namespace}/{name} is at vnc://{addr} (point a VNC client at {}::{}); Ctrl+C stops",
        addr.ip(),
        addr.port()
    );
    loop {
        let (sock, peer) = l
            .accept()
            .await
            .map_err(|e| RemoteCmdError::Io("accepting a VNC client".into(), e))?;
        let _ = sock.set_nodelay(true);
        let client = client.clone();
        let (ns, n) = (namespace.to_owned(), name.to_owned());
        tokio::spawn(async move {
            match remote::open(&client, &ns, &n, Kind::Vnc).await {
                Ok(conn) => {
                    let (r, w) = sock.into_split();
                    if let Err(e) = remote::bridge(conn, r, w, None).await {
                        eprintln!("VNC client {peer}: {e}");
                    }
                }
                Err(e) => eprintln!("VNC client {peer}: {e}"),
            }
        });
    }
}

/// `ivctl vnc`.
pub fn vnc_command(cluster: &ClusterArgs, a: &super::args::VncArgs) -> std::process::ExitCode {
    let run = async {
        let namespace = cluster.namespace().await;
        if a.url {
            let base = a
                .console_url
                .as_deref()
                .ok_or(RemoteCmdError::NoConsoleUrl)?;
            println!("{}", browser_url(base, &namespace, &a.name));
            return Ok(());
        }
        vnc(cluster, &namespace, &a.name, a.listen).await
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RemoteCmdError::Io("starting the runtime".into(), e))
        .and_then(|rt| rt.block_on(run));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", super::cmd::error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_url_opens_the_vms_display() {
        assert_eq!(
            browser_url("https://console.example:8443/", "team", "web"),
            "https://console.example:8443/#/team/web/vnc"
        );
    }
}
