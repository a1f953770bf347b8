//! The browser console against a real guest: headless Chromium (Debian's, driven by
//! playwright-core, console/web/tests/screen.mjs) logs in to the page the console server
//! serves with alice's token, opens the VM's graphical console (noVNC → console server → the
//! real agent's console port → the VM's VNC socket), and the screenshot of the page's canvas,
//! read with Debian's tesseract, shows what the tiny guest printed on its screen; then typing
//! into the serial terminal (xterm.js) reaches the guest's shell and its answer comes back.
//!
//! Needs libvirtd (hack/start-libvirtd.sh), chromium and tesseract (hack/install-deps.sh),
//! playwright-core (hack/web-assets.sh) and the workspace's binaries.

use std::path::Path;
use std::process::Command;

use ironvisor_tests::console::{ConsoleStack, SCREEN_MARKER};
use ironvisor_tests::identities::user_token;
use ironvisor_tests::{repo_root, run};
use serde_json::Value;

/// Text for comparison despite OCR noise: upper case, letters and digits only, and the
/// digit 0 read as the letter O (the VGA font's O and 0 are close).
fn normalise(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| match c.to_ascii_uppercase() {
            '0' => 'O',
            c => c,
        })
        .collect()
}

/// What tesseract reads in the image at `png`.
fn ocr(png: &Path) -> String {
    let out = run(Command::new("tesseract").arg(png).args(["-", "--psm", "6"]));
    assert!(
        out.status.success(),
        "tesseract {} failed (hack/install-deps.sh installs it with its English data): {}",
        png.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_tools(web: &Path) {
    for tool in ["/usr/bin/chromium", "/usr/bin/tesseract"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run hack/install-deps.sh"
        );
    }
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run hack/web-assets.sh"
    );
}

#[test]
fn the_browser_shows_the_guests_screen_and_its_serial_terminal_reaches_the_guest() {
    let web = repo_root().join("console/web");
    require_tools(&web);
    let stack = ConsoleStack::start("cbro", &["alice"]);
    let (sys, ns) = (&stack.sys, stack.ns.as_str());
    sys.console_user(ns, "alice", &["console", "vnc"], &["desk"]);
    stack.running_console_vm("desk");

    let png = sys.dir.path().join("screen.png");
    let out = run(Command::new("node")
        .arg(web.join("tests/screen.mjs"))
        .arg(stack.server.page_url())
        .args([&user_token("alice"), ns, "desk"])
        .arg(&png)
        .args(["echo $((6*7))x", "42x"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "no report from the browser: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        report["error"].is_null(),
        "the browser test failed: {report:#}"
    );
    assert_eq!(report["answered"], true, "{report:#}");

    let text = ocr(&png);
    eprintln!("tesseract read from the canvas: {text:?}");
    assert!(
        normalise(&text).contains(&normalise(SCREEN_MARKER)),
        "the canvas screenshot {} does not show {SCREEN_MARKER:?}; tesseract read: {text:?}",
        png.display()
    );
}

#[test]
fn case_spacing_and_zero_for_o_are_tolerated_but_other_text_is_not() {
    let marker = normalise(SCREEN_MARKER);
    assert!(normalise("IRONVIS0R  Screen\nREADY.").contains(&marker));
    assert!(!normalise("IRONVISOR-GUEST-UP").contains(&marker));
}
