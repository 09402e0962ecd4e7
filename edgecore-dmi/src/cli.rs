//! `edgecore-dmi devices`: a table (or JSON) of the running server's devices.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::admin::fetch_status;
use crate::views::StatusView;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) if ms < 120_000 => format!("{}s", ms / 1000),
        Some(ms) if ms < 7_200_000 => format!("{}m", ms / 60_000),
        Some(ms) => format!("{}h", ms / 3_600_000),
    }
}

/// Renders the device table.
pub fn render_table(s: &StatusView) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "DEVICE".into(),
        "STATE".into(),
        "PROPERTY".into(),
        "DESIRED".into(),
        "REPORTED".into(),
        "AGE".into(),
    ]];
    let mut notes: Vec<(usize, String)> = Vec::new();
    for d in &s.devices {
        let id = format!("{}/{}", d.namespace, d.name);
        let state = d.state.clone().unwrap_or_else(|| "-".into());
        if d.properties.is_empty() {
            rows.push([
                id.clone(),
                state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for (i, p) in d.properties.iter().enumerate() {
            let desired = match (&p.desired, &p.desired_status) {
                (None, _) => "-".to_owned(),
                (Some(v), Some(st)) => format!("{v} ({st})"),
                (Some(v), _) => format!("{v} (sent)"),
            };
            rows.push([
                if i == 0 { id.clone() } else { String::new() },
                if i == 0 { state.clone() } else { String::new() },
                p.name.clone(),
                desired,
                p.reported.clone().unwrap_or_else(|| "-".into()),
                age(p.age_ms),
            ]);
            if let Some(e) = &p.error {
                notes.push((rows.len() - 1, format!("{}: {e}", p.name)));
            }
            if let Some(e) = &p.sink_error {
                notes.push((rows.len() - 1, format!("{}: sink: {e}", p.name)));
            }
            if let Some(r) = &p.desired_reason {
                notes.push((
                    rows.len() - 1,
                    format!("{}: desired value rejected: {r}", p.name),
                ));
            }
        }
        for e in &d.errors {
            notes.push((rows.len() - 1, e.clone()));
        }
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        for (_, n) in notes.iter().filter(|(row, _)| *row == i) {
            // A note is one line whatever the text a peer put in it.
            let one_line: String = n
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            out.push_str(&format!("    ! {one_line}\n"));
        }
    }
    if s.devices.is_empty() {
        out.push_str("(no devices)\n");
    }
    if !s.mappers.is_empty() {
        out.push_str("\nMAPPERS\n");
        for m in &s.mappers {
            out.push_str(&format!(
                "  {} ({}) at {}: {} device(s){}\n",
                m.record.name,
                m.record.protocol,
                m.record.address,
                m.devices,
                m.last_error
                    .as_deref()
                    .map(|e| format!(", unreachable: {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    for e in &s.source_errors {
        out.push_str(&format!("! {e}\n"));
    }
    out
}

/// Prints once, or every `interval` with `watch`.
pub async fn devices(
    admin_socket: &Path,
    output: Output,
    watch: bool,
    interval: Duration,
) -> anyhow::Result<()> {
    loop {
        let status = fetch_status(admin_socket).await;
        let mut stdout = std::io::stdout().lock();
        if watch {
            // Clear the screen and go home.
            write!(stdout, "\x1b[2J\x1b[H")?;
        }
        match (&status, output) {
            (Ok(s), Output::Json) => writeln!(stdout, "{}", serde_json::to_string_pretty(s)?)?,
            (Ok(s), Output::Table) => write!(stdout, "{}", render_table(s))?,
            (Err(e), _) if watch => writeln!(stdout, "{e}")?,
            (Err(_), _) => return status.map(|_| ()),
        }
        stdout.flush()?;
        drop(stdout);
        if !watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
