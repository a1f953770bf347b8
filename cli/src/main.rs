//! Placeholder until the cli lands; see the open issues.

fn main() {
    eprintln!("not built yet");
    std::process::exit(2);
}
