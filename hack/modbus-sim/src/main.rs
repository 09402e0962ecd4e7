//! `modbus-sim`: simulated Modbus devices.
//!
//! ```text
//! modbus-sim --config sim.yaml
//! modbus-sim --devices 1000 --base-port 15020 --registers 100
//! ```
//! Prints `READY <device> tcp <addr>` (or `rtu <path>`) per device, then reads
//! commands on stdin, answering `ok` or `error: ...`:
//! `latency <device> <ms>`, `silent <device> on|off`, `exception <device> <code>|off`,
//! `drop <device>`, `set <device> holding|coil <address> <value>`,
//! `get <device> holding|input|coil|discrete <address> [count]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use modbus_sim::{Reach, SimConfig, Simulator, Table};
use tokio::io::AsyncBufReadExt;

#[derive(Debug, Parser)]
#[command(about = "Simulated Modbus TCP/RTU devices")]
struct Args {
    /// YAML configuration.
    #[arg(long, conflicts_with = "devices")]
    config: Option<PathBuf>,
    /// Generate this many devices on consecutive ports instead.
    #[arg(long)]
    devices: Option<usize>,
    /// First port for generated devices (0: any free port each).
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Holding and input registers per generated device.
    #[arg(long, default_value_t = 100)]
    registers: u16,
    /// Log filter.
    #[arg(long, default_value = "warn")]
    log: String,
}

fn table(s: &str) -> anyhow::Result<Table> {
    Ok(match s {
        "holding" => Table::Holding,
        "input" => Table::Input,
        "coil" | "coils" => Table::Coils,
        "discrete" => Table::DiscreteInputs,
        other => anyhow::bail!("unknown table `{other}`"),
    })
}

fn command(sim: &Simulator, line: &str) -> anyhow::Result<String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let cmd = w.first().copied().unwrap_or_default();
    if !["latency", "silent", "exception", "drop", "set", "get"].contains(&cmd) {
        anyhow::bail!("unknown command `{cmd}` (latency, silent, exception, drop, set, get)");
    }
    let dev = w.get(1).copied().context("missing device")?;
    let num = |i: usize| -> anyhow::Result<u64> {
        let text = w.get(i).context("missing number")?;
        text.parse()
            .with_context(|| format!("`{text}` is not a number (coils take 0 or 1)"))
    };
    let known = |ok: bool| {
        if ok {
            Ok("ok".to_owned())
        } else {
            anyhow::bail!("unknown device `{dev}`")
        }
    };
    let mut faults = sim
        .faults(dev)
        .with_context(|| format!("unknown device `{dev}`"))?;
    match w.first().copied() {
        Some("latency") => faults.latency_ms = num(2)?,
        Some("silent") => {
            faults.silent = match w.get(2).copied() {
                Some("on") => true,
                Some("off") => false,
                other => anyhow::bail!("silent takes on or off, not {other:?}"),
            }
        }
        Some("exception") => {
            faults.exception = match w.get(2) {
                Some(&"off") | None => None,
                Some(c) => Some(c.parse::<u8>()?),
            }
        }
        Some("drop") => return known(sim.drop_connections(dev)),
        Some("set") => {
            let t = table(w.get(2).context("missing table")?)?;
            return known(sim.write(dev, t, u16::try_from(num(3)?)?, u16::try_from(num(4)?)?));
        }
        Some("get") => {
            let count = if w.len() > 4 {
                u16::try_from(num(4)?)?
            } else {
                1
            };
            let t = table(w.get(2).context("missing table")?)?;
            let v = sim
                .read(dev, t, u16::try_from(num(3)?)?, count)
                .context("address out of range")?;
            return Ok(v.iter().map(u16::to_string).collect::<Vec<_>>().join(" "));
        }
        _ => anyhow::bail!("unknown command"),
    }
    known(sim.set_faults(dev, faults))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cfg = match (&args.config, args.devices) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            yaml_serde::from_str::<SimConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        (None, Some(n)) => SimConfig::generated(n, args.base_port, args.registers),
        (None, None) => anyhow::bail!("give --config FILE or --devices N"),
    };
    let sim = Simulator::start(cfg).await?;
    {
        let mut out = std::io::stdout().lock();
        for name in sim.names() {
            match sim.reach(name) {
                Some(Reach::Tcp(a)) => writeln!(out, "READY {name} tcp {a}")?,
                Some(Reach::Rtu(p)) => writeln!(out, "READY {name} rtu {p}")?,
                None => {}
            }
        }
        out.flush()?;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(l)) if !l.trim().is_empty() => {
                    let reply = command(&sim, &l).unwrap_or_else(|e| format!("error: {e}"));
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{reply}")?;
                    out.flush()?;
                }
                Ok(Some(_)) => {}
                _ => stdin_open = false,
            },
        }
    }
    sim.shutdown().await;
    Ok(())
}
