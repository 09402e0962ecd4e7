//! `pushMethod.otel`: OTLP/HTTP metrics export in OTLP's JSON encoding
//! (`Content-Type: application/json`, OTLP specification "OTLP/HTTP"), one
//! `ExportMetricsServiceRequest` per batch: a resource per device
//! (`device.id=<ns>/<name>`, as mapper-framework's exporter), one gauge per
//! property with `device` and `property` attributes, one point per record.
//! Values that are not numbers (text, bytes) cannot be gauge points and are
//! skipped; booleans become 0/1.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};

use super::SinkError;
use super::http::{HttpClient, parse_uri};
use super::options::DataOptions;
use super::record::Record;
use super::target::Entry;

/// The gauge value of `r`, if it has one.
fn number(r: &Record) -> Option<f64> {
    match r.ty.as_str() {
        "boolean" => r.value.parse::<bool>().ok().map(|b| f64::from(u8::from(b))),
        _ => r.value.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

fn attr(key: &str, value: &str) -> Json {
    json!({"key": key, "value": {"stringValue": value}})
}

/// The export request of `records` (those with a numeric value).
pub(crate) fn request<'a>(records: impl Iterator<Item = &'a Record>) -> Json {
    // device id → property → points, in arrival order per property.
    let mut by_device: BTreeMap<String, BTreeMap<String, Vec<Json>>> = BTreeMap::new();
    for r in records {
        let Some(v) = number(r) else { continue };
        let id = format!("{}/{}", r.namespace, r.device);
        by_device
            .entry(id.clone())
            .or_default()
            .entry(r.property.clone())
            .or_default()
            .push(json!({
                "asDouble": v,
                "timeUnixNano": (u128::from(r.timestamp) * 1_000_000).to_string(),
                "attributes": [attr("device", &id), attr("property", &r.property)],
            }));
    }
    let resource_metrics: Vec<Json> = by_device
        .into_iter()
        .map(|(id, props)| {
            let metrics: Vec<Json> = props
                .into_iter()
                .map(|(name, points)| json!({"name": name, "gauge": {"dataPoints": points}}))
                .collect();
            json!({
                "resource": {"attributes": [attr("device.id", &id)]},
                "scopeMetrics": [{
                    "scope": {"name": "mapper-sdk", "version": env!("CARGO_PKG_VERSION")},
                    "metrics": metrics,
                }],
            })
        })
        .collect();
    json!({ "resourceMetrics": resource_metrics })
}

/// One OTLP/HTTP endpoint.
pub(crate) struct OtelTarget {
    client: HttpClient,
    uri: http::Uri,
    timeout: Duration,
}

impl OtelTarget {
    /// A client of `endpoint` (the full URL, e.g. `http://host:4318/v1/metrics`).
    pub(crate) fn new(endpoint: &str, opts: &DataOptions) -> Result<Self, SinkError> {
        Ok(Self {
            client: HttpClient::new()?,
            uri: parse_uri("otel endpointURL", endpoint)?,
            timeout: opts.delivery_timeout,
        })
    }

    /// Exports `batch` as one request.
    pub(crate) async fn deliver(&mut self, batch: &[Arc<Entry>]) -> Result<(), SinkError> {
        let body = request(batch.iter().map(|e| &e.record));
        if body["resourceMetrics"]
            .as_array()
            .is_none_or(|a| a.is_empty())
        {
            return Ok(());
        }
        self.client
            .post(
                &self.uri,
                "application/json",
                &[],
                body.to_string().into_bytes(),
                self.timeout,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_per_device_and_property() {
        let r = |dev: &str, prop: &str, ty: &str, v: &str, t: u64| Record {
            device: dev.into(),
            namespace: "ns".into(),
            property: prop.into(),
            value: v.into(),
            ty: ty.into(),
            timestamp: t,
        };
        let recs = [
            r("a", "temp", "double", "1.5", 1),
            r("a", "temp", "double", "2.5", 2),
            r("a", "on", "boolean", "true", 2),
            r("a", "name", "string", "x", 2),
            r("b", "temp", "int", "7", 3),
        ];
        let j = request(recs.iter());
        let rm = j["resourceMetrics"].as_array().unwrap();
        assert_eq!(rm.len(), 2);
        assert_eq!(
            rm[0]["resource"]["attributes"][0]["value"]["stringValue"],
            "ns/a"
        );
        let metrics = rm[0]["scopeMetrics"][0]["metrics"].as_array().unwrap();
        let names: Vec<_> = metrics
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["on", "temp"]);
        let temp = &metrics[1]["gauge"]["dataPoints"];
        assert_eq!(temp[0]["asDouble"], 1.5);
        assert_eq!(temp[1]["timeUnixNano"], "2000000");
        assert_eq!(metrics[0]["gauge"]["dataPoints"][0]["asDouble"], 1.0);
    }
}
