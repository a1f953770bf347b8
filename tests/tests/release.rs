//! The release's pieces that run in the suite (the release build itself is `hack/release.sh`,
//! outside the suite's time): an image built by `ironvisor-release` is a valid, reproducible
//! OCI archive that skopeo and umoci read and whose entrypoint runs from its root filesystem,
//! and the agent's DaemonSet matches what the agent reads and serves.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironvisor_tests::image::{chroot_wrapper, unpack};
use ironvisor_tests::system::{System, bin, wait_for};
use ironvisor_tests::{repo_root, run, yaml_documents};
use serde_json::Value;

fn stdout_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A root filesystem with busybox (from Debian's busybox-static) as its only program.
fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))
        .expect("/bin/busybox (hack/install-deps.sh installs busybox-static)");
}

fn build_image(rootfs: &Path, out: &Path) -> String {
    stdout_ok(
        Command::new(bin("ironvisor-release"))
            .arg("image")
            .arg("--rootfs")
            .arg(rootfs)
            .arg("--out")
            .arg(out)
            .args(["--entrypoint", "/bin/busybox", "--user", "65532:65532"])
            .args([
                "--env",
                "PATH=/bin",
                "--label",
                "org.opencontainers.image.version=9.9.9",
            ])
            .args(["--tag", "v9.9.9", "--created", "1700000000"]),
    )
    .trim()
    .to_owned()
}

#[test]
fn an_image_built_twice_is_the_same_archive_skopeo_reads_and_its_entrypoint_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    let digest = build_image(&rootfs, &a);
    // The second build from a copy made later, with other file times.
    std::thread::sleep(Duration::from_millis(1100));
    let copy = dir.path().join("copy");
    busybox_rootfs(&copy);
    assert_eq!(build_image(&copy, &b), digest);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "the archives differ"
    );

    let info: Value = serde_json::from_str(&stdout_ok(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", a.display())),
    ))
    .unwrap();
    assert_eq!(info["Digest"], digest.as_str());
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Labels"]["org.opencontainers.image.version"], "9.9.9");

    let unpacked = unpack(&a, &dir.path().join("unpacked"));
    let said = stdout_ok(
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&unpacked)
            .args(["/bin/busybox", "echo", "hello from the image"]),
    );
    assert_eq!(said, "hello from the image\n");
}

#[test]
fn a_program_run_through_the_chroot_wrapper_sees_the_bind_mounted_host_paths() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("marker"), "from the host\n").unwrap();
    let wrapper = chroot_wrapper(
        &rootfs,
        &[(host.to_str().unwrap(), "/mnt/host")],
        "/bin/busybox",
    );
    let (program, args) = wrapper.split_first().unwrap();
    let said = stdout_ok(
        Command::new(program)
            .args(args)
            .arg("/ignored/host/binary")
            .args(["cat", "/mnt/host/marker"]),
    );
    assert_eq!(said, "from the host\n");
    assert!(
        !rootfs.join("mnt/host/marker").exists(),
        "the mount must end with the wrapped program"
    );
}

fn agent_container() -> Value {
    let out = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("manifests")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = yaml_documents(&String::from_utf8(out.stdout).unwrap());
    let ds = docs
        .into_iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "ironvisor-agent")
        .expect("the agent's DaemonSet");
    ds["spec"]["template"]["spec"].clone()
}

fn arg<'a>(args: &'a [&str], flag: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")))
        .unwrap_or_else(|| panic!("the DaemonSet passes no {flag}: {args:?}"))
}

#[test]
fn the_daemonset_arguments_parse_and_its_paths_and_port_match_its_mounts_and_probes() {
    let spec = agent_container();
    let c = &spec["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // The agent accepts every argument (clap rejects an unknown flag or value before --help).
    let out = run(Command::new(bin("ironvisor-agent"))
        .args(&args)
        .arg("--help")
        .env("NODE_NAME", "n"));
    assert!(
        out.status.success(),
        "the agent refuses {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mounts: Vec<(&str, bool)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m["readOnly"] == true))
        .collect();
    for flag in ["--state-dir", "--images-dir"] {
        let path = arg(&args, flag);
        assert!(
            mounts
                .iter()
                .any(|(m, ro)| !ro && Path::new(path).starts_with(m)),
            "{flag}={path} is not on a writable host mount: {mounts:?}"
        );
    }
    // libvirt's client library looks under /run/libvirt; the image links /var/run to /run.
    assert!(mounts.contains(&("/var/run/libvirt", false)), "{mounts:?}");
    assert!(
        mounts.contains(&("/dev/kvm", true)),
        "the health check stats /dev/kvm: {mounts:?}"
    );
    // The QEMU user's groups come from the host's user database.
    assert!(
        mounts.contains(&("/etc/passwd", true)) && mounts.contains(&("/etc/group", true)),
        "{mounts:?}"
    );

    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port");
    let addr = arg(&args, "--metrics-addr");
    assert_eq!(
        addr,
        format!("0.0.0.0:{}", port["containerPort"]),
        "the agent serves where the port points"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
}

fn http_get(port: u16, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not HTTP: {text:?}"))
}

#[test]
fn the_agent_answers_the_daemonset_probes_paths() {
    let spec = agent_container();
    let c = &spec["containers"][0];
    let sys = System::start();
    let images = tempfile::tempdir().unwrap();
    let agent = sys.agent(
        &format!("probes-{}", std::process::id()),
        "test:///default",
        images.path(),
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = c[probe]["httpGet"]["path"].as_str().expect("an HTTP probe");
        wait_for(
            &format!("{probe} {path} to answer 200"),
            Duration::from_secs(60),
            || match http_get(agent.metrics_port, path)? {
                200 => Ok(()),
                code => Err(format!("{path}: {code}")),
            },
        );
    }
}
