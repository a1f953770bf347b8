//! `ivctl`.

fn main() -> std::process::ExitCode {
    ivctl::main()
}
