//! What ivctl does from any machine, against the console server: kube-rs `Client::connect`
//! (the `v5.channel.k8s.io` framing) with a bearer token, through ivctl's own bridge, to an
//! echo agent; Ctrl+] ends the session. (Through the API server's aggregation the path and
//! framing are the same; the API server only adds the front-proxy hop.)

mod support;

use ivctl::vm::remote::{self, Kind, RemoteError};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use support::agent::EchoAgent;
use support::{ALICE, BOB, Env};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn client_for(env: &Env, token: &str) -> kube::Client {
    let uri = format!("https://localhost:{}", env.server.addr.port())
        .parse()
        .unwrap();
    let mut cfg = kube::Config::new(uri);
    cfg.root_cert = Some(
        CertificateDer::pem_slice_iter(env.ca.pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect(),
    );
    cfg.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test]
async fn ivctl_reaches_the_serial_console_with_kube_rs_and_detaches_with_ctrl_bracket() {
    let env = Env::start().await;
    let uid = env.vm("team-a", "web", "Running", "host-1").await;
    let agent = EchoAgent::start(
        &env.ca,
        &env.ca.leaf("hypervisor:host-1", &["host-1"]),
        &uid,
    )
    .await;
    env.host("host-1", &agent.addr.to_string(), true).await;
    env.allow("alice", "team-a", &["console"], &[]).await;

    let conn = remote::open(&client_for(&env, ALICE), "team-a", "web", Kind::Serial)
        .await
        .expect("alice opens the console");
    let (mut keyboard, input) = tokio::io::duplex(1024);
    let (output, mut screen) = tokio::io::duplex(1024);
    let session = tokio::spawn(remote::bridge(conn, input, output, Some(0x1d)));
    keyboard.write_all(b"ls /\r").await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"ls /\r") {
        let n = tokio::time::timeout(support::WAIT, screen.read(&mut buf))
            .await
            .expect("the echo arrives")
            .unwrap();
        assert!(n > 0, "the console closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    // Ctrl+] ends the session; what follows it is never sent.
    keyboard.write_all(b"\x1dnot sent").await.unwrap();
    tokio::time::timeout(support::WAIT, session)
        .await
        .expect("Ctrl+] ends the session")
        .unwrap()
        .unwrap();

    // bob has no role: the cluster's refusal reaches ivctl with its reason.
    match remote::open(&client_for(&env, BOB), "team-a", "web", Kind::Serial).await {
        Err(RemoteError::Refused {
            code: 403, message, ..
        }) => {
            assert!(message.contains("bob"), "{message}")
        }
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("bob must not reach alice's console"),
    }
}
