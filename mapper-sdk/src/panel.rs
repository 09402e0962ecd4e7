//! The REST data panel on the mapper's HTTP port (`common.http_port`), beside
//! `/metrics`: mapper-framework's routes at the same paths (spec §4.6), so
//! existing clients keep working, with JSON errors and proper verbs.
//!
//! | route | verb | answer |
//! |---|---|---|
//! | `/api/v1/ping` | GET | `{apiVersion, statusCode, timeStamp, Message}` |
//! | `/api/v1/device/{namespace}/{name}/{property}` | GET | `Data: {DeviceName, PropertyName, Namespace, Value, Type, TimeStamp}`: the latest reading (the collect cycle's shared read; no extra device read) |
//! | `/api/v1/devicemethod/{namespace}/{name}` | GET | `Data: {Methods: [{Name, Path, Parameters: [{PropertyName, ValueType}]}]}` from the device's `spec.methods` |
//! | `/api/v1/devicemethod/{namespace}/{name}/{method}/{property}/{data}` | PUT, POST | writes `data` (checked against the model) to the device now; `Message` |
//! | `/api/v1/meta/model/{namespace}/{name}` | GET | the device's model: `{id, name, namespace, description, properties: [{name, dataType, description, accessMode, minimum, maximum, unit}]}` |
//! | `/api/v1/database/{namespace}/{name}` | GET | 501: query the database itself (stock answers 503) |
//! | `/api/v1/openapi.json` | GET | the OpenAPI 3 document of these routes (`mapper-sdk/openapi.json`) |
//!
//! Differences from mapper-framework: a write is PUT or POST (a GET of the
//! write path answers 405 and changes nothing); errors are JSON
//! `{apiVersion, statusCode, timeStamp, error}` with a fitting status (400 bad
//! value, 404 unknown device/property/method, 409 ReadOnly, 502 device
//! refused, 503 unreachable) instead of plain-text 500s. `X-Correlation-ID` is
//! echoed as stock does.
//!
//! Access: the port binds to loopback unless `common.http_bind` says
//! otherwise. When it is bound elsewhere, the panel requires
//! `Authorization: Bearer <token>` with the token from `MAPPER_HTTP_TOKEN` or
//! the file `common.http_token_file`. With a token configured, a request
//! without it (or with another) gets 401; bound beyond loopback with no token
//! configured, the panel answers 403 to everyone (metrics stay available).
//! The port serves at most 64 connections at once, each for at most 60 s,
//! and a client must send its request headers within 10 s.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as JsonValue, json};

use crate::runtime::{Supervisor, WriteError};
use crate::spec::ObjectId;

/// The OpenAPI document of the panel, checked in beside the crate's manifest.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Who may use the panel.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// Anyone who reaches the port (loopback bind).
    Open,
    /// Only requests with `Authorization: Bearer <token>`.
    Token(String),
    /// Nobody: bound beyond loopback without a token.
    Closed,
}

#[derive(Clone)]
struct Panel {
    supervisor: Arc<Supervisor>,
    access: Access,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn base(status: StatusCode) -> serde_json::Map<String, JsonValue> {
    let mut m = serde_json::Map::new();
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("statusCode".into(), json!(status.as_u16()));
    m.insert("timeStamp".into(), json!(now()));
    m
}

fn ok(extra: JsonValue) -> Response {
    let mut m = base(StatusCode::OK);
    if let JsonValue::Object(e) = extra {
        m.extend(e);
    }
    (StatusCode::OK, Json(JsonValue::Object(m))).into_response()
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    let mut m = base(status);
    m.insert("error".into(), json!(text.into()));
    (status, Json(JsonValue::Object(m))).into_response()
}

fn write_status(e: &WriteError) -> StatusCode {
    match e {
        WriteError::UnknownDevice(_) | WriteError::UnknownProperty { .. } => StatusCode::NOT_FOUND,
        WriteError::Invalid { reason, .. } if reason.contains("ReadOnly") => StatusCode::CONFLICT,
        WriteError::Invalid { .. } => StatusCode::BAD_REQUEST,
        WriteError::Refused { .. } => StatusCode::BAD_GATEWAY,
        WriteError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        WriteError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn ping() -> Response {
    ok(json!({"Message": "This is v1 API, the server is running normally."}))
}

async fn read(
    State(p): State<Panel>,
    Path((ns, name, property)): Path<(String, String, String)>,
) -> Response {
    let id = ObjectId::new(&ns, &name);
    let Some((_, model)) = p.supervisor.device(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} is not known to this mapper"),
        );
    };
    let Some(snap) = p.supervisor.snapshot(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} is not known to this mapper"),
        );
    };
    let Some(prop) = snap.property(&property) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} has no property {property}"),
        );
    };
    let (Some(v), Some(at)) = (&prop.reported, prop.reported_at) else {
        let why = prop
            .error
            .clone()
            .unwrap_or_else(|| "nothing read yet".into());
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{id} {property}: no value: {why}"),
        );
    };
    let ty = model
        .properties
        .get(&property)
        .map(|m| m.type_text.to_ascii_lowercase())
        .unwrap_or_default();
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    ok(json!({"Data": {
        "DeviceName": name,
        "PropertyName": property,
        "Namespace": ns,
        "Value": v.to_string(),
        "Type": ty,
        "TimeStamp": ms,
    }}))
}

