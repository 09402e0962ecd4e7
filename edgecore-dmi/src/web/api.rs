//! The JSON API and the embedded page: the handlers of [`super::router`].

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use super::feed::{EventKind, Frame, to_json};
use super::history::Series;
use super::{WebState, assets};
use crate::key::ObjectKey;
use crate::views::StatusView;

/// An error answer: `{"error": "..."}` with a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// `status` with `{"error": message}`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// `GET /`: the dashboard page.
pub(super) async fn index() -> Response {
    asset(assets::INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /app.js`: the page's script.
pub(super) async fn app_js() -> Response {
    asset(assets::APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /style.css`: the page's style sheet.
pub(super) async fn style_css() -> Response {
    asset(assets::STYLE_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/status`: the [`StatusView`], as `edgecore-dmi devices -o
/// json` prints it.
pub(super) async fn status(State(state): State<WebState>) -> Json<StatusView> {
    Json(state.hub.status())
}

/// `GET /metrics`: the node's Prometheus metrics ([`crate::metrics`]), the
/// same text as on the admin socket.
pub(super) async fn metrics(State(state): State<WebState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.hub.render_metrics(),
    )
        .into_response()
}

/// The query of `GET /api/v1/history`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryQuery {
    /// The device, `namespace/name` (a bare name is in `default`).
    pub device: Option<String>,
    /// One property; every series of the device when absent.
    pub property: Option<String>,
}

/// The answer of `GET /api/v1/history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryView {
    /// The device, `namespace/name`.
    pub device: String,
    /// The server's clock, ms since the epoch.
    pub now_ms: u64,
    /// How far back series go, ms.
    pub window_ms: u64,
    /// Points per series, at most.
    pub max_points: usize,
    /// The series, by property name; points are `[ms since the epoch, value]`,
    /// oldest first. Properties with no numeric value have none.
    pub series: Vec<Series>,
}

/// `GET /api/v1/history?device=ns/name[&property=p]`.
pub(super) async fn history(
    State(state): State<WebState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Some(device) = q.device.filter(|d| !d.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the query needs device=<namespace>/<name> (and optionally property=<name>)",
        );
    };
    let key = ObjectKey::parse(&device);
    let series = state.history.series(
        key.as_str(),
        q.property.as_deref().filter(|p| !p.is_empty()),
    );
    if series.is_empty() && state.hub.twin_state(key.as_str()).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no device {key} on this node"),
        );
    }
    let limits = state.history.limits();
    Json(HistoryView {
        device: key.as_str().to_owned(),
        now_ms: super::now_ms(),
        window_ms: u64::try_from(limits.window.as_millis()).unwrap_or(u64::MAX),
        max_points: limits.max_points,
        series,
    })
    .into_response()
}

/// `GET /api/v1/events`: the event stream (see the module docs of
/// [`super`]), or 503 when [`super::HttpLimits::max_event_clients`] streams
/// are open.
pub(super) async fn events(State(state): State<WebState>) -> Response {
    let Ok(permit) = state.event_slots.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many event streams open ({}); poll /api/v1/status instead",
                state.limits.max_event_clients
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return r;
    };
    let mut frames = state.frames.subscribe();
    let last_seq = frames.borrow_and_update().seq;
    let mut pending = VecDeque::new();
    if let Some(json) = to_json(&state.hub.status()) {
        pending.push_back(event(EventKind::Status, last_seq, &json));
    }
    let stream = EventStream {
        frames,
        last_seq,
        pending,
        shutdown: state.shutdown.clone(),
        _slot: permit,
    };
    Sse::new(stream.into_stream())
        .keep_alive(KeepAlive::new().interval(super::EVENT_KEEP_ALIVE))
        .into_response()
}

/// One SSE event.
fn event(kind: EventKind, seq: u64, json: &str) -> Event {
    Event::default()
        .event(kind.name())
        .id(seq.to_string())
        .data(json)
}

/// The state of one client's event stream; it holds an event slot until the
/// client goes away (the stream is dropped) or the server shuts down.
struct EventStream {
    frames: watch::Receiver<Arc<Frame>>,
    last_seq: u64,
    pending: VecDeque<Event>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
}

impl EventStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(e) = s.pending.pop_front() {
                    return Some((Ok(e), s));
                }
                tokio::select! {
                    _ = s.shutdown.cancelled() => return None,
                    r = s.frames.changed() => {
                        if r.is_err() {
                            // The feed is gone: the server is stopping.
                            return None;
                        }
                    }
                }
                let frame = s.frames.borrow_and_update().clone();
                if frame.seq > s.last_seq + 1 {
                    // Frames were skipped (a slow client): their points are
                    // missing from this page's charts.
                    s.pending.push_back(event(
                        EventKind::Resync,
                        frame.seq,
                        r#"{"reason":"skipped"}"#,
                    ));
                }
                s.last_seq = frame.seq;
                for (kind, json) in &frame.events {
                    s.pending.push_back(event(*kind, frame.seq, json));
                }
            }
        })
    }
}

/// Any other path: 404 as JSON.
pub(super) async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}
