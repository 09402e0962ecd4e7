//! Compact maps for the latest twins of every device: [`Metadata`] (one
//! twin half's metadata in one allocation) and [`Twins`] (a device's twins
//! by property, in one sorted vector).
//!
//! A node keeps the latest twins of every device for as long as it runs. As
//! `BTreeMap`s (a leaf node holds room for 11 entries whatever the count) the
//! twins of a device of five properties, each half with the `timestamp` and
//! `type` metadata stock mappers send, took about 6.4 KB; in these forms
//! about 1.5 KB (benches/README.md, "edgecore-dmi memory"). Both serialize as
//! JSON objects, as the maps did, so the store's records are unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::records::TwinRecord;

/// The metadata of one half of a twin (`reported` or `observedDesired`,
/// spec §2.4): string keys to string values, sorted by key, each key once.
///
/// Kept as one string of length-prefixed fields (`<len>:<key><len>:<value>`
/// for each entry, lengths in bytes, decimal), so any key or value text fits
/// and the whole map is one allocation (none when empty). Lookups scan it:
/// the maps are small (the DMI server bounds them at
/// [`MAX_METADATA_ENTRIES`](crate::hub::MAX_METADATA_ENTRIES) entries).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Box<str>);

impl Metadata {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> MetadataIter<'_> {
        MetadataIter { rest: &self.0 }
    }

    /// How many entries it has.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `key` to `value` (replacing its value if present). Rebuilds the
    /// map: meant for the rare edit, not for building one entry by entry
    /// (collect an iterator for that).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let mut entries: BTreeMap<&str, &str> = self.iter().collect();
        let (key, value) = (key.into(), value.into());
        entries.insert(&key, &value);
        *self = Self::from_sorted(entries);
    }

    /// From unique entries in key order.
    fn from_sorted<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = String::new();
        for (k, v) in entries {
            for field in [k, v] {
                out.push_str(&field.len().to_string());
                out.push(':');
                out.push_str(field);
            }
        }
        Self(out.into_boxed_str())
    }
}

/// The entries of a [`Metadata`], in key order.
#[derive(Debug, Clone)]
pub struct MetadataIter<'a> {
    rest: &'a str,
}

impl<'a> MetadataIter<'a> {
    /// The next length-prefixed field.
    fn field(&mut self) -> Option<&'a str> {
        let (len, tail) = self.rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let field = tail.get(..len)?;
        self.rest = tail.get(len..)?;
        Some(field)
    }
}

impl<'a> Iterator for MetadataIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.field()?;
        let v = self.field()?;
        Some((k, v))
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a str, &'a str);
    type IntoIter = MetadataIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Metadata {
    /// Later entries replace earlier ones of the same key.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let owned: Vec<(K, V)> = iter.into_iter().collect();
        let sorted: BTreeMap<&str, &str> = owned
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        Self::from_sorted(sorted)
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(m: BTreeMap<String, String>) -> Self {
        Self::from_sorted(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl<const N: usize> From<[(String, String); N]> for Metadata {
    fn from(entries: [(String, String); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl std::ops::Index<&str> for Metadata {
    type Output = str;

    /// # Panics
    /// When `key` is absent, as a map's index does.
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("metadata has no key {key:?}"),
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Self::from)
    }
}

/// A device's latest twins by property name, in name order: one vector of
/// `(name, twin)` grown one entry at a time (no spare capacity kept).
#[derive(Clone, Default, PartialEq)]
pub struct Twins(Vec<(Box<str>, TwinRecord)>);

impl Twins {
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name))
    }

    /// The twin of property `name`.
    pub fn get(&self, name: &str) -> Option<&TwinRecord> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// The twin of property `name`, to change.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut TwinRecord> {
        self.position(name).ok().map(|i| &mut self.0[i].1)
    }

    /// Whether property `name` has a twin.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets the twin of property `name`; the one it replaces, if any.
    pub fn insert(&mut self, name: impl AsRef<str>, twin: TwinRecord) -> Option<TwinRecord> {
        let name = name.as_ref();
        match self.position(name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, twin)),
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (name.into(), twin));
                None
            }
        }
    }

    /// Room for `additional` more twins without growing (exactly).
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve_exact(additional);
    }

    /// The twins, in property-name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &TwinRecord)> + '_ {
        self.0.iter().map(|(n, t)| (&**n, t))
    }

    /// The twins, to change, in property-name order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut TwinRecord> + '_ {
        self.0.iter_mut().map(|(_, t)| t)
    }

    /// How many twins it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Twins {
    type Item = (&'a str, &'a TwinRecord);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Box<str>, TwinRecord)>,
        fn(&'a (Box<str>, TwinRecord)) -> (&'a str, &'a TwinRecord),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(n, t)| (&**n, t))
    }
}

