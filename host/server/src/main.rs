fn main() -> std::process::ExitCode { quark::cli::main() }
