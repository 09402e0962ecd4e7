//! Simulator configuration (YAML).
//!
//! ```yaml
//! host: 127.0.0.1                  # listen address, also the host in endpoint URLs
//! port: 0                          # 0 picks a free port (printed on the READY line)
//! namespace: urn:edge-dmi:opcua-sim  # the simulator's namespace; always index 2
//! pkiDir: pki                      # own certificate, trusted/rejected client certs
//! tickMs: 100                      # how often patterns are evaluated, ms
//! latencyMs: 0                     # delay of every Read and Write from the start, ms
//! security:
//!   endpoints: [None, Basic256Sha256/Sign, Basic256Sha256/SignAndEncrypt]
//!   anonymous: true
//!   users: [{ username: operator, password: secret }]
//!   trustClientCerts: false        # true: accept any client certificate
//! limits: { maxNodesPerRead: 10000, maxNodesPerWrite: 10000, maxSessions: 100 }
//! nodes:
//!   - nodeId: s=Boiler.Temperature # or i=1001, ns=2;s=..., ns=2;i=...
//!     folder: Plant/Boiler         # folders under Objects, created as needed
//!     browseName: Temperature      # default: the string identifier / `i<number>`
//!     dataType: Double
//!     value: 21.5
//!     pattern: sine                # constant (default), counter, ramp, sine, randomWalk
//!     amplitude: 2.5
//!     periodMs: 60000
//!   - { nodeId: s=Boiler.Setpoint, folder: Plant/Boiler, dataType: Double, value: 22, writable: true }
//!   - { nodeId: s=Boiler.Levels, dataType: Float, array: true, value: [1.5, 2.5, 3.5] }
//! ```

use std::path::PathBuf;

use serde::Deserialize;

/// The whole simulator.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimConfig {
    /// Listen address; also the host in the endpoint URLs and the READY line.
    #[serde(default = "default_host")]
    pub host: String,
    /// TCP port; 0 picks a free one.
    #[serde(default)]
    pub port: u16,
    /// Namespace URI of the simulated nodes (namespace index 2).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Application name in the endpoint descriptions and the certificate.
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// Application URI (also in the certificate); must differ from `namespace`.
    #[serde(default = "default_application_uri")]
    pub application_uri: String,
    /// PKI directory: `own/cert.der`, `private/private.pem` (created when
    /// missing), `trusted/` and `rejected/` client certificates.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// How often dynamic values are evaluated, ms.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Delay before every Read and Write on the simulated nodes is answered, ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// Endpoints and user identities.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Operation limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The variables.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            host: default_host(),
            port: 0,
            namespace: default_namespace(),
            application_name: default_application_name(),
            application_uri: default_application_uri(),
            pki_dir: default_pki_dir(),
            tick_ms: default_tick_ms(),
            latency_ms: 0,
            security: SecurityConfig::default(),
            limits: LimitsConfig::default(),
            nodes: Vec::new(),
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_namespace() -> String {
    "urn:edge-dmi:opcua-sim".to_owned()
}

fn default_application_name() -> String {
    "opcua-sim".to_owned()
}

fn default_application_uri() -> String {
    "urn:edge-dmi:opcua-sim:server".to_owned()
}

fn default_pki_dir() -> PathBuf {
    PathBuf::from("pki")
}

fn default_tick_ms() -> u64 {
    100
}

/// One endpoint the server offers (all share the path `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum EndpointKind {
    /// No security.
    #[serde(rename = "None")]
    None,
    /// Basic256Sha256, messages signed.
    #[serde(rename = "Basic256Sha256/Sign")]
    Basic256Sha256Sign,
    /// Basic256Sha256, messages signed and encrypted.
    #[serde(rename = "Basic256Sha256/SignAndEncrypt")]
    Basic256Sha256SignAndEncrypt,
}

impl EndpointKind {
    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            EndpointKind::None => "None",
            EndpointKind::Basic256Sha256Sign => "Basic256Sha256/Sign",
            EndpointKind::Basic256Sha256SignAndEncrypt => "Basic256Sha256/SignAndEncrypt",
        }
    }
}

