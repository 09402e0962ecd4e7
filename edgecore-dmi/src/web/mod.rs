//! The read-only device dashboard and its JSON API (`serve --http-addr`),
//! over HTTP/1.1 on one TCP port. Off unless an address is configured.
//!
//! The page (`GET /`, with `/app.js` and `/style.css`, plain HTML, JS and CSS
//! embedded in the binary) shows every device with its state and when it
//! was last heard from, each property's desired value (and what became of
//! it), reported value and age, the problems [`crate::views::StatusView`] carries (missing
//! model, no mapper, a mapper's refusal, a rejected desired value, property
//! and sink errors, device-source errors), and a chart of the last minutes
//! of each numeric property. It updates from the event stream without
//! reloading, and falls back to fetching the status every 2 s while the
//! stream is down.
//!
//! # JSON API
//!
//! * `GET /api/v1/status`: the [`crate::views::StatusView`], the same JSON as
//!   `edgecore-dmi devices -o json`.
//! * `GET /api/v1/history?device=<ns>/<name>[&property=<name>]`: the recent
//!   values of one numeric property, or of all of a device's
//!   ([`api::HistoryView`]: `{device, now_ms, window_ms, max_points,
//!   series: [{property, points: [[ms, value], ...]}]}`). 400 without
//!   `device`, 404 for a device not on this node.
//! * `GET /api/v1/events`: Server-Sent Events. `status` (the status JSON;
//!   once at connection, then when reports arrive, at most once per second,
//!   and at least every 5 s), `samples` (numeric values recorded since the
//!   previous event, [`feed::Samples`]), `resync` (values were lost on the
//!   way: fetch the history again). Every event has an `id`; a comment every
//!   15 s keeps the connection alive. At most
//!   [`HttpLimits::max_event_clients`] streams at once (8); more get 503.
//! * `GET /metrics`: the node's Prometheus metrics ([`crate::metrics`]).
//!
//! Everything else: 404 for other paths, 405 for methods other than `GET`
//! and `HEAD` (nothing can be changed here), JSON errors.
//!
//! # Limits and access
//!
//! Values are kept in memory only ([`history`]: per numeric property at most
//! 600 points over 10 minutes, at most 20 000 series, about a million points
//! in all). The port serves at most 64 connections at once, each with 10 s
//! to send a request head ([`HttpLimits`]).
//!
//! The dashboard has no authentication. It listens on loopback only unless
//! `--http-allow-remote` (`http.allowRemote`) is given ([`check_addr`]);
//! without that flag it also answers only requests whose `Host` is a
//! loopback name or address (403 otherwise), so a web page elsewhere cannot
//! read it through DNS rebinding.
//!
//! # Adding a route
//!
//! Routes are listed in [`router`], one line each; a new one gets the same
//! `Host` check, headers and state ([`WebState`]).

pub mod api;
pub mod feed;
pub mod history;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HttpConfig;
use crate::hub::Hub;

pub use self::feed::Feed;
pub use self::history::{History, HistoryLimits};
pub use self::server::serve;

/// A comment line goes out on idle event streams this often.
pub const EVENT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The page and its assets, embedded in the binary.
mod assets {
    /// `GET /`.
    pub(super) const INDEX_HTML: &str = include_str!("assets/index.html");
    /// `GET /app.js`.
    pub(super) const APP_JS: &str = include_str!("assets/app.js");
    /// `GET /style.css`.
    pub(super) const STYLE_CSS: &str = include_str!("assets/style.css");
}

/// Why the dashboard cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address is not a loopback one and remote access was not allowed.
    #[error(
        "refusing to serve the dashboard on {0}: it is not a loopback address and the dashboard has \
         no authentication; use 127.0.0.1:PORT, or pass --http-allow-remote (http.allowRemote in \
         the config file) to serve it to other machines"
    )]
    NotLoopback(SocketAddr),
    /// The address could not be bound (in use, not an address of this
    /// machine, no permission).
    #[error("cannot listen on {addr} for the dashboard")]
    BindFailed {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Refuses a non-loopback `addr` unless `allow_remote`.
///
/// # Errors
/// [`WebError::NotLoopback`].
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), WebError> {
    if allow_remote || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(WebError::NotLoopback(addr))
    }
}

