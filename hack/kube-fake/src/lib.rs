//! # kube-fake
//!
//! An in-process fake of the Kubernetes API server, for tests of kube-rs client
//! code where no real API server can run (none installs on these machines). It
//! keeps JSON objects for any resource path and answers what kube-rs clients,
//! watchers and controllers send:
//!
//! * `GET` list (with `labelSelector` equality terms) and `?watch=true` streams
//!   from a `resourceVersion`, cluster-wide or per namespace;
//! * `GET`, `POST` (create), `PUT` (replace, with a resourceVersion
//!   precondition → 409), `PATCH` (JSON merge patch; server-side apply bodies
//!   are merged the same way), `DELETE` (finalizers honoured:
//!   `deletionTimestamp` first, removal when the last finalizer goes);
//! * the `/status` subresource: patches and replaces touch only `.status`, and
//!   main-resource writes leave `.status` alone;
//! * switches for failure tests: [`FakeApi::set_down`] answers 503 to
//!   everything and ends open watches, [`FakeApi::drop_watches`] ends open
//!   watches only.
//!
//! Every request is recorded ([`FakeApi::requests`]) so tests can count patches.
//! It is a test double: no admission, no schema validation, no garbage
//! collection, no JSON Patch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// `(resource path like "devices.kubeedge.io/v1beta1/devices", namespace, name)`.
type Key = (String, String, String);

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
    /// The object before a modification (to turn label changes into ADDED/DELETED
    /// for label-selected watches, as the real API server does).
    old: Option<Value>,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: Vec<Change>,
    requests: Vec<(String, String)>,
    /// Body size of each request in `requests`, bytes.
    request_bytes: Vec<usize>,
    uid: u64,
}

/// The fake server. Clone freely; all clones share state.
#[derive(Debug, Clone)]
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    down: Arc<AtomicBool>,
    drop_tx: broadcast::Sender<()>,
    addr: SocketAddr,
}

fn lock(s: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
        "reason": reason, "code": code.as_u16()});
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(v: &Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A parsed request path.
struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest): (String, &[&str]) = match parts.as_slice() {
        ["api", v, rest @ ..] => ((*v).to_owned(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        r => (None, r),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some((*s).to_owned())),
        _ => return None,
    };
    Some(Target {
        resource: format!("{gv}/{plural}"),
        namespace,
        name,
        subresource: sub,
    })
}

fn labels_match(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .unwrap_or((term, ""));
        obj["metadata"]["labels"][k.trim()].as_str() == Some(v.trim())
    })
}

