//! `namespace/name` of a device or model.

use std::fmt;

/// `namespace/name` of a device or model. KubeEdge's device IDs are this text
/// (spec §2.7); an empty namespace (EdgeCore before v1.16 sends none) is
/// `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// Namespace, never empty.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectId {
    /// Builds an id, mapping an empty namespace to `default`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: if namespace.is_empty() {
                "default".to_owned()
            } else {
                namespace.to_owned()
            },
            name: name.to_owned(),
        }
    }

    /// Parses `namespace/name`; text without a `/` is a name in `default`.
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((ns, name)) => Self::new(ns, name),
            None => Self::new("", text),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_namespace_and_round_trip() {
        assert_eq!(ObjectId::new("", "fan").to_string(), "default/fan");
        assert_eq!(ObjectId::parse("plant/fan"), ObjectId::new("plant", "fan"));
        assert_eq!(ObjectId::parse("fan"), ObjectId::new("default", "fan"));
    }
}
