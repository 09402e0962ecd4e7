//! Property visitor configData: the node a property reads and writes.

use std::time::Duration;

use mapper_sdk::{DriverError, DriverResult, PropertyType};
use opcua::types::{Identifier, NodeId};
use serde::Deserialize;

use crate::convert::NodeType;

/// A node as written in a visitor's `nodeID`: with a namespace index
/// (`ns=2;i=2`, `ns=3;s=Counter`, `ns=1;g=<GUID>`, `ns=1;b=<base64>`, or
/// namespace 0 without `ns=`), or with a namespace URI
/// (`nsu=urn:example:plant;s=Pump1`) that is looked up in the server's
/// namespace array when a session opens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// A complete NodeId.
    Id(NodeId),
    /// A namespace URI and an identifier in it.
    Uri {
        /// Namespace URI.
        uri: String,
        /// Identifier (`i=`, `s=`, `g=`, `b=`).
        identifier: Identifier,
    },
}

impl Default for NodeRef {
    fn default() -> Self {
        NodeRef::Id(NodeId::null())
    }
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRef::Id(id) => write!(f, "{id}"),
            NodeRef::Uri { uri, identifier } => write!(f, "nsu={uri};{identifier}"),
        }
    }
}

const HINT: &str = "use OPC-UA's string form: ns=<index>;i=<number>, ns=<index>;s=<text>, ns=<index>;g=<GUID>, ns=<index>;b=<base64>, or nsu=<namespace URI>;s=<text>";

impl NodeRef {
    /// Parses `nodeID` text.
    ///
    /// # Errors
    /// [`DriverError::Config`] naming the text and the accepted forms.
    pub fn parse(text: &str) -> DriverResult<NodeRef> {
        let t = text.trim();
        let bad = |why: &str| {
            Err(DriverError::Config(format!(
                "`nodeID` `{text}` {why}; {HINT}"
            )))
        };
        if t.is_empty() {
            return bad("is empty");
        }
        if let Some(rest) = t.strip_prefix("nsu=") {
            // The URI ends at the last `;` followed by an identifier.
            let split = ["i=", "s=", "g=", "b="]
                .iter()
                .filter_map(|k| rest.find(&format!(";{k}")))
                .min();
            let Some(at) = split else {
                return bad("has a namespace URI but no identifier");
            };
            let (uri, id) = (&rest[..at], &rest[at + 1..]);
            if uri.is_empty() {
                return bad("has an empty namespace URI");
            }
            return match id.parse::<Identifier>() {
                Ok(identifier) => Ok(NodeRef::Uri {
                    uri: uri.to_owned(),
                    identifier,
                }),
                Err(()) => bad("has an identifier that does not parse"),
            };
        }
        if t.starts_with("ns=") && !t.contains(';') && t.contains(',') {
            return bad("separates the namespace with `,`; use `;`");
        }
        match t.parse::<NodeId>() {
            Ok(id) if id.is_null() => bad("is the null node"),
            Ok(id) => Ok(NodeRef::Id(id)),
            Err(_) => bad("does not parse"),
        }
    }
}

/// A property's `visitors.configData`.
///
/// | key | meaning |
/// |---|---|
/// | `nodeID` | **required**: the node (see [`NodeRef`]) |
/// | `dataType` | optional: the OPC-UA type writes are encoded as (`Int16`, `Double`, `String`, ..., `Int32[]`; or KubeEdge's `int`, `float`, `double`, `boolean`, `string`, `bytes`), instead of the node's DataType as the server gives it |
///
/// In push mode (`subscribe: true` on the device) the property's
/// `collectCycle` is its monitored item's sampling interval.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpcuaAddress {
    /// `nodeID` as written.
    #[serde(rename = "nodeID", alias = "nodeId", alias = "nodeid")]
    pub node_id: String,
    /// `dataType` as written.
    #[serde(default)]
    pub data_type: Option<String>,
    #[serde(skip)]
    node: NodeRef,
    #[serde(skip)]
    write_type: Option<NodeType>,
    #[serde(skip)]
    sampling_interval: Option<Duration>,
}

