//! Fails the build, saying what to run, when the browser console's npm assets are missing
//! (they are compiled into the binary and never fetched at run time).

fn main() {
    // Read when the script runs, not baked in when it is compiled: a target directory shared
    // by checkouts at different paths reuses one compiled build script for all of them.
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let web = std::path::Path::new(&dir).join("web");
    for needed in [
        "node_modules/@novnc/novnc/core/rfb.js",
        "node_modules/@xterm/xterm/lib/xterm.js",
    ] {
        let path = web.join(needed);
        if !path.is_file() {
            panic!(
                "the browser console's assets are missing ({}): run hack/web-assets.sh \
                 (npm ci in console/web) before building ironvisor-console",
                path.display()
            );
        }
    }
    println!("cargo:rerun-if-changed=web/package-lock.json");
    println!("cargo:rerun-if-changed=web/static");
}