impl FakeApi {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> std::io::Result<FakeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (changes, _) = broadcast::channel(4096);
        let (drop_tx, _) = broadcast::channel(16);
        let api = FakeApi {
            store: Arc::new(Mutex::new(Store::default())),
            changes,
            down: Arc::new(AtomicBool::new(false)),
            drop_tx,
            addr,
        };
        let app = axum::Router::new().fallback(handle).with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(api)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) that points kube clients at this fake, without
    /// credentials: write it to a file and set `KUBECONFIG` for a child process.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{}\"}}\nusers:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{cluster: fake, user: fake}}\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// Makes every request fail with 503 (and ends open watches) while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let _ = self.drop_tx.send(());
        }
    }

    /// Ends every open watch; clients must re-watch.
    pub fn drop_watches(&self) {
        let _ = self.drop_tx.send(());
    }

    /// `(method, path?query)` of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.store).requests.clone()
    }

    /// `(method, path?query, body bytes)` of every request so far.
    pub fn requests_with_sizes(&self) -> Vec<(String, String, usize)> {
        let st = lock(&self.store);
        st.requests
            .iter()
            .zip(&st.request_bytes)
            .map(|((m, p), n)| (m.clone(), p.clone(), *n))
            .collect()
    }

    /// An object, if present. `resource` is e.g. `devices.kubeedge.io/v1beta1/devices`.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.store)
            .objects
            .get(&(resource.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// All objects of a resource.
    pub fn list(&self, resource: &str) -> Vec<Value> {
        lock(&self.store)
            .objects
            .iter()
            .filter(|(k, _)| k.0 == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates or replaces an object directly (as `kubectl apply` would).
    pub fn put(&self, resource: &str, object: Value) -> Value {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
        let key = (resource.to_owned(), ns, name);
        let st = lock(&self.store);
        let old = st.objects.get(&key).cloned();
        let mut obj = object;
        if let Some(old) = &old {
            obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            obj["metadata"]["generation"] =
                json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
            if obj.get("status").is_none() && old.get("status").is_some() {
                obj["status"] = old["status"].clone();
            }
        }
        drop(st);
        self.write(key, obj, old.is_none())
    }

    /// Deletes an object directly (finalizers honoured).
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> bool {
        let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
        self.delete_key(key).is_some()
    }

    fn delete_key(&self, key: Key) -> Option<Value> {
        let mut st = lock(&self.store);
        let obj = st.objects.get(&key).cloned()?;
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if has_finalizers {
            if obj["metadata"].get("deletionTimestamp").is_none() {
                let mut o = obj;
                o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                drop(st);
                return Some(self.write(key, o, false));
            }
            return Some(obj);
        }
        st.objects.remove(&key);
        st.rv += 1;
        let rv = st.rv;
        let mut o = obj;
        o["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change {
            rv,
            kind: "DELETED",
            key,
            object: o.clone(),
            old: None,
        };
        st.history.push(change.clone());
        drop(st);
        let _ = self.changes.send(change);
        Some(o)
    }

    fn write(&self, key: Key, mut obj: Value, created: bool) -> Value {
        let mut st = lock(&self.store);
        st.rv += 1;
        let rv = st.rv;
        if created {
            st.uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.uid));
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            obj["metadata"]["generation"] = json!(1);
        }
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        // The last finalizer gone from a deleting object: it goes.
        let deleting = obj["metadata"].get("deletionTimestamp").is_some()
            && obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|a| a.is_empty());
        if deleting {
            st.objects.remove(&key);
            let change = Change {
                rv,
                kind: "DELETED",
                key,
                object: obj.clone(),
                old: None,
            };
            st.history.push(change.clone());
            drop(st);
            let _ = self.changes.send(change);
            return obj;
        }
        let old = st.objects.insert(key.clone(), obj.clone());
        let change = Change {
            rv,
            kind: if created { "ADDED" } else { "MODIFIED" },
            key,
            object: obj.clone(),
            old,
        };
        st.history.push(change.clone());
        drop(st);
        let _ = self.changes.send(change);
        obj
    }
}

async fn handle(
    State(api): State<FakeApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Response {
    {
        let mut st = lock(&api.store);
        st.requests.push((method.to_string(), uri.to_string()));
        st.request_bytes.push(body.len());
    }
    if api.down.load(Ordering::SeqCst) {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake API server is down",
        );
    }
    let Some(t) = parse(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("unknown path {}", uri.path()),
        );
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let ns = t.namespace.clone().unwrap_or_default();
    match (method.clone(), t.name.clone()) {
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(api, t, q)
        }
        (Method::GET, None) => {
            let st = lock(&api.store);
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.0 == t.resource
                        && (t.namespace.is_none() || k.1 == ns)
                        && labels_match(v, q.get("labelSelector"))
                })
                .map(|(_, v)| v.clone())
                .collect();
            json_response(
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        (Method::POST, None) => {
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let key = (t.resource.clone(), ns.clone(), name.clone());
            if name.is_empty() {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name is required",
                );
            }
            if lock(&api.store).objects.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("{name} already exists"),
                );
            }
            let mut obj = body;
            if !ns.is_empty() {
                obj["metadata"]["namespace"] = json!(ns);
            }
            let created = api.write(key, obj, true);
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                created.to_string(),
            )
                .into_response()
        }
        (Method::GET, Some(name)) => match api.get(&t.resource, &ns, &name) {
            Some(o) => json_response(&o),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} {name} not found", t.resource),
            ),
        },
        (Method::DELETE, Some(name)) => {
            match api.delete_key((t.resource.clone(), ns, name.clone())) {
                Some(o) => json_response(&o),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{name} not found"),
                ),
            }
        }
        (Method::PUT | Method::PATCH, Some(name)) => {
            let key = (t.resource.clone(), ns, name.clone());
            let Some(current) = api.get(&key.0, &key.1, &key.2) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{} {name} not found", t.resource),
                );
            };
            if let Some(want) = body["metadata"]["resourceVersion"].as_str()
                && Some(want) != current["metadata"]["resourceVersion"].as_str()
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified",
                );
            }
            let ctype = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if method == Method::PATCH && ctype.contains("json-patch") {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "JSON Patch is not supported by the fake",
                );
            }
            let mut next = current.clone();
            let status_only = t.subresource.as_deref() == Some("status");
            if status_only {
                if method == Method::PUT {
                    next["status"] = body["status"].clone();
                } else if let Some(s) = body.get("status") {
                    merge(next.entry_status(), s);
                }
            } else {
                let mut b = body;
                if let Value::Object(m) = &mut b {
                    m.remove("status");
                }
                if method == Method::PUT {
                    let st = next.get("status").cloned();
                    next = b;
                    if let Some(s) = st {
                        next["status"] = s;
                    }
                    next["metadata"]["uid"] = current["metadata"]["uid"].clone();
                } else {
                    merge(&mut next, &b);
                }
                if next.get("spec") != current.get("spec") {
                    next["metadata"]["generation"] =
                        json!(current["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
                }
            }
            json_response(&api.write(key, next, false))
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the fake",
        ),
    }
}

