fn main() -> std::process::ExitCode { quark_host::cli::main() }
