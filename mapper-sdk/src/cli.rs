//! The whole `main` of a mapper binary: flags, config file, logging, signals.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{Flags, MapperConfig};
use crate::driver::Driver;
use crate::mapper::Mapper;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn terminate_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Sets up `tracing` with `filter` (overridden by `RUST_LOG`).
pub fn init_tracing(filter: &str) {
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

/// The whole `main` of a mapper binary: flags, config file, logging, signals.
/// `protocol` is the default `common.protocol`; `driver` serves every device.
pub fn main(protocol: &str, driver: impl Driver) -> ExitCode {
    use clap::Parser;
    let flags = Flags::parse();
    init_tracing(&flags.log);
    let config = match MapperConfig::load(protocol, &flags) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            terminate_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        Mapper::new(config, driver).run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