/// Bounds of the dashboard's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a connection gets to send a complete request head (also between
    /// requests on a kept-alive connection).
    pub header_timeout: Duration,
    /// Event streams open at once; more are answered 503.
    pub max_event_clients: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            max_event_clients: 8,
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct WebState {
    hub: Arc<Hub>,
    history: Arc<History>,
    frames: watch::Sender<Arc<feed::Frame>>,
    event_slots: Arc<Semaphore>,
    limits: HttpLimits,
    allow_remote: bool,
    shutdown: CancellationToken,
}

impl WebState {
    /// The state for `feed`'s hub and history. `allow_remote` turns the
    /// `Host` check off; event streams end at `shutdown`.
    pub fn new(
        feed: &Feed,
        limits: HttpLimits,
        allow_remote: bool,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub: feed.hub().clone(),
            history: feed.history().clone(),
            frames: feed.frame_sender(),
            event_slots: Arc::new(Semaphore::new(limits.max_event_clients.max(1))),
            limits,
            allow_remote,
            shutdown,
        }
    }

    /// The node's state.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The recent values.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }
}

/// The dashboard's routes (see the module docs), with the `Host` check and
/// the common headers on every answer.
pub fn router(state: WebState) -> axum::Router {
    axum::Router::new()
        .route("/", get(api::index))
        .route("/app.js", get(api::app_js))
        .route("/style.css", get(api::style_css))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/history", get(api::history))
        .route("/api/v1/events", get(api::events))
        .route("/metrics", get(api::metrics))
        // Further read-only routes go here, one line each.
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Refuses requests for a non-loopback `Host` (unless remote access is
/// allowed) and adds the headers every answer carries.
async fn guard(State(state): State<WebState>, request: Request, next: Next) -> Response {
    if !state.allow_remote
        && let Some(host) = request.headers().get(header::HOST)
        && !loopback_host(host.to_str().unwrap_or_default())
    {
        return api::error(
            StatusCode::FORBIDDEN,
            "this dashboard answers requests for localhost only (see --http-allow-remote)",
        );
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

/// Whether `host` (a `Host` header: name or address, optional port) names
/// this machine's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The dashboard, bound and ready to serve: built before anything is served
/// so that a refused or busy address stops the start.
#[derive(Debug)]
pub struct WebServer {
    listener: TcpListener,
    feed: Feed,
    allow_remote: bool,
    limits: HttpLimits,
}

impl WebServer {
    /// Checks `cfg.addr` ([`check_addr`]), binds it and subscribes to `hub`'s
    /// reports. Logs `http listening on <address>` (with the port chosen when
    /// the configured one is 0).
    ///
    /// # Errors
    /// [`WebError::NotLoopback`], [`WebError::BindFailed`]; also when no
    /// address is configured.
    pub async fn bind(cfg: &HttpConfig, hub: Arc<Hub>) -> anyhow::Result<Self> {
        let addr = cfg
            .addr
            .ok_or_else(|| anyhow::anyhow!("no dashboard address configured"))?;
        check_addr(addr, cfg.allow_remote)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| WebError::BindFailed { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| WebError::BindFailed { addr, source })?;
        tracing::info!("http listening on {local} (dashboard: http://{local}/)");
        let history = Arc::new(History::new(HistoryLimits::default()));
        Ok(Self {
            listener,
            feed: Feed::new(hub, history),
            allow_remote: cfg.allow_remote,
            limits: HttpLimits::default(),
        })
    }

    /// The same with other limits (the defaults are [`HttpLimits::default`]).
    #[must_use]
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// When the socket cannot tell (it always can once bound).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Spawns the feed and the server on `tasks` as critical tasks (they end
    /// only at `shutdown`).
    pub(crate) fn spawn(self, tasks: &TaskTracker, shutdown: &CancellationToken) {
        let state = WebState::new(&self.feed, self.limits, self.allow_remote, shutdown.clone());
        crate::app::spawn_critical(
            tasks,
            shutdown,
            "dashboard feed",
            self.feed.run(shutdown.clone()),
        );
        crate::app::spawn_critical(
            tasks,
            shutdown,
            "dashboard HTTP",
            serve(self.listener, router(state), self.limits, shutdown.clone()),
        );
    }
}

#[cfg(test)]
mod tests;
