//! [`ObjectKey`]: how devices and models are named on the node
//! (`namespace/name`), in memory, in the store and in messages.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::convert::Infallible;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use device_crds::MetaExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The namespace of objects that name none, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The key of a namespaced object (a Device or a DeviceModel): `namespace/name`.
///
/// The same identity as [`edge_rt::ObjectId`] (same default-namespace rule,
/// conversions both ways), stored as one shared string so that 10 000 keys stay
/// small, a clone (the same device in the catalog, the twins and each mapper's
/// sent list) costs no allocation, and maps can be searched by `&str`.
///
/// It compares, orders and hashes exactly as its `namespace/name` text, and
/// borrows as `str`, so maps keyed by it can be searched with a `&str`. It
/// serializes as that text, which is also the key of its records in the store.
#[derive(Clone)]
pub struct ObjectKey {
    /// `namespace/name`.
    text: std::sync::Arc<str>,
    /// Where the `/` between namespace and name is.
    slash: usize,
}

impl ObjectKey {
    /// The key of `name` in `namespace`; an empty namespace means
    /// [`DEFAULT_NAMESPACE`].
    pub fn new(namespace: &str, name: &str) -> Self {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        Self {
            text: format!("{namespace}/{name}").into(),
            slash: namespace.len(),
        }
    }

    /// The key of the object `meta` describes (namespace defaulted as by
    /// [`ObjectKey::new`]).
    pub fn from_meta(meta: &device_crds::ObjectMeta) -> Self {
        Self::new(meta.namespace_or_default(), meta.name_str())
    }

    /// A key from its `namespace/name` text; text without a `/` is a name in
    /// [`DEFAULT_NAMESPACE`]. Never fails.
    pub fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((namespace, name)) => Self::new(namespace, name),
            None => Self::new(DEFAULT_NAMESPACE, text),
        }
    }

    /// The namespace (never empty).
    pub fn namespace(&self) -> &str {
        &self.text[..self.slash]
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.text[self.slash + 1..]
    }

    /// The `namespace/name` text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The same identity as an [`edge_rt::ObjectId`].
    pub fn id(&self) -> edge_rt::ObjectId {
        edge_rt::ObjectId::new(self.namespace(), self.name())
    }
}

impl From<&edge_rt::ObjectId> for ObjectKey {
    fn from(id: &edge_rt::ObjectId) -> Self {
        Self::new(&id.namespace, &id.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl FromStr for ObjectKey {
    type Err = Infallible;

    /// See [`ObjectKey::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

// Equality, order and hash are the text's alone, as `Borrow<str>` requires.
impl PartialEq for ObjectKey {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ObjectKey {}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for ObjectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialEq<str> for ObjectKey {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for ObjectKey {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl Borrow<str> for ObjectKey {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> Self {
        k.text.to_string()
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Self::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    #[test]
    fn an_empty_namespace_is_default() {
        let k = ObjectKey::new("", "pump");
        assert_eq!(k.as_str(), "default/pump");
        assert_eq!((k.namespace(), k.name()), ("default", "pump"));
        assert_eq!(k, ObjectKey::new("default", "pump"));
        assert_eq!(k.to_string(), "default/pump");
    }

    #[test]
    fn parse_splits_at_the_first_slash_and_defaults_the_namespace() {
        let k = ObjectKey::parse("plant/pump");
        assert_eq!((k.namespace(), k.name()), ("plant", "pump"));
        let k = ObjectKey::parse("pump");
        assert_eq!((k.namespace(), k.name()), ("default", "pump"));
        let k: ObjectKey = "/pump".parse().unwrap_or_else(|e| match e {});
        assert_eq!(k.as_str(), "default/pump");
    }

    #[test]
    fn maps_keyed_by_it_are_searched_with_str() {
        let mut h = HashMap::new();
        h.insert(ObjectKey::new("ns", "a"), 1);
        assert_eq!(h.get("ns/a"), Some(&1));
        let mut b = BTreeMap::new();
        b.insert(ObjectKey::new("ns", "b"), 2);
        b.insert(ObjectKey::new("ns", "a"), 1);
        assert_eq!(b.get("ns/b"), Some(&2));
        // Ordered as the text.
        let order: Vec<&str> = b.keys().map(ObjectKey::as_str).collect();
        assert_eq!(order, ["ns/a", "ns/b"]);
    }

    #[test]
    fn serializes_as_its_text() {
        let k = ObjectKey::new("ns", "a");
        assert_eq!(serde_json::to_string(&k).unwrap(), "\"ns/a\"");
        let back: ObjectKey = serde_json::from_str("\"ns/a\"").unwrap();
        assert_eq!(back, k);
        assert_eq!(back.name(), "a");
    }
}
