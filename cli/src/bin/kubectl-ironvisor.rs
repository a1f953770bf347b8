//! `kubectl-ironvisor`: the same program as `ivctl`, found by kubectl as the plugin
//! `kubectl ironvisor`.

fn main() -> std::process::ExitCode {
    ivctl::main()
}
