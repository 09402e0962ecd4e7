//! configData JSON → a driver's typed config or address, with errors that name
//! the key (`port: invalid type: string "x", expected u16`) and a list of keys the
//! type ignored (warned about, not fatal, unless the type denies unknown fields).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A deserialized value and the keys it did not use.
#[derive(Debug)]
pub(crate) struct Typed<T> {
    pub(crate) value: T,
    pub(crate) ignored: Vec<String>,
}

/// Deserializes `obj` into `T`.
pub(crate) fn from_config<T: DeserializeOwned>(
    obj: &Map<String, Value>,
) -> Result<Typed<T>, String> {
    let mut ignored = Vec::new();
    let result: Result<T, _> = {
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
        let de = serde_ignored::Deserializer::new(Value::Object(obj.clone()), &mut record);
        serde_path_to_error::deserialize(de)
    };
    match result {
        Ok(value) => Ok(Typed { value, ignored }),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            Err(if path.is_empty() || path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Cfg {
        ip: String,
        #[serde(default)]
        port: u16,
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn names_the_bad_key_and_lists_ignored_ones() {
        let e = from_config::<Cfg>(&obj(json!({"ip": "x", "port": "abc"}))).unwrap_err();
        assert!(e.starts_with("port: invalid type: string \"abc\""), "{e}");
        let t = from_config::<Cfg>(&obj(json!({"ip": "x", "prot": 5}))).unwrap();
        assert_eq!(t.ignored, vec!["prot".to_owned()]);
        let e = from_config::<Cfg>(&obj(json!({}))).unwrap_err();
        assert_eq!(e, "missing field `ip`");
    }
}