impl OpcuaAddress {
    /// An address of `node_id` (prepared, without a `dataType`).
    ///
    /// # Errors
    /// As [`NodeRef::parse`].
    pub fn new(node_id: &str) -> DriverResult<Self> {
        let mut a = OpcuaAddress {
            node_id: node_id.to_owned(),
            data_type: None,
            node: NodeRef::default(),
            write_type: None,
            sampling_interval: None,
        };
        a.prepare(None, None)?;
        Ok(a)
    }

    /// Parses `nodeID` and `dataType` and records the sampling interval
    /// (the property's collect cycle, if known).
    ///
    /// # Errors
    /// [`DriverError::Config`]: an unparsable `nodeID` or unknown `dataType`.
    pub fn prepare(
        &mut self,
        model_type: Option<PropertyType>,
        sampling_interval: Option<Duration>,
    ) -> DriverResult<()> {
        let _ = model_type;
        self.node = NodeRef::parse(&self.node_id)?;
        self.write_type = self.data_type.as_deref().map(NodeType::parse).transpose()?;
        self.sampling_interval = sampling_interval;
        Ok(())
    }

    /// The node.
    pub fn node(&self) -> &NodeRef {
        &self.node
    }

    /// The type writes are encoded as, when `dataType` says.
    pub fn write_type(&self) -> Option<NodeType> {
        self.write_type
    }

    /// The monitored item's sampling interval (the collect cycle; 1 s when
    /// the SDK did not say).
    pub fn sampling_interval(&self) -> Duration {
        self.sampling_interval.unwrap_or(mapper_sdk::DEFAULT_CYCLE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_string_form_parses() {
        assert_eq!(
            NodeRef::parse("ns=2;i=2").unwrap(),
            NodeRef::Id(NodeId::new(2, 2u32))
        );
        assert_eq!(
            NodeRef::parse("ns=3;s=Counter").unwrap(),
            NodeRef::Id(NodeId::new(3, "Counter"))
        );
        assert_eq!(
            NodeRef::parse("i=2258").unwrap(),
            NodeRef::Id(NodeId::new(0, 2258u32))
        );
        let g = NodeRef::parse("ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63").unwrap();
        assert!(
            matches!(g, NodeRef::Id(ref id) if id.namespace == 1),
            "{g:?}"
        );
        let b = NodeRef::parse("ns=1;b=AQID").unwrap();
        assert_eq!(b.to_string(), "ns=1;b=AQID");
        let u = NodeRef::parse("nsu=urn:example:plant;s=Line;1").unwrap();
        assert_eq!(
            u,
            NodeRef::Uri {
                uri: "urn:example:plant".into(),
                identifier: Identifier::from("Line;1"),
            }
        );
        assert_eq!(u.to_string(), "nsu=urn:example:plant;s=Line;1");
        assert!(matches!(
            NodeRef::parse("nsu=http://x/y;i=7").unwrap(),
            NodeRef::Uri {
                identifier: Identifier::Numeric(7),
                ..
            }
        ));
    }

    #[test]
    fn bad_node_ids_say_why_and_how() {
        for (text, why) in [
            ("", "is empty"),
            ("Counter", "does not parse"),
            ("ns=x;i=1", "does not parse"),
            ("ns=2;i=abc", "does not parse"),
            ("ns=1,i=1005", "with `,`; use `;`"),
            ("nsu=urn:x", "no identifier"),
            ("nsu=;s=a", "empty namespace URI"),
            ("nsu=urn:x;g=nope", "identifier that does not parse"),
        ] {
            let e = NodeRef::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(e.contains("ns=<index>;i=<number>"), "{text}: {e}");
        }
    }

    #[test]
    fn addresses_prepare_data_types() {
        let mut a: OpcuaAddress =
            serde_json::from_value(serde_json::json!({"nodeID": "ns=2;s=T", "dataType": "Float"}))
                .unwrap();
        a.prepare(None, Some(Duration::from_millis(250))).unwrap();
        assert_eq!(a.write_type().unwrap().to_string(), "Float");
        assert_eq!(a.sampling_interval(), Duration::from_millis(250));
        assert_eq!(
            OpcuaAddress::new("ns=2;s=T").unwrap().sampling_interval(),
            mapper_sdk::DEFAULT_CYCLE
        );
        let mut a: OpcuaAddress = serde_json::from_value(
            serde_json::json!({"nodeID": "ns=2;s=T", "dataType": "Decimal"}),
        )
        .unwrap();
        assert!(a.prepare(None, None).is_err());
    }
}