async fn methods(State(p): State<Panel>, Path((ns, name)): Path<(String, String)>) -> Response {
    let id = ObjectId::new(&ns, &name);
    let Some((spec, model)) = p.supervisor.device(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} is not known to this mapper"),
        );
    };
    let list: Vec<JsonValue> = spec
        .methods
        .iter()
        .map(|m| {
            json!({
                "Name": m.name,
                "Path": format!("/api/v1/devicemethod/{ns}/{name}/{}/{{propertyName}}/{{data}}", m.name),
                "Parameters": m.property_names.iter().map(|pn| json!({
                    "PropertyName": pn,
                    "ValueType": model.properties.get(pn).map(|mp| mp.type_text.clone()).unwrap_or_default(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    ok(json!({"Data": {"Methods": list}}))
}

async fn write(
    State(p): State<Panel>,
    Path((ns, name, method, property, data)): Path<(String, String, String, String, String)>,
) -> Response {
    let id = ObjectId::new(&ns, &name);
    let Some((spec, _)) = p.supervisor.device(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} is not known to this mapper"),
        );
    };
    let Some(m) = spec.methods.iter().find(|m| m.name == method) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} has no method {method}"),
        );
    };
    if !m.property_names.contains(&property) {
        return error(
            StatusCode::NOT_FOUND,
            format!("method {method} of {id} does not write property {property}"),
        );
    }
    if !dmi_proto::rules::is_valid_twin_value(&data) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{id} {property}: the value must be at most {} characters of letters, digits and -_.,:/@#%+=~ (EdgeCore's twin value rule, as for desired values)",
                dmi_proto::rules::TWIN_VALUE_MAX
            ),
        );
    }
    match p.supervisor.write_property(&id, &property, &data).await {
        Ok(()) => ok(json!({"Message": format!("Write data {data} to device {id} successfully")})),
        Err(e) => error(write_status(&e), e.to_string()),
    }
}

async fn write_by_get() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "a write changes the device: use PUT or POST on this path (GET never changes state here)",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("PUT, POST"));
    r
}

async fn model(State(p): State<Panel>, Path((ns, name)): Path<(String, String)>) -> Response {
    let id = ObjectId::new(&ns, &name);
    let Some((_, m)) = p.supervisor.device(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("device {id} is not known to this mapper"),
        );
    };
    let props: Vec<JsonValue> = m
        .properties
        .values()
        .map(|mp| {
            json!({
                "name": mp.name,
                "dataType": mp.type_text,
                "description": "",
                "accessMode": match mp.access_mode {
                    crate::value::AccessMode::ReadWrite => "ReadWrite",
                    crate::value::AccessMode::ReadOnly => "ReadOnly",
                },
                "minimum": mp.minimum.map(|v| v.to_string()).unwrap_or_default(),
                "maximum": mp.maximum.map(|v| v.to_string()).unwrap_or_default(),
                "unit": mp.unit,
            })
        })
        .collect();
    ok(json!({
        "id": m.id.to_string(),
        "name": m.id.name,
        "namespace": m.id.namespace,
        "description": "",
        "properties": props,
    }))
}

async fn database(Path((ns, name)): Path<(String, String)>) -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{ns}/{name}: this mapper writes to databases but does not query them; query the database itself"
        ),
    )
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route {}; see /api/v1/openapi.json", uri.path()),
    )
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Access check and `X-Correlation-ID` echo.
async fn guard(State(p): State<Panel>, req: Request, next: Next) -> Response {
    let correlation = req.headers().get("x-correlation-id").cloned();
    let allowed = match &p.access {
        Access::Open => Ok(()),
        Access::Closed => Err(error(
            StatusCode::FORBIDDEN,
            "the data panel is bound beyond loopback without a token: set MAPPER_HTTP_TOKEN or common.http_token_file",
        )),
        Access::Token(t) => {
            if bearer(req.headers()).is_some_and(|b| constant_time_eq(b.as_bytes(), t.as_bytes())) {
                Ok(())
            } else {
                let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                Err(r)
            }
        }
    };
    let mut resp = match allowed {
        Ok(()) => next.run(req).await,
        Err(r) => r,
    };
    if let Some(c) = correlation {
        resp.headers_mut().insert("x-correlation-id", c);
    }
    resp
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 7235 §2.1).
fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The panel's routes over `supervisor`, guarded by `access`.
pub(crate) fn router(supervisor: Arc<Supervisor>, access: Access) -> axum::Router {
    let state = Panel { supervisor, access };
    axum::Router::new()
        .route("/api/v1/ping", get(ping))
        .route("/api/v1/device/{ns}/{name}/{property}", get(read))
        .route("/api/v1/devicemethod/{ns}/{name}", get(methods))
        .route(
            "/api/v1/devicemethod/{ns}/{name}/{method}/{property}/{data}",
            get(write_by_get).put(write).post(write),
        )
        .route("/api/v1/meta/model/{ns}/{name}", get(model))
        .route("/api/v1/database/{ns}/{name}", get(database))
        .route("/api/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/api/v1/ping",
            "/api/v1/device/{namespace}/{name}/{property}",
            "/api/v1/devicemethod/{namespace}/{name}",
            "/api/v1/devicemethod/{namespace}/{name}/{method}/{property}/{data}",
            "/api/v1/meta/model/{namespace}/{name}",
            "/api/v1/database/{namespace}/{name}",
        ] {
            assert!(paths.contains_key(p), "{p} missing from openapi.json");
        }
        let w = &paths["/api/v1/devicemethod/{namespace}/{name}/{method}/{property}/{data}"];
        assert!(w.get("put").is_some() && w.get("post").is_some());
    }

    #[test]
    fn token_comparison() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"ab"));
    }
}
