//! `device-controller`: reconciles Devices and DeviceModels; see the crate docs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use device_controller::controller::{Context, StatusMode, run};
use device_controller::leader::{self, LeaseConfig};
use device_controller::metrics::{self, Metrics};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconciles devices.kubeedge.io Devices and DeviceModels"
)]
struct Args {
    /// Only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Where twins live: device-status (KubeEdge v1.23+) or legacy (in the Device).
    #[arg(long, value_enum, default_value = "device-status")]
    status_mode: StatusMode,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Lease for leader election.
    #[arg(long, default_value = "device-controller")]
    lease_name: String,
    /// Namespace of the lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kubeedge")]
    lease_namespace: String,
    /// This replica's identity.
    #[arg(long, env = "POD_NAME", default_value = "device-controller")]
    identity: String,
    /// Lease validity without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime_parse)]
    lease_duration: Duration,
    /// Log filter.
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    log: String,
    /// Log line format: `text` or `json` (one JSON object per line).
    #[arg(long, value_enum, default_value = "text", env = "LOG_FORMAT")]
    log_format: edge_rt::logging::LogFormat,
    /// Print the completion script for this shell (bash, zsh, fish,
    /// elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL")]
    completions: Option<edge_rt::cli::Shell>,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 15s: {e}"))
}

async fn real_main(args: Args) -> anyhow::Result<bool> {
    let client = kube::Client::try_default().await?;
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        edge_rt::shutdown::terminate_signal().await;
        tracing::info!("shutting down");
        sd.cancel();
    });
    let m = Arc::new(Metrics::default());
    let (mm, sd) = (m.clone(), shutdown.clone());
    let addr = args.metrics_addr;
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(addr, mm, sd).await {
            tracing::error!(%addr, error = %e, "metrics endpoint failed");
        }
    });
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let cfg = LeaseConfig {
        name: args.lease_name.clone(),
        identity: args.identity.clone(),
        duration: args.lease_duration,
        renew: args.lease_duration / 3,
    };
    tracing::info!(lease = %format!("{}/{}", args.lease_namespace, cfg.name), identity = %cfg.identity, "waiting for leadership");
    if !leader::acquire(&leases, &cfg, &shutdown).await {
        return Ok(true);
    }
    m.leader.set(1);
    tracing::info!(identity = %cfg.identity, "leading; reconciling");
    let controllers = shutdown.child_token();
    let ctx = Context::new(client, m.clone(), args.status_mode, &args.identity);
    let ctl = tokio::spawn(run(ctx, args.namespace.clone(), controllers.clone()));
    let kept = leader::hold(&leases, &cfg, &shutdown).await;
    controllers.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), ctl).await;
    m.leader.set(0);
    if kept {
        leader::release(&leases, &cfg).await;
    }
    Ok(kept)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        edge_rt::cli::print_completions::<Args>(shell, "device-controller");
        return ExitCode::SUCCESS;
    }
    edge_rt::logging::init_with(&args.log, args.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(real_main(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            tracing::error!("leadership lost; exiting so that a fresh start competes again");
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
