//! What a sink delivers: one good sample of one property, with the names and
//! type a consumer needs (mapper-framework's `DataModel`, spec §4.1).

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// One reading as the sinks carry it, queue and spool it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Device name.
    pub device: String,
    /// Device namespace.
    pub namespace: String,
    /// Property name.
    pub property: String,
    /// The value as text (the twin's form: numbers formatted, bytes as hex).
    pub value: String,
    /// The model's type text, lower-case (`int`, `float`, `double`,
    /// `boolean`, `string`, `bytes`).
    #[serde(rename = "type")]
    pub ty: String,
    /// When the value was taken, ms since the Unix epoch (the source time when
    /// the device gave one).
    pub timestamp: u64,
}

impl Record {
    /// The value as typed JSON: a number for `int`/`float`/`double`, a bool for
    /// `boolean`, text otherwise (and when the text does not parse).
    pub fn typed_value(&self) -> Json {
        match self.ty.as_str() {
            "int" => self.value.parse::<i64>().map(Json::from).ok(),
            "float" | "double" => self
                .value
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Json::Number)),
            "boolean" => self.value.parse::<bool>().map(Json::Bool).ok(),
            _ => None,
        }
        .unwrap_or_else(|| Json::String(self.value.clone()))
    }

    /// The JSON document the MQTT and HTTP sinks send by default:
    /// `{"device","namespace","property","value","type","timestamp"}` with a
    /// typed `value` and `timestamp` in ms.
    pub fn document(&self) -> Json {
        json!({
            "device": self.device,
            "namespace": self.namespace,
            "property": self.property,
            "value": self.typed_value(),
            "type": self.ty,
            "timestamp": self.timestamp,
        })
    }

    /// [`Record::document`] encoded, without building a JSON tree first (the
    /// MQTT and HTTP sinks' hot path).
    pub fn document_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Doc<'a> {
            device: &'a str,
            namespace: &'a str,
            property: &'a str,
            value: Typed<'a>,
            #[serde(rename = "type")]
            ty: &'a str,
            timestamp: u64,
        }
        struct Typed<'a>(&'a Record);
        impl Serialize for Typed<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let r = self.0;
                match r.ty.as_str() {
                    "int" => {
                        if let Ok(i) = r.value.parse::<i64>() {
                            return s.serialize_i64(i);
                        }
                    }
                    "float" | "double" => {
                        if let Ok(f) = r.value.parse::<f64>()
                            && f.is_finite()
                        {
                            return s.serialize_f64(f);
                        }
                    }
                    "boolean" => {
                        if let Ok(b) = r.value.parse::<bool>() {
                            return s.serialize_bool(b);
                        }
                    }
                    _ => {}
                }
                s.serialize_str(&r.value)
            }
        }
        let mut out =
            Vec::with_capacity(96 + self.value.len() + self.device.len() + self.property.len());
        let doc = Doc {
            device: &self.device,
            namespace: &self.namespace,
            property: &self.property,
            value: Typed(self),
            ty: &self.ty,
            timestamp: self.timestamp,
        };
        // Writing to a Vec cannot fail and the struct has only plain fields.
        if serde_json::to_writer(&mut out, &doc).is_err() {
            out = self.document().to_string().into_bytes();
        }
        out
    }

    /// mapper-framework's `DataModel` as Go's `encoding/json` writes it (no
    /// JSON tags, so capitalised keys; `Value` as text): the Redis member.
    pub fn data_model(&self) -> Json {
        json!({
            "DeviceName": self.device,
            "PropertyName": self.property,
            "Namespace": self.namespace,
            "Value": self.value,
            "Type": self.ty,
            "TimeStamp": self.timestamp,
        })
    }

    /// The timestamp as `YYYY-MM-DD HH:MM:SS` in UTC (mapper-framework's
    /// `2006-01-02 15:04:05` layout, used by its text payloads and MySQL rows).
    pub fn datetime(&self) -> String {
        let t = UNIX_EPOCH + Duration::from_millis(self.timestamp);
        let mut s = humantime::format_rfc3339_seconds(t).to_string();
        s.truncate(19);
        s.replace('T', " ")
    }

    /// mapper-framework's MQTT text payload:
    /// `time is <datetime>  <topic>: <value>`.
    pub fn stock_mqtt_text(&self, topic: &str) -> String {
        format!("time is {}  {topic}: {}", self.datetime(), self.value)
    }

    /// mapper-framework's HTTP form body: `<property>=<value>&time=<datetime>`
    /// (form-encoded).
    pub fn stock_http_form(&self) -> String {
        let enc = |s: &str| -> String {
            let mut out = String::with_capacity(s.len());
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        out.push(b as char)
                    }
                    b' ' => out.push('+'),
                    _ => out.push_str(&format!("%{b:02X}")),
                }
            }
            out
        };
        format!(
            "{}={}&time={}",
            enc(&self.property),
            enc(&self.value),
            enc(&self.datetime())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: &str, value: &str) -> Record {
        Record {
            device: "pump-1".into(),
            namespace: "default".into(),
            property: "temp".into(),
            value: value.into(),
            ty: ty.into(),
            timestamp: 1_700_000_000_123,
        }
    }

    #[test]
    fn document_has_typed_values() {
        assert_eq!(rec("int", "42").document()["value"], json!(42));
        assert_eq!(rec("double", "1.5").document()["value"], json!(1.5));
        assert_eq!(rec("boolean", "true").document()["value"], json!(true));
        assert_eq!(rec("string", "42").document()["value"], json!("42"));
        // A value that does not parse stays text rather than being lost.
        assert_eq!(rec("int", "n/a").document()["value"], json!("n/a"));
        let d = rec("int", "7").document();
        assert_eq!(d["timestamp"], json!(1_700_000_000_123u64));
        assert_eq!(d["device"], "pump-1");
        // The fast encoding says the same.
        for (ty, v) in [
            ("int", "42"),
            ("double", "1.5"),
            ("boolean", "true"),
            ("string", "a\"b"),
            ("int", "n/a"),
            ("float", "NaN"),
        ] {
            let r = rec(ty, v);
            let fast: serde_json::Value = serde_json::from_slice(&r.document_bytes()).unwrap();
            assert_eq!(fast, r.document(), "{ty} {v}");
        }
    }

    #[test]
    fn stock_forms() {
        let r = rec("string", "a b&c");
        assert_eq!(r.datetime(), "2023-11-14 22:13:20");
        assert_eq!(
            r.stock_mqtt_text("t/1"),
            "time is 2023-11-14 22:13:20  t/1: a b&c"
        );
        assert_eq!(
            r.stock_http_form(),
            "temp=a+b%26c&time=2023-11-14+22%3A13%3A20"
        );
        assert_eq!(r.data_model()["DeviceName"], "pump-1");
        assert_eq!(r.data_model()["Value"], "a b&c");
    }
}
