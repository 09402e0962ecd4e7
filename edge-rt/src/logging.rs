//! `tracing` set-up shared by every binary.

/// stderr for log lines, ignoring write errors. `tracing-subscriber` reports a
/// failed write with `eprintln!`, which panics when stderr is a closed pipe
/// (a log reader such as `head` that has exited); the panic would kill
/// whatever task was logging, e.g. the one that turns SIGTERM into a
/// shutdown. A log line that cannot be written is dropped instead.
#[derive(Debug, Clone, Copy)]
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::Write::flush(&mut std::io::stderr());
        Ok(())
    }
}

/// How log lines are written (`--log-format` of every binary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`, the
    /// event's other fields under `fields`, and the open spans), for log
    /// collectors such as Loki, Fluent Bit or Elasticsearch.
    Json,
}

/// Logs to stderr with `filter` (a `tracing` filter such as `info` or
/// `mapper_sdk=debug`), overridden by `RUST_LOG` when that is set, as text;
/// see [`init_with`].
pub fn init(filter: &str) {
    init_with(filter, LogFormat::Text);
}

/// Logs to stderr with `filter` (overridden by `RUST_LOG` when that is set)
/// in `format`. Text has colours only when stderr is a terminal, so log files
/// stay plain; JSON never has colours. Lines that cannot be written (stderr
/// closed) are dropped, never an error. Does nothing if a subscriber is
/// already installed.
pub fn init_with(filter: &str, format: LogFormat) {
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_target(false)
        .with_writer(|| Stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Lets a repeated log line through at most once per interval and counts the
/// ones held back, so a peer that floods bad input cannot flood the log.
///
/// ```
/// let t = edge_rt::logging::Throttle::new(std::time::Duration::from_secs(10));
/// if let Some(held_back) = t.allow() {
///     eprintln!("bad input ({held_back} more like it not logged)");
/// }
/// ```
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    /// At most one line per `every`.
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held
    /// back since the last one; `None` (and counted) otherwise.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                s.0 = Some(now);
                Some(std::mem::take(&mut s.1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn throttle_counts_what_it_holds_back() {
        let t = super::Throttle::new(std::time::Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t0 = super::Throttle::new(std::time::Duration::ZERO);
        assert_eq!(t0.allow(), Some(0));
        assert_eq!(t0.allow(), Some(0));
    }
}
