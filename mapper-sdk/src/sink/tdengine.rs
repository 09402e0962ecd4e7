//! `dbMethod.TDEngine` through TDengine's REST API (`POST http://<addr>/rest/sql`,
//! HTTP Basic with `USERNAME`/`PASSWORD`, default `root`/`taosdata`, as
//! mapper-framework's DSN takes them). Per device a super table named
//! `<ns>_<device>` (characters other than letters, digits and `_` become
//! `_`, as TDengine names require) with columns
//! `(ts TIMESTAMP, deviceid NCHAR(255), propertyname NCHAR(255), data NCHAR(1024), type NCHAR(32))`
//! and tag `property`, created if absent; one sub-table per property; one
//! multi-table `INSERT … USING … VALUES …` per batch. A response whose JSON
//! `code` is not 0 is a refusal.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderValue};

use super::SinkError;
use super::http::{HttpClient, parse_uri};
use super::method::secret;
use super::options::DataOptions;
use super::target::Entry;

/// `s` as a TDengine identifier.
pub(crate) fn ident(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `s` as a TDengine string literal.
pub(crate) fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The statements for `batch`: super-table creations not done yet (added to
/// `created`), then one INSERT.
pub(crate) fn statements(db: &str, batch: &[&Entry], created: &mut HashSet<String>) -> Vec<String> {
    let db = ident(db);
    let mut out = Vec::new();
    let mut insert = String::from("INSERT INTO");
    for e in batch {
        let r = &e.record;
        let stable = ident(&format!("{}_{}", r.namespace, r.device));
        if created.insert(stable.clone()) {
            out.push(format!(
                "CREATE STABLE IF NOT EXISTS {db}.{stable} (ts TIMESTAMP, deviceid NCHAR(255), propertyname NCHAR(255), data NCHAR(1024), type NCHAR(32)) TAGS (property NCHAR(255))"
            ));
        }
        let sub = ident(&format!("{stable}_{}", r.property));
        let _ = write!(
            insert,
            " {db}.{sub} USING {db}.{stable} TAGS ({}) VALUES ({}, {}, {}, {}, {})",
            literal(&r.property),
            r.timestamp,
            literal(&format!("{}/{}", r.namespace, r.device)),
            literal(&r.property),
            literal(&r.value),
            literal(&r.ty),
        );
    }
    out.push(insert);
    out
}

/// One TDengine database.
pub(crate) struct TdengineTarget {
    client: HttpClient,
    uri: http::Uri,
    auth: HeaderValue,
    db: String,
    created: HashSet<String>,
    timeout: Duration,
}

impl TdengineTarget {
    /// A client of `db` at the REST API `addr` (`host:port`, 6041 by default).
    pub(crate) fn new(addr: &str, db: &str, opts: &DataOptions) -> Result<Self, SinkError> {
        if db.trim().is_empty() {
            return Err(SinkError::Config("tdengine dbName is empty".into()));
        }
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", addr.trim_end_matches('/'))
        };
        let uri = parse_uri("tdengine addr", &format!("{base}/rest/sql"))?;
        let user = secret("USERNAME").unwrap_or_else(|| "root".into());
        let pass = secret("PASSWORD").unwrap_or_else(|| "taosdata".into());
        let auth = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        ))
        .map_err(|_| {
            SinkError::Config("USERNAME/PASSWORD hold characters a header cannot".into())
        })?;
        Ok(Self {
            client: HttpClient::new()?,
            uri,
            auth,
            db: db.to_owned(),
            created: HashSet::new(),
            timeout: opts.delivery_timeout,
        })
    }

    /// Writes `batch` (one INSERT, after any super-table creations).
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        let entries: Vec<&Entry> = batch.iter().map(|e| &**e).collect();
        let mut created = self.created.clone();
        for sql in statements(&self.db, &entries, &mut created) {
            let body = self
                .client
                .post(
                    &self.uri,
                    "text/plain",
                    &[(AUTHORIZATION, self.auth.clone())],
                    sql.into_bytes(),
                    self.timeout,
                )
                .await?;
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            match answer.get("code").and_then(serde_json::Value::as_i64) {
                Some(0) => {}
                code => {
                    return Err(SinkError::Refused(format!(
                        "tdengine {}: code {:?}: {}",
                        self.uri,
                        code,
                        answer
                            .get("desc")
                            .and_then(|d| d.as_str())
                            .unwrap_or("no description")
                    )));
                }
            }
        }
        self.created = created;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::record::Record;
    use crate::sink::target::Route;

    #[test]
    fn sql_and_auth() {
        let e = Entry {
            record: Record {
                device: "pump-1".into(),
                namespace: "default".into(),
                property: "temp".into(),
                value: "it's".into(),
                ty: "string".into(),
                timestamp: 5,
            },
            route: Route::Tdengine,
        };
        let mut created = HashSet::new();
        let s = statements("db", &[&e, &e], &mut created);
        assert_eq!(s.len(), 2);
        assert!(
            s[0].starts_with("CREATE STABLE IF NOT EXISTS db.default_pump_1 "),
            "{}",
            s[0]
        );
        assert_eq!(
            s[1].matches("db.default_pump_1_temp USING db.default_pump_1 TAGS ('temp') VALUES (5, 'default/pump-1', 'temp', 'it\\'s', 'string')").count(),
            2,
            "{}",
            s[1]
        );
        // Created once per process.
        assert_eq!(statements("db", &[&e], &mut created).len(), 1);
    }
}