/// Endpoints and user identities.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityConfig {
    /// Offered endpoints; default all three.
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<EndpointKind>,
    /// Accept anonymous sessions.
    #[serde(default = "default_true")]
    pub anonymous: bool,
    /// Accepted user names and passwords (on every endpoint).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Trust every client certificate (otherwise a client's certificate must
    /// be copied from `pki/rejected/` to `pki/trusted/` first).
    #[serde(default)]
    pub trust_client_certs: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            endpoints: default_endpoints(),
            anonymous: true,
            users: Vec::new(),
            trust_client_certs: false,
        }
    }
}

fn default_endpoints() -> Vec<EndpointKind> {
    vec![
        EndpointKind::None,
        EndpointKind::Basic256Sha256Sign,
        EndpointKind::Basic256Sha256SignAndEncrypt,
    ]
}

fn default_true() -> bool {
    true
}

/// A user name and password.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserConfig {
    /// User name.
    pub username: String,
    /// Password (plain text: a simulator's configuration).
    pub password: String,
}

/// Operation limits the server announces and enforces.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most ReadValueIds in one Read (more: BadTooManyOperations).
    #[serde(default = "default_max_nodes")]
    pub max_nodes_per_read: usize,
    /// Most WriteValues in one Write (more: BadTooManyOperations).
    #[serde(default = "default_max_nodes")]
    pub max_nodes_per_write: usize,
    /// Most sessions at once.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_nodes_per_read: default_max_nodes(),
            max_nodes_per_write: default_max_nodes(),
            max_sessions: default_max_sessions(),
        }
    }
}

fn default_max_nodes() -> usize {
    10_000
}

fn default_max_sessions() -> usize {
    100
}

/// The OPC-UA built-in type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SimType {
    /// true / false.
    Boolean,
    /// 8-bit signed integer.
    SByte,
    /// 8-bit unsigned integer.
    Byte,
    /// 16-bit signed integer.
    Int16,
    /// 16-bit unsigned integer.
    UInt16,
    /// 32-bit signed integer.
    Int32,
    /// 32-bit unsigned integer.
    UInt32,
    /// 64-bit signed integer (patterns compute in f64: exact up to 2^53).
    Int64,
    /// 64-bit unsigned integer (patterns compute in f64: exact up to 2^53).
    UInt64,
    /// IEEE 754 single precision.
    Float,
    /// IEEE 754 double precision.
    Double,
    /// UTF-8 text.
    String,
    /// A point in time (RFC 3339 in the configuration and commands).
    DateTime,
    /// Bytes (base64 in the configuration and commands).
    ByteString,
    /// Text with an optional locale.
    LocalizedText,
    /// A GUID (`72962b91-fa75-4ae6-8d28-b404dc7daf63`).
    Guid,
}

impl SimType {
    /// Numbers (and Boolean, as 0/1) take patterns and arrays.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            SimType::Boolean
                | SimType::SByte
                | SimType::Byte
                | SimType::Int16
                | SimType::UInt16
                | SimType::Int32
                | SimType::UInt32
                | SimType::Int64
                | SimType::UInt64
                | SimType::Float
                | SimType::Double
        )
    }
}

/// How a variable's value changes, evaluated every `tickMs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Pattern {
    /// Stays at `value` until written.
    #[default]
    Constant,
    /// `value + step` every `periodMs`, wrapping from `max` to `min`
    /// (defaults: min 0 or the initial value if negative, max the type's
    /// largest value).
    Counter,
    /// `min` to `max` over `periodMs`, again and again (defaults 0 and 100).
    Ramp,
    /// `value + amplitude·sin(2π·t/periodMs)`.
    Sine,
    /// A random step of at most `step` every `periodMs`, within `min..=max`
    /// (defaults: the type's range).
    RandomWalk,
}

