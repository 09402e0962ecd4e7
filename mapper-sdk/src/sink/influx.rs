//! `dbMethod.influxdb2`: InfluxDB line protocol, one
//! `POST <url>/api/v2/write?org=&bucket=&precision=ms` per batch,
//! `Authorization: Token $TOKEN` (as mapper-framework; a `TOKEN_FILE` works
//! too).
//!
//! Field types follow the model: `int` → integer (`42i`), `float`/`double` →
//! float, `boolean` → boolean, anything else → string (mapper-framework writes
//! every value as a string, which makes numbers unqueryable as numbers).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HeaderValue};

use super::SinkError;
use super::http::{HttpClient, parse_uri};
use super::method::{Influxdb2, secret};
use super::options::DataOptions;
use super::record::Record;
use super::target::{Entry, Route, TargetSpec};

/// The target and route of one property's `dbMethod.influxdb2`.
pub(super) fn route(i: &Influxdb2) -> Result<(TargetSpec, Route), SinkError> {
    let url = i.url.trim().trim_end_matches('/').to_owned();
    parse_uri("influxdb2 url", &url)?;
    if i.bucket.trim().is_empty() {
        return Err(SinkError::Config("influxdb2 bucket is empty".into()));
    }
    if i.measurement.trim().is_empty() {
        return Err(SinkError::Config("influxdb2 measurement is empty".into()));
    }
    if i.field_key.trim().is_empty() {
        return Err(SinkError::Config("influxdb2 fieldKey is empty".into()));
    }
    Ok((
        TargetSpec::Influxdb2 {
            url,
            org: i.org.clone(),
            bucket: i.bucket.clone(),
        },
        Route::Influxdb2 {
            measurement: i.measurement.clone(),
            tags: i.tags.clone(),
            field_key: i.field_key.clone(),
        },
    ))
}

/// Escapes `,`, ` ` (and `=` when `eq`) with a backslash, as line protocol
/// wants in measurements, tag keys/values and field keys.
fn escape(s: &str, eq: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            ',' | ' ' => out.push('\\'),
            '=' if eq => out.push('\\'),
            '\n' | '\r' => {
                out.push(' ');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
}

/// One line: `measurement,tag=v field=value <ms>`.
pub(crate) fn line(
    r: &Record,
    measurement: &str,
    tags: &BTreeMap<String, String>,
    field_key: &str,
    out: &mut String,
) {
    escape(measurement, false, out);
    for (k, v) in tags {
        out.push(',');
        escape(k, true, out);
        out.push('=');
        escape(v, true, out);
    }
    out.push(' ');
    escape(field_key, true, out);
    out.push('=');
    let v = r.value.trim();
    match r.ty.as_str() {
        "int" if v.parse::<i64>().is_ok() => {
            out.push_str(v);
            out.push('i');
        }
        "float" | "double" if v.parse::<f64>().is_ok_and(f64::is_finite) => out.push_str(v),
        "boolean" if v == "true" || v == "false" => out.push_str(v),
        _ => {
            out.push('"');
            for c in r.value.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
    out.push(' ');
    out.push_str(&r.timestamp.to_string());
    out.push('\n');
}

/// One bucket.
pub(crate) struct InfluxTarget {
    client: HttpClient,
    uri: http::Uri,
    token: Option<HeaderValue>,
    timeout: Duration,
}

impl InfluxTarget {
    /// A client of `bucket` in `org` at `url`.
    pub(crate) fn new(
        url: &str,
        org: &str,
        bucket: &str,
        opts: &DataOptions,
    ) -> Result<Self, SinkError> {
        let q = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let uri = parse_uri(
            "influxdb2 url",
            &format!(
                "{url}/api/v2/write?org={}&bucket={}&precision=ms",
                q(org),
                q(bucket)
            ),
        )?;
        let token =
            match secret("TOKEN") {
                Some(t) => Some(HeaderValue::from_str(&format!("Token {t}")).map_err(|_| {
                    SinkError::Config("TOKEN holds characters a header cannot".into())
                })?),
                None => None,
            };
        Ok(Self {
            client: HttpClient::new()?,
            uri,
            token,
            timeout: opts.delivery_timeout,
        })
    }

    /// Writes `batch` as one request.
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        let mut body = String::with_capacity(batch.len() * 64);
        for e in batch {
            if let Route::Influxdb2 {
                measurement,
                tags,
                field_key,
            } = &e.route
            {
                line(&e.record, measurement, tags, field_key, &mut body);
            }
        }
        let headers: Vec<_> = self
            .token
            .iter()
            .map(|t| (AUTHORIZATION, t.clone()))
            .collect();
        self.client
            .post(
                &self.uri,
                "text/plain; charset=utf-8",
                &headers,
                body.into_bytes(),
                self.timeout,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: &str, v: &str) -> Record {
        Record {
            device: "d".into(),
            namespace: "n".into(),
            property: "p".into(),
            value: v.into(),
            ty: ty.into(),
            timestamp: 1_700_000_000_000,
        }
    }

    #[test]
    fn lines_are_typed_and_escaped() {
        let tags = BTreeMap::from([("site a".to_owned(), "x,y=z".to_owned())]);
        let mut out = String::new();
        line(&rec("int", "42"), "temp m", &tags, "value", &mut out);
        assert_eq!(out, "temp\\ m,site\\ a=x\\,y\\=z value=42i 1700000000000\n");
        let mut out = String::new();
        line(&rec("double", "1.5"), "m", &BTreeMap::new(), "v", &mut out);
        assert_eq!(out, "m v=1.5 1700000000000\n");
        let mut out = String::new();
        line(
            &rec("string", "say \"hi\"\\"),
            "m",
            &BTreeMap::new(),
            "v",
            &mut out,
        );
        assert_eq!(out, "m v=\"say \\\"hi\\\"\\\\\" 1700000000000\n");
        let mut out = String::new();
        line(&rec("int", "NaN"), "m", &BTreeMap::new(), "v", &mut out);
        assert_eq!(out, "m v=\"NaN\" 1700000000000\n");
    }
}
