//! The `ironvisor-release` command line as hack/release.sh calls it. (Also makes cargo build
//! the binary for the suite: `tests/tests/release.rs` runs it from the target directory.)

use std::process::Command;

fn release() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ironvisor-release"))
}

#[test]
fn it_prints_its_version_and_refuses_an_image_without_a_root_filesystem() {
    let out = release().arg("--version").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ironvisor-release "), "{text}");

    let out = release()
        .args(["image", "--out", "/nonexistent/x.tar", "--entrypoint", "/x"])
        .args(["--user", "0:0", "--tag", "t", "--created", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rootfs"), "{err}");
}
