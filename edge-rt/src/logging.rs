//! `tracing` set-up shared by every binary.

/// Logs to stderr with `filter` (a `tracing` filter such as `info` or
/// `mapper_sdk=debug`), overridden by `RUST_LOG` when that is set; colours
/// only when stderr is a terminal, so log files stay plain. Does nothing if a
/// subscriber is already installed.
pub fn init(filter: &str) {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}