/// One variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// `i=<n>`, `s=<text>`, or either with `ns=2;` before it (the simulator's
    /// namespace is always 2).
    pub node_id: String,
    /// Browse name (in namespace 2); default the string identifier, or
    /// `i<n>` for a numeric one.
    #[serde(default)]
    pub browse_name: Option<String>,
    /// Display name; default the browse name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Folder path under Objects, `/`-separated (`Plant/Boiler`); folders are
    /// created as needed with node ids `ns=2;s=<path>`. Default: Objects.
    #[serde(default)]
    pub folder: Option<String>,
    /// Built-in type.
    pub data_type: SimType,
    /// A one-dimensional array of `dataType` (numeric types and Boolean).
    #[serde(default)]
    pub array: bool,
    /// Initial value: a number, boolean or string (ByteString: base64,
    /// DateTime: RFC 3339, Guid: text form, LocalizedText: text or
    /// `{locale, text}`); a list for arrays. Default zero / empty / now.
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// AccessLevel CurrentRead|CurrentWrite; otherwise read-only
    /// (writes get BadNotWritable).
    #[serde(default)]
    pub writable: bool,
    /// Dynamic behaviour (numeric types only; arrays: every element).
    #[serde(default)]
    pub pattern: Pattern,
    /// Lower bound of the pattern; client writes below it get BadOutOfRange.
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound of the pattern; client writes above it get BadOutOfRange.
    #[serde(default)]
    pub max: Option<f64>,
    /// Counter increment, largest random-walk step (default 1).
    #[serde(default)]
    pub step: Option<f64>,
    /// Pattern period, ms (default 1000).
    #[serde(default)]
    pub period_ms: Option<u64>,
    /// Sine amplitude (default 1).
    #[serde(default)]
    pub amplitude: Option<f64>,
    /// Status from the start, e.g. `BadSensorFailure` (as the `bad` command).
    #[serde(default)]
    pub status: Option<String>,
}

impl NodeConfig {
    /// A variable of `data_type` with every optional field unset.
    pub fn new(node_id: impl Into<String>, data_type: SimType) -> Self {
        NodeConfig {
            node_id: node_id.into(),
            browse_name: None,
            display_name: None,
            description: None,
            folder: None,
            data_type,
            array: false,
            value: None,
            writable: false,
            pattern: Pattern::Constant,
            min: None,
            max: None,
            step: None,
            period_ms: None,
            amplitude: None,
            status: None,
        }
    }
}

/// First numeric identifier of generated nodes (`ns=2;i=1000` on).
pub const GENERATED_FIRST_ID: u32 = 1000;

impl SimConfig {
    /// Adds `count` Double counters `ns=2;i=1000`, `ns=2;i=1001`, … in the
    /// folder `Generated`, browse names `Counter<k>`: each starts at `k` and
    /// goes up by 1 every `period_ms`.
    #[must_use]
    pub fn with_generated(mut self, count: u32, period_ms: u64) -> Self {
        self.nodes.reserve(count as usize);
        for k in 0..count {
            let mut n = NodeConfig::new(
                format!("i={}", GENERATED_FIRST_ID.saturating_add(k)),
                SimType::Double,
            );
            n.browse_name = Some(format!("Counter{k}"));
            n.folder = Some("Generated".to_owned());
            n.value = Some(serde_json::json!(k));
            n.pattern = Pattern::Counter;
            n.period_ms = Some(period_ms);
            self.nodes.push(n);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r"
host: 127.0.0.1
port: 0
security:
  endpoints: [None, Basic256Sha256/SignAndEncrypt]
  users: [{ username: operator, password: secret }]
  trustClientCerts: true
limits: { maxNodesPerRead: 10 }
nodes:
  - nodeId: s=Boiler.Temperature
    folder: Plant/Boiler
    dataType: Double
    value: 21.5
    pattern: sine
    amplitude: 2.5
    periodMs: 60000
  - { nodeId: i=7, dataType: Float, array: true, value: [1.5, 2.5] }
  - { nodeId: s=Walk, dataType: Int32, pattern: randomWalk }
";
        let cfg: SimConfig = yaml_serde::from_str(text).unwrap();
        assert_eq!(cfg.security.endpoints.len(), 2);
        assert_eq!(cfg.limits.max_nodes_per_read, 10);
        assert_eq!(cfg.limits.max_nodes_per_write, 10_000);
        assert_eq!(cfg.nodes[0].pattern, Pattern::Sine);
        assert!(cfg.nodes[1].array);
        assert_eq!(cfg.nodes[2].pattern, Pattern::RandomWalk);
        assert!(cfg.security.anonymous);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = yaml_serde::from_str::<SimConfig>(
            "nodes: [{ nodeId: i=1, dataType: Double, colour: red }]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn generated_nodes_are_double_counters() {
        let cfg = SimConfig::default().with_generated(3, 500);
        assert_eq!(cfg.nodes.len(), 3);
        assert_eq!(cfg.nodes[2].node_id, "i=1002");
        assert_eq!(cfg.nodes[2].data_type, SimType::Double);
        assert_eq!(cfg.nodes[2].pattern, Pattern::Counter);
    }
}
