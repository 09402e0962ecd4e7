//! The whole `main` of a mapper binary: flags, config file, logging, signals.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::{Flags, MapperConfig};
use crate::driver::Driver;
use crate::mapper::Mapper;

pub use edge_rt::shutdown::terminate_signal;

/// Sets up `tracing` with `filter` (overridden by `RUST_LOG`); see
/// [`edge_rt::logging::init`].
pub fn init_tracing(filter: &str) {
    edge_rt::logging::init(filter);
}

/// The whole `main` of a mapper binary: flags, config file, logging, signals.
/// `protocol` is the default `common.protocol`; `driver` serves every device.
pub fn main(protocol: &str, driver: impl Driver) -> ExitCode {
    main_with(protocol, move |_| driver)
}

/// As [`main`], for a driver that needs the mapper's configuration (its
/// state directory, [`MapperConfig::state_dir`], say): `make` builds it once
/// the flags and the config file are read, before the runtime starts.
pub fn main_with<D: Driver>(protocol: &str, make: impl FnOnce(&MapperConfig) -> D) -> ExitCode {
    use clap::Parser;
    let flags = Flags::parse();
    if let Some(shell) = flags.completions {
        let bin = std::env::args_os()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| format!("mapper-{protocol}"));
        edge_rt::cli::print_completions::<Flags>(shell, &bin);
        return ExitCode::SUCCESS;
    }
    edge_rt::logging::init_with(&flags.log, flags.log_format);
    let config = match MapperConfig::load(protocol, &flags) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let driver = make(&config);
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
