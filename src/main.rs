fn main() -> std::process::ExitCode {
    densetrain::cli::main()
}