trait StatusEntry {
    fn entry_status(&mut self) -> &mut Value;
}

impl StatusEntry for Value {
    fn entry_status(&mut self) -> &mut Value {
        if self.get("status").is_none_or(|s| !s.is_object()) {
            self["status"] = json!({});
        }
        &mut self["status"]
    }
}

fn watch(api: FakeApi, t: Target, q: BTreeMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    let selector = q.get("labelSelector").cloned();
    let ns = t.namespace.clone();
    let resource = t.resource.clone();
    // What a watcher with this selector sees of a change: label changes move
    // objects in (ADDED) and out (DELETED) of the selection.
    let matches = move |c: &Change| -> Option<Change> {
        if c.key.0 != resource || ns.as_ref().is_some_and(|n| *n != c.key.1) {
            return None;
        }
        let now = labels_match(&c.object, selector.as_ref());
        let before = c
            .old
            .as_ref()
            .is_some_and(|o| labels_match(o, selector.as_ref()));
        match (c.kind, before, now) {
            ("MODIFIED", true, false) => Some(Change {
                kind: "DELETED",
                ..c.clone()
            }),
            ("MODIFIED", false, true) => Some(Change {
                kind: "ADDED",
                ..c.clone()
            }),
            (_, _, true) => Some(c.clone()),
            _ => None,
        }
    };
    // Subscribe before reading history so nothing falls between the two.
    let live = tokio_stream::wrappers::BroadcastStream::new(api.changes.subscribe());
    let backlog: Vec<Change> = lock(&api.store)
        .history
        .iter()
        .filter(|c| c.rv > from)
        .cloned()
        .collect();
    let last_backlog = backlog.last().map_or(from, |c| c.rv);
    let m1 = matches.clone();
    let past = futures::stream::iter(backlog.into_iter().filter_map(move |c| m1(&c)));
    let future = live.filter_map(move |c| {
        let m = matches.clone();
        async move { c.ok().filter(|c| c.rv > last_backlog).and_then(|c| m(&c)) }
    });
    let mut dropped = api.drop_tx.subscribe();
    let stop = async move {
        tokio::select! {
            _ = dropped.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(timeout)) => {}
        }
    };
    let events = past
        .chain(future)
        .map(|c| {
            Ok::<_, std::io::Error>(Bytes::from(format!(
                "{}\n",
                json!({"type": c.kind, "object": c.object})
            )))
        })
        .take_until(stop);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, "Internal", "response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rules() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(
            &mut t,
            &json!({"b": {"c": null, "e": 4}, "l": [9], "z": "x"}),
        );
        assert_eq!(
            t,
            json!({"a": 1, "b": {"d": 3, "e": 4}, "l": [9], "z": "x"})
        );
    }

    #[test]
    fn paths() {
        let t = parse("/apis/devices.kubeedge.io/v1beta1/namespaces/ns/devices/d/status").unwrap();
        assert_eq!(
            (
                t.resource.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (
                "devices.kubeedge.io/v1beta1/devices",
                Some("ns"),
                Some("d"),
                Some("status")
            )
        );
        let t = parse("/apis/devices.kubeedge.io/v1beta1/devices").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        let t = parse("/api/v1/namespaces/default/events").unwrap();
        assert_eq!(t.resource, "v1/events");
    }
}
