//! The console server against a devcluster (TokenReview, SubjectAccessReview, RBAC) and an
//! echo agent on the agent's console-port contract: who reaches which console, how refusals
//! look, front-proxy identities, and the agent's certificate checks.

mod support;

use ironvisor_crds::console::{SUBRESOURCE_GROUP, SUBRESOURCE_VERSION};
use support::agent::EchoAgent;
use support::{ALICE, BOB, Ca, Dial, Env, connect, events, eventually, round_trip};

#[tokio::test]
async fn two_users_reach_only_the_consoles_rbac_allows() {
    let env = Env::start().await;
    let agent_leaf = env.ca.leaf("hypervisor:host-1", &["host-1"]);
    let uid_a = env.vm("team-a", "web", "Running", "host-1").await;
    let uid_b = env.vm("team-b", "db", "Running", "host-1").await;
    let agent_a = EchoAgent::start(&env.ca, &agent_leaf, &uid_a).await;
    env.host("host-1", &agent_a.addr.to_string(), true).await;
    env.allow("alice", "team-a", &["console"], &[]).await;
    env.allow("bob", "team-b", &["console", "vnc"], &["db"])
        .await;

    // alice: her namespace's serial console works, end to end through the agent.
    let mut ws = connect(
        &env,
        &Env::path("team-a", "web", "console"),
        Dial {
            token: Some(ALICE),
            ..Default::default()
        },
    )
    .await
    .expect("alice opens team-a/web");
    assert_eq!(round_trip(&mut ws, b"uname\r").await, b"uname\r");
    drop(ws);

    // ...but not its VNC, nor bob's VM.
    let (code, status) = connect(
        &env,
        &Env::path("team-a", "web", "vnc"),
        Dial {
            token: Some(ALICE),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Forbidden");
    assert!(
        status["message"].as_str().unwrap().contains("alice"),
        "{status}"
    );
    let (code, _) = connect(
        &env,
        &Env::path("team-b", "db", "console"),
        Dial {
            token: Some(ALICE),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);

    // bob: the one VM his role names, nothing in team-a.
    let (code, _) = connect(
        &env,
        &Env::path("team-a", "web", "console"),
        Dial {
            token: Some(BOB),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);
    // db's host agent serves another uid here: the console server reaches the agent, which
    // says the VM is not there (a conflict the user can retry), proving bob passed RBAC.
    let (code, status) = connect(
        &env,
        &Env::path("team-b", "db", "console"),
        Dial {
            token: Some(BOB),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("host-1"),
        "{status}"
    );
    let _ = uid_b;

    // Audited: who, which console, how long.
    let client = env.client.clone();
    eventually("alice's connection is audited", || {
        let client = client.clone();
        async move {
            let opened = events(&client, "team-a", "ConsoleConnected").await;
            let closed = events(&client, "team-a", "ConsoleDisconnected").await;
            opened
                .iter()
                .any(|n| n.contains("user alice opened the serial console"))
                && closed
                    .iter()
                    .any(|n| n.contains("user alice closed the serial console after"))
        }
    })
    .await;
    let text = {
        let enc = prometheus::TextEncoder::new();
        enc.encode_to_string(&env.server.metrics.registry.gather())
            .unwrap()
    };
    assert!(
        text.contains(r#"ironvisor_console_requests_total{kind="serial",result="connected"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ironvisor_console_requests_total{kind="serial",result="forbidden"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_are_kubernetes_statuses_with_the_reason() {
    let env = Env::start().await;
    env.allow("alice", "team-a", &["console", "vnc"], &[]).await;
    let token = || Dial {
        token: Some(ALICE),
        ..Default::default()
    };
    let path = |name: &str| Env::path("team-a", name, "console");

    let (code, s) = connect(&env, &path("web"), Dial::default())
        .await
        .unwrap_err();
    assert_eq!(
        (code, s["reason"].as_str()),
        (401, Some("Unauthorized")),
        "{s}"
    );
    let (code, _) = connect(
        &env,
        &path("web"),
        Dial {
            token: Some("not-a-token"),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 401);

    let (code, s) = connect(&env, &path("missing"), token()).await.unwrap_err();
    assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")), "{s}");

    env.vm("team-a", "stopped", "Stopped", "host-1").await;
    let (code, s) = connect(&env, &path("stopped"), token()).await.unwrap_err();
    assert_eq!(code, 409, "{s}");
    assert!(
        s["message"].as_str().unwrap().contains("not running"),
        "{s}"
    );

    env.vm("team-a", "web", "Running", "host-2").await;
    let (code, s) = connect(&env, &path("web"), token()).await.unwrap_err();
    assert_eq!(code, 502, "{s}");
    assert!(s["message"].as_str().unwrap().contains("host-2"), "{s}");

    // An endpoint nobody listens on: 502 with the dial error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    env.host("host-2", &addr, true).await;
    let (code, s) = connect(&env, &path("web"), token()).await.unwrap_err();
    assert_eq!(code, 502, "{s}");
    assert!(
        s["message"].as_str().unwrap().contains("unreachable"),
        "{s}"
    );
}

#[tokio::test]
async fn an_agent_whose_certificate_names_another_host_or_ca_is_refused() {
    let env = Env::start().await;
    env.allow("alice", "team-a", &["console"], &[]).await;
    let uid = env.vm("team-a", "web", "Running", "host-1").await;
    // Signed by the console CA, but for host-9: a host cannot pose as another.
    let wrong_name = EchoAgent::start(
        &env.ca,
        &env.ca.leaf("hypervisor:host-9", &["host-9"]),
        &uid,
    )
    .await;
    env.host("host-1", &wrong_name.addr.to_string(), true).await;
    let dial = || Dial {
        token: Some(ALICE),
        ..Default::default()
    };
    let path = Env::path("team-a", "web", "console");
    let (code, s) = connect(&env, &path, dial()).await.unwrap_err();
    assert_eq!(code, 502, "{s}");
    assert!(s["message"].as_str().unwrap().contains("TLS"), "{s}");

    // The right name from another CA.
    let rogue = Ca::new("rogue");
    let rogue_agent =
        EchoAgent::start(&env.ca, &rogue.leaf("hypervisor:host-1", &["host-1"]), &uid).await;
    env.host("host-1", &rogue_agent.addr.to_string(), true)
        .await;
    let (code, _) = connect(&env, &path, dial()).await.unwrap_err();
    assert_eq!(code, 502);

    // The genuine agent; and after the VM moves to host-2, a new console goes there.
    let a1 = EchoAgent::start(
        &env.ca,
        &env.ca.leaf("hypervisor:host-1", &["host-1"]),
        &uid,
    )
    .await;
    env.host("host-1", &a1.addr.to_string(), true).await;
    let mut ws = connect(&env, &path, dial())
        .await
        .expect("the genuine agent");
    assert_eq!(round_trip(&mut ws, b"x").await, b"x");
    let a2 = EchoAgent::start(
        &env.ca,
        &env.ca.leaf("hypervisor:host-2", &["host-2"]),
        &uid,
    )
    .await;
    env.host("host-2", &a2.addr.to_string(), true).await;
    env.vm_status("team-a", "web", "Running", "host-2").await;
    drop(a1);
    let mut ws = connect(&env, &path, dial())
        .await
        .expect("the console follows the VM");
    assert_eq!(
        round_trip(&mut ws, b"after migration").await,
        b"after migration"
    );
}

#[tokio::test]
async fn front_proxy_headers_count_only_with_the_front_proxy_certificate() {
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
    let path = Env::path("team-a", "web", "console");
    let as_alice = || {
        vec![
            ("X-Remote-User", "alice".to_owned()),
            ("X-Remote-Group", "devs".to_owned()),
        ]
    };

    // Headers alone are not an identity.
    let (code, _) = connect(
        &env,
        &path,
        Dial {
            headers: as_alice(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 401);

    let front = Ca::new("front-proxy-ca");
    support::put_front_proxy(&env.client, &front).await;
    let proxy = front.leaf("front-proxy-client", &[]);
    // The ConfigMap reaches the server through its watch: retry until it is loaded.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let mut ws = loop {
        let r = connect(
            &env,
            &path,
            Dial {
                headers: as_alice(),
                cert: Some(&proxy),
                ..Default::default()
            },
        )
        .await;
        match r {
            Ok(w) => break w,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "front proxy refused: {e:?}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        round_trip(&mut ws, b"via the aggregator").await,
        b"via the aggregator"
    );

    // The front proxy vouches for bob: RBAC still applies to bob.
    let (code, _) = connect(
        &env,
        &path,
        Dial {
            headers: vec![("X-Remote-User", "bob".to_owned())],
            cert: Some(&proxy),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);

    // A certificate from the front-proxy CA with a name not allowed to vouch.
    let other = front.leaf("someone-else", &[]);
    let (code, s) = connect(
        &env,
        &path,
        Dial {
            headers: as_alice(),
            cert: Some(&other),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(code, 401, "{s}");
}

#[tokio::test]
async fn discovery_names_both_subresources() {
    let env = Env::start().await;
    let url = format!(
        "https://localhost:{}/apis/{SUBRESOURCE_GROUP}/{SUBRESOURCE_VERSION}",
        env.server.addr.port()
    );
    let ca = reqwest::Certificate::from_pem(env.ca.pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("localhost", env.server.addr)
        .build()
        .unwrap();
    let list: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["resources"][0]["name"], "virtualmachines/console");
    assert_eq!(list["resources"][1]["name"], "virtualmachines/vnc");
    let page = http
        .get(format!("https://localhost:{}/", env.server.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Ironvisor console"));
}
