//! `opcua-sim`: a simulated OPC-UA server.
//!
//! ```text
//! opcua-sim --config plant.yaml --pki-dir /tmp/pki
//! opcua-sim --nodes 5000 --port 4840
//! ```
//! Prints `READY opc.tcp://HOST:PORT/ <pki-dir>/own/cert.der` once serving,
//! then reads commands on stdin, answering `OK ...` or `ERR ...` per line:
//! `get <node>`, `set <node> <value>`, `bad <node> <StatusCodeName>`,
//! `good <node>`, `latency <ms>`, `drop`, `help` (see hack/opcua-sim/README.md).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use opcua_sim::{SimConfig, Simulator};

/// Command lines waiting to be run.
const STDIN_QUEUE: usize = 16;

/// Reads stdin on a thread of its own: a blocking read cannot be cancelled,
/// and tokio's `stdin()` would keep the runtime from shutting down while a
/// read is pending (a parent holding the pipe open would block SIGTERM). The
/// thread ends with the process.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(STDIN_QUEUE);
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(l) = line else { break };
            if tx.blocking_send(l).is_err() {
                break;
            }
        }
    });
    rx
}

#[derive(Debug, Parser)]
#[command(about = "Simulated OPC-UA server (async-opcua)")]
struct Args {
    /// YAML configuration.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also create this many Double counters ns=2;i=1000.. (folder Generated).
    #[arg(long)]
    nodes: Option<u32>,
    /// Period of the generated counters, ms.
    #[arg(long, default_value_t = 1000)]
    period_ms: u64,
    /// Listen address and endpoint host (overrides the configuration).
    #[arg(long)]
    host: Option<String>,
    /// Port, 0 for any free one (overrides the configuration).
    #[arg(long)]
    port: Option<u16>,
    /// PKI directory (overrides the configuration's `pkiDir`).
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    /// Trust every client certificate (as `security.trustClientCerts: true`).
    #[arg(long)]
    trust_client_certs: bool,
    /// MaxNodesPerRead (overrides the configuration).
    #[arg(long)]
    max_nodes_per_read: Option<usize>,
    /// Log filter (logs go to stderr).
    #[arg(long, default_value = "warn")]
    log: String,
}

fn load(args: &Args) -> anyhow::Result<SimConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            yaml_serde::from_str::<SimConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None if args.nodes.is_some() => SimConfig::default(),
        None => anyhow::bail!("give --config FILE, --nodes N, or both"),
    };
    if let Some(n) = args.nodes {
        cfg = cfg.with_generated(n, args.period_ms);
    }
    if let Some(host) = &args.host {
        cfg.host.clone_from(host);
    }
    if let Some(port) = args.port {
        cfg.port = port;
    }
    if let Some(dir) = &args.pki_dir {
        cfg.pki_dir.clone_from(dir);
    }
    if args.trust_client_certs {
        cfg.security.trust_client_certs = true;
    }
    if let Some(n) = args.max_nodes_per_read {
        cfg.limits.max_nodes_per_read = n;
    }
    Ok(cfg)
}

fn say(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cfg = load(&args)?;
    let sim = Simulator::start(cfg).await?;
    say(&format!(
        "READY {} {}",
        sim.endpoint_url(),
        sim.certificate_path().display()
    ))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut lines = stdin_lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            line = lines.recv(), if stdin_open => match line {
                Some(l) if !l.trim().is_empty() => say(&sim.command(&l).await)?,
                Some(_) => {}
                None => stdin_open = false,
            },
        }
    }
    sim.shutdown().await;
    Ok(())
}
