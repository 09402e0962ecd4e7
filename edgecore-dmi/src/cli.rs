//! `edgecore-dmi devices` and `edgecore-dmi mappers`: tables (or JSON) of the
//! running server's devices and mappers, read from its admin socket.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::admin::fetch_status;
use crate::views::{DeviceView, StatusView};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Which devices `edgecore-dmi devices` shows. An empty list lets every
/// device through; a device must pass all three lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Device names: `name` (any namespace) or `namespace/name`.
    pub devices: Vec<String>,
    /// Protocol names (`spec.protocol.protocolName`, exact).
    pub protocols: Vec<String>,
    /// Last reported states, case-insensitive; `unknown` matches a device
    /// that has not reported one.
    pub states: Vec<String>,
}

impl DeviceFilter {
    /// Whether `d` passes.
    pub fn matches(&self, d: &DeviceView) -> bool {
        let id = format!("{}/{}", d.namespace, d.name);
        let state = d
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown");
        (self.devices.is_empty() || self.devices.iter().any(|n| *n == d.name || *n == id))
            && (self.protocols.is_empty() || self.protocols.contains(&d.protocol))
            && (self.states.is_empty() || self.states.iter().any(|s| s.eq_ignore_ascii_case(state)))
    }

    /// `s` with only the devices that pass (mappers and source errors kept).
    pub fn apply(&self, mut s: StatusView) -> StatusView {
        s.devices.retain(|d| self.matches(d));
        s
    }
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
    let mut out = columns(&rows, &notes);
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

/// Renders the mapper table: name, protocol, devices, last contact, state
/// of the link, then the devices and models each one refused.
pub fn render_mappers(s: &StatusView) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "MAPPER".into(),
        "PROTOCOL".into(),
        "DEVICES".into(),
        "LAST CONTACT".into(),
        "LINK".into(),
    ]];
    let mut notes: Vec<(usize, String)> = Vec::new();
    for m in &s.mappers {
        rows.push([
            m.record.name.clone(),
            m.record.protocol.clone(),
            m.devices.to_string(),
            m.last_contact.clone().unwrap_or_else(|| "-".into()),
            match &m.last_error {
                None => "ok".into(),
                Some(_) => "unreachable".into(),
            },
        ]);
        if let Some(e) = &m.last_error {
            notes.push((rows.len() - 1, format!("unreachable: {e}")));
        }
        for r in &m.refusals {
            notes.push((rows.len() - 1, format!("refused {r}")));
        }
    }
    let mut out = columns(&rows, &notes);
    if s.mappers.is_empty() {
        out.push_str("(no mappers registered)\n");
    }
    out
}

/// `rows` as left-aligned columns two spaces apart, each row followed by its
/// notes (`(row index, text)`) as `    ! text` lines.
fn columns<const N: usize>(rows: &[[String; N]], notes: &[(usize, String)]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
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
            out.push_str(&format!("    ! {}\n", one_line(n)));
        }
    }
    out
}

/// `text` with control characters (newlines a peer put in a message) as
/// spaces, so a note stays on one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Prints the registered mappers once.
///
/// # Errors
/// When the admin socket cannot be reached or stdout cannot be written.
pub async fn mappers(admin_socket: &Path, output: Output) -> anyhow::Result<()> {
    let status = fetch_status(admin_socket).await?;
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&status.mappers)?)?,
        Output::Table => write!(stdout, "{}", render_mappers(&status))?,
    }
    stdout.flush()?;
    Ok(())
}

/// Prints the devices that pass `filter` once, or every `interval` with
/// `watch`.
///
/// # Errors
/// When the admin socket cannot be reached (without `watch`; with it the
/// error is shown and the next refresh tries again) or stdout cannot be
/// written.
pub async fn devices(
    admin_socket: &Path,
    output: Output,
    watch: bool,
    interval: Duration,
    filter: &DeviceFilter,
) -> anyhow::Result<()> {
    loop {
        let status = fetch_status(admin_socket).await.map(|s| filter.apply(s));
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