impl<K: AsRef<str>> FromIterator<(K, TwinRecord)> for Twins {
    /// Later twins replace earlier ones of the same property.
    fn from_iter<I: IntoIterator<Item = (K, TwinRecord)>>(iter: I) -> Self {
        let mut out = Self::default();
        for (k, t) in iter {
            out.insert(k, t);
        }
        out.0.shrink_to_fit();
        out
    }
}

impl std::ops::Index<&str> for Twins {
    type Output = TwinRecord;

    /// # Panics
    /// When property `name` has no twin, as a map's index does.
    fn index(&self, name: &str) -> &TwinRecord {
        match self.get(name) {
            Some(t) => t,
            None => panic!("no twin of property {name:?}"),
        }
    }
}

impl fmt::Debug for Twins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Twins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Twins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, TwinRecord>::deserialize(d).map(|m| m.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_keeps_any_text_sorted_and_unique() {
        let m: Metadata = [
            ("type", "float"),
            ("timestamp", "1763700000000"),
            ("odd:key", "9:x:"),
            ("", ""),
            ("emoji", "🌡️ °C"),
            ("type", "double"),
        ]
        .into_iter()
        .collect();
        assert_eq!(m.get("type"), Some("double"), "a later entry wins");
        assert_eq!(m.get("odd:key"), Some("9:x:"));
        assert_eq!(m.get(""), Some(""));
        assert_eq!(m.get("emoji"), Some("🌡️ °C"));
        assert_eq!(m.get("missing"), None);
        assert_eq!(
            m.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["", "emoji", "odd:key", "timestamp", "type"]
        );
        assert_eq!(m.len(), 5);
        assert!(Metadata::default().is_empty() && Metadata::default().get("").is_none());
    }

    #[test]
    fn metadata_insert_replaces_and_adds_in_order() {
        let mut m: Metadata = [("status", "received")].into_iter().collect();
        m.insert("status", "applied");
        m.insert("reason", "ok");
        assert_eq!(format!("{m:?}"), r#"{"reason": "ok", "status": "applied"}"#);
    }

    #[test]
    fn metadata_and_twins_serialize_as_the_maps_did() {
        let meta: BTreeMap<String, String> = [
            ("timestamp".to_owned(), "1".to_owned()),
            ("type".to_owned(), "int".to_owned()),
        ]
        .into();
        let twin = TwinRecord {
            reported: "3".into(),
            reported_meta: meta.clone().into(),
            updated_ms: 7,
            ..TwinRecord::default()
        };
        let twins: Twins = [("b", twin.clone()), ("a", TwinRecord::default())]
            .into_iter()
            .collect();
        let json = serde_json::to_value(&twins).expect("serializes");
        assert_eq!(
            json["b"]["reported_meta"],
            serde_json::to_value(&meta).expect("serializes")
        );
        assert_eq!(
            json.as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        let back: Twins = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, twins);
        assert_eq!(back["b"], twin);
        assert_eq!(back["b"].reported_meta["type"], *"int");
    }

    #[test]
    fn twins_insert_keeps_name_order_and_replaces() {
        let mut t = Twins::default();
        for n in ["mode", "alpha", "zeta", "mode"] {
            t.insert(
                n,
                TwinRecord {
                    reported: n.into(),
                    ..TwinRecord::default()
                },
            );
        }
        assert_eq!(
            t.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            ["alpha", "mode", "zeta"]
        );
        assert!(t.contains_key("zeta") && !t.contains_key("z"));
        let old = t.insert("alpha", TwinRecord::default());
        assert_eq!(old.map(|o| o.reported), Some("alpha".to_owned()));
        assert_eq!(t.len(), 3);
    }
}
