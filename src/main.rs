//! `bunker`: see `bunker --help`.

fn main() -> std::process::ExitCode {
    bunker::cli::main()
}
