//! Device `protocol.configData`, as KubeEdge's OPC-UA mapper reads it, plus
//! documented optional extensions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mapper_sdk::{DriverError, DriverResult};
use opcua::crypto::SecurityPolicy;
use opcua::types::MessageSecurityMode;
use serde::Deserialize;

/// Default request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// Default session timeout the mapper asks the server for.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_millis(60_000);
/// Nodes per Read call when neither the server nor `maxNodesPerRead` says.
pub const DEFAULT_MAX_NODES_PER_READ: u32 = 1000;
/// Default publishing interval of a device's subscription.
pub const DEFAULT_PUBLISHING_INTERVAL: Duration = Duration::from_millis(1000);

/// A device's `spec.protocol.configData`.
///
/// | key | meaning |
/// |---|---|
/// | `url` | **required**, `opc.tcp://host:port/path` |
/// | `securityPolicy` | `None` (default), `Basic128Rsa15`, `Basic256`, `Basic256Sha256`, `Aes128_Sha256_RsaOaep`, `Aes256_Sha256_RsaPss` (also the policy URIs) |
/// | `securityMode` | `None`, `Sign`, `SignAndEncrypt` (default with a policy other than `None`) |
/// | `userName` | user name; with `password` the session authenticates with user name and password |
/// | `password` | path of a file holding the password (a mounted Secret), as KubeEdge does; a trailing newline is dropped |
/// | `certificate`, `privateKey` | paths of the mapper's application instance certificate (DER or PEM) and private key (PEM) for signing and encryption; default: one generated once in the mapper's PKI directory |
/// | `remoteCertificate` | path of the server's certificate: trusted for this mapper (copied into the PKI directory's `trusted/`) |
/// | `userCertificate`, `userPrivateKey` | extension: X.509 user identity (certificate and private key paths) |
/// | `timeout` | extension: request timeout, ms (default 5000) |
/// | `sessionTimeout` | extension: session timeout asked of the server, ms (default 60000) |
/// | `maxNodesPerRead` | extension: nodes per Read call (default: the server's `MaxNodesPerRead` operation limit, else 1000; the smaller of the two when both are known) |
/// | `subscribe` | extension: `true` makes the properties monitored items of a subscription (push mode) instead of polled reads (default `false`) |
/// | `publishingInterval` | extension: the subscription's publishing interval, ms (default 1000) |
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpcuaConfig {
    /// Endpoint URL.
    pub url: String,
    /// Security policy name or URI.
    pub security_policy: Option<String>,
    /// Message security mode.
    pub security_mode: Option<String>,
    /// User name.
    pub user_name: Option<String>,
    /// Path of the password file.
    pub password: Option<String>,
    /// Path of the client's application instance certificate.
    pub certificate: Option<String>,
    /// Path of the client's private key.
    pub private_key: Option<String>,
    /// Path of the server certificate to trust.
    pub remote_certificate: Option<String>,
    /// Path of the X.509 user identity certificate.
    pub user_certificate: Option<String>,
    /// Path of the X.509 user identity private key.
    pub user_private_key: Option<String>,
    /// Request timeout, ms.
    pub timeout: Option<u64>,
    /// Session timeout, ms.
    pub session_timeout: Option<u64>,
    /// Nodes per Read call.
    pub max_nodes_per_read: Option<u32>,
    /// Push mode.
    pub subscribe: Option<bool>,
    /// Publishing interval, ms.
    pub publishing_interval: Option<u64>,
}

/// The security policies, by their KubeEdge names.
pub const POLICY_NAMES: &[&str] = &[
    "None",
    "Basic128Rsa15",
    "Basic256",
    "Basic256Sha256",
    "Aes128_Sha256_RsaOaep",
    "Aes256_Sha256_RsaPss",
];

/// The message security modes.
pub const MODE_NAMES: &[&str] = &["None", "Sign", "SignAndEncrypt"];

/// Parses a security policy name (KubeEdge's spelling, with or without the
/// underscores, any case) or URI.
///
/// # Errors
/// [`DriverError::Config`] listing the known policies.
pub fn parse_policy(text: &str) -> DriverResult<SecurityPolicy> {
    let t = text.trim();
    let name = t
        .strip_prefix("http://opcfoundation.org/UA/SecurityPolicy#")
        .unwrap_or(t);
    let folded: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    Ok(match folded.as_str() {
        "none" | "" => SecurityPolicy::None,
        "basic128rsa15" => SecurityPolicy::Basic128Rsa15,
        "basic256" => SecurityPolicy::Basic256,
        "basic256sha256" => SecurityPolicy::Basic256Sha256,
        "aes128sha256rsaoaep" => SecurityPolicy::Aes128Sha256RsaOaep,
        "aes256sha256rsapss" => SecurityPolicy::Aes256Sha256RsaPss,
        _ => {
            return Err(DriverError::Config(format!(
                "`securityPolicy` `{text}` is not one of {}",
                POLICY_NAMES.join(", ")
            )));
        }
    })
}

/// Parses a message security mode (any case).
///
/// # Errors
/// [`DriverError::Config`] listing the modes.
pub fn parse_mode(text: &str) -> DriverResult<MessageSecurityMode> {
    Ok(
        match text
            .trim()
            .replace(['_', '-', ' '], "")
            .to_ascii_lowercase()
            .as_str()
        {
            "none" | "" => MessageSecurityMode::None,
            "sign" => MessageSecurityMode::Sign,
            "signandencrypt" => MessageSecurityMode::SignAndEncrypt,
            _ => {
                return Err(DriverError::Config(format!(
                    "`securityMode` `{text}` is not one of {}",
                    MODE_NAMES.join(", ")
                )));
            }
        },
    )
}

/// The name of a policy as KubeEdge writes it.
pub fn policy_name(p: SecurityPolicy) -> &'static str {
    match p {
        SecurityPolicy::None | SecurityPolicy::Unknown => "None",
        SecurityPolicy::Basic128Rsa15 => "Basic128Rsa15",
        SecurityPolicy::Basic256 => "Basic256",
        SecurityPolicy::Basic256Sha256 => "Basic256Sha256",
        SecurityPolicy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
        SecurityPolicy::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
    }
}

/// The name of a mode.
pub fn mode_name(m: MessageSecurityMode) -> &'static str {
    match m {
        MessageSecurityMode::None => "None",
        MessageSecurityMode::Sign => "Sign",
        MessageSecurityMode::SignAndEncrypt => "SignAndEncrypt",
        MessageSecurityMode::Invalid => "Invalid",
    }
}

/// Who the session authenticates as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No user.
    Anonymous,
    /// User name and the file holding the password (read at each connect).
    UserName {
        /// User name.
        user: String,
        /// Password file.
        password_file: PathBuf,
    },
    /// An X.509 user certificate and its private key.
    X509 {
        /// Certificate path.
        certificate: PathBuf,
        /// Private key path.
        private_key: PathBuf,
    },
}

/// A validated configuration: what a session is opened with. Devices whose
/// `Endpoint`s are equal share one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Endpoint URL.
    pub url: String,
    /// Security policy.
    pub policy: PolicyKey,
    /// Message security mode.
    pub mode: ModeKey,
    /// User identity.
    pub identity: Identity,
    /// The client's certificate and private key, when configured.
    pub client_keys: Option<(PathBuf, PathBuf)>,
    /// The server certificate to trust, when configured.
    pub remote_certificate: Option<PathBuf>,
    /// Request timeout.
    pub timeout: Duration,
    /// Session timeout.
    pub session_timeout: Duration,
}

/// A [`SecurityPolicy`] usable as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyKey(pub &'static str);

impl PolicyKey {
    /// The policy.
    pub fn policy(self) -> SecurityPolicy {
        parse_policy(self.0).unwrap_or(SecurityPolicy::Unknown)
    }
}

/// A [`MessageSecurityMode`] usable as a map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModeKey(pub &'static str);

impl ModeKey {
    /// The mode.
    pub fn mode(self) -> MessageSecurityMode {
        parse_mode(self.0).unwrap_or(MessageSecurityMode::Invalid)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}/{})", self.url, self.policy.0, self.mode.0)
    }
}

/// Checks that `path` (the value of `key`) names a readable regular file.
///
/// # Errors
/// [`DriverError::Config`] naming the key, the path and the reason.
pub fn readable_file(key: &str, path: &str) -> DriverResult<PathBuf> {
    let p = PathBuf::from(path.trim());
    if p.as_os_str().is_empty() {
        return Err(DriverError::Config(format!("`{key}` is empty")));
    }
    match std::fs::metadata(&p) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(DriverError::Config(format!(
                "`{key}` {}: not a regular file",
                p.display()
            )));
        }
        Err(e) => {
            return Err(DriverError::Config(format!("`{key}` {}: {e}", p.display())));
        }
    }
    // Opening proves read permission (metadata does not).
    std::fs::File::open(&p)
        .map_err(|e| DriverError::Config(format!("`{key}` {}: {e}", p.display())))?;
    Ok(p)
}

/// Reads the password file: its content without one trailing newline.
///
/// # Errors
/// [`DriverError::Config`] naming `password`, the path and the reason.
pub fn read_password(path: &Path) -> DriverResult<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DriverError::Config(format!("`password` {}: {e}", path.display())))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(text.to_owned())
}

impl OpcuaConfig {
    /// Request timeout (`timeout`, ms; default 5 s).
    pub fn timeout(&self) -> Duration {
        self.timeout
            .filter(|t| *t > 0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
    }

    /// Session timeout (`sessionTimeout`, ms; default 60 s).
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
            .filter(|t| *t > 0)
            .map_or(DEFAULT_SESSION_TIMEOUT, Duration::from_millis)
    }

    /// Publishing interval (`publishingInterval`, ms; default 1 s).
    pub fn publishing_interval(&self) -> Duration {
        self.publishing_interval
            .filter(|t| *t > 0)
            .map_or(DEFAULT_PUBLISHING_INTERVAL, Duration::from_millis)
    }

    /// Whether properties are monitored items (`subscribe`).
    pub fn subscribe(&self) -> bool {
        self.subscribe.unwrap_or(false)
    }

    /// Checks everything that can be checked without the server and returns
    /// the session's [`Endpoint`].
    ///
    /// # Errors
    /// [`DriverError::Config`] naming the key: a URL that is not
    /// `opc.tcp://host:port`, an unknown policy or mode, a policy and mode
    /// that do not go together, half of a key pair, `password` without
    /// `userName`, a certificate, key or password file that is missing or
    /// unreadable.
    pub fn endpoint(&self) -> DriverResult<Endpoint> {
        let bad = |m: String| Err(DriverError::Config(m));
        let url = self.url.trim();
        let Some(rest) = url.strip_prefix("opc.tcp://") else {
            return bad(format!("`url` `{url}` does not start with opc.tcp://"));
        };
        let host_port = rest.split('/').next().unwrap_or_default();
        if host_port.is_empty() {
            return bad(format!("`url` `{url}` has no host"));
        }
        if let Some((_, port)) = host_port.rsplit_once(':')
            && !host_port.ends_with(']')
            && port.parse::<u16>().is_err()
        {
            return bad(format!("`url` `{url}`: port `{port}` is not a number"));
        }
        let policy = match &self.security_policy {
            Some(p) => parse_policy(p)?,
            None => SecurityPolicy::None,
        };
        let mode = match (&self.security_mode, policy) {
            (Some(m), _) => parse_mode(m)?,
            (None, SecurityPolicy::None) => MessageSecurityMode::None,
            (None, _) => MessageSecurityMode::SignAndEncrypt,
        };
        match (policy, mode) {
            (SecurityPolicy::None, MessageSecurityMode::None) => {}
            (SecurityPolicy::None, m) => {
                return bad(format!(
                    "`securityMode` {} needs a `securityPolicy` other than None",
                    mode_name(m)
                ));
            }
            (p, MessageSecurityMode::None) => {
                return bad(format!(
                    "`securityPolicy` {} needs `securityMode` Sign or SignAndEncrypt",
                    policy_name(p)
                ));
            }
            _ => {}
        }
        let client_keys = match (&self.certificate, &self.private_key) {
            (Some(c), Some(k)) => Some((
                readable_file("certificate", c)?,
                readable_file("privateKey", k)?,
            )),
            (None, None) => None,
            (Some(_), None) => return bad("`certificate` is given without `privateKey`".into()),
            (None, Some(_)) => return bad("`privateKey` is given without `certificate`".into()),
        };
        let remote_certificate = self
            .remote_certificate
            .as_deref()
            .map(|p| readable_file("remoteCertificate", p))
            .transpose()?;
        let identity = match (
            &self.user_name,
            &self.password,
            &self.user_certificate,
            &self.user_private_key,
        ) {
            (Some(_), _, Some(_), _) | (Some(_), _, _, Some(_)) => {
                return bad(
                    "give either `userName` and `password` or `userCertificate` and `userPrivateKey`, not both"
                        .into(),
                );
            }
            (Some(user), password, None, None) => {
                if user.is_empty() {
                    return bad("`userName` is empty".into());
                }
                let Some(password) = password else {
                    return bad(
                        "`userName` needs `password` (the path of a file holding the password)"
                            .into(),
                    );
                };
                let password_file = readable_file("password", password)?;
                Identity::UserName {
                    user: user.clone(),
                    password_file,
                }
            }
            (None, Some(_), _, _) => {
                return bad("`password` is given without `userName`".into());
            }
            (None, None, Some(c), Some(k)) => Identity::X509 {
                certificate: readable_file("userCertificate", c)?,
                private_key: readable_file("userPrivateKey", k)?,
            },
            (None, None, Some(_), None) => {
                return bad("`userCertificate` is given without `userPrivateKey`".into());
            }
            (None, None, None, Some(_)) => {
                return bad("`userPrivateKey` is given without `userCertificate`".into());
            }
            (None, None, None, None) => Identity::Anonymous,
        };
        if let Some(0) = self.max_nodes_per_read {
            return bad("`maxNodesPerRead` must be at least 1".into());
        }
        Ok(Endpoint {
            url: url.to_owned(),
            policy: PolicyKey(policy_name(policy)),
            mode: ModeKey(mode_name(mode)),
            identity,
            client_keys,
            remote_certificate,
            timeout: self.timeout(),
            session_timeout: self.session_timeout(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> OpcuaConfig {
        serde_json::from_value(v).unwrap()
    }

    fn err(v: serde_json::Value) -> String {
        cfg(v).endpoint().unwrap_err().to_string()
    }

    #[test]
    fn policies_and_modes_by_any_spelling() {
        assert_eq!(
            parse_policy("Aes128_Sha256_RsaOaep").unwrap(),
            SecurityPolicy::Aes128Sha256RsaOaep
        );
        assert_eq!(
            parse_policy("aes256sha256rsapss").unwrap(),
            SecurityPolicy::Aes256Sha256RsaPss
        );
        assert_eq!(
            parse_policy("http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256").unwrap(),
            SecurityPolicy::Basic256Sha256
        );
        for n in POLICY_NAMES {
            assert_eq!(policy_name(parse_policy(n).unwrap()), *n);
        }
        for n in MODE_NAMES {
            assert_eq!(mode_name(parse_mode(n).unwrap()), *n);
        }
        let e = parse_policy("Basic512").unwrap_err().to_string();
        assert!(
            e.contains("`securityPolicy` `Basic512` is not one of None, Basic128Rsa15"),
            "{e}"
        );
        let e = parse_mode("Encrypt").unwrap_err().to_string();
        assert!(
            e.contains("`securityMode` `Encrypt` is not one of None, Sign, SignAndEncrypt"),
            "{e}"
        );
    }

    #[test]
    fn defaults() {
        let e = cfg(json!({"url": "opc.tcp://127.0.0.1:4840"}))
            .endpoint()
            .unwrap();
        assert_eq!(e.policy.0, "None");
        assert_eq!(e.mode.0, "None");
        assert_eq!(e.identity, Identity::Anonymous);
        assert_eq!(e.timeout, DEFAULT_TIMEOUT);
        let e = cfg(json!({"url": "opc.tcp://h:4840/x", "securityPolicy": "Basic256Sha256"}))
            .endpoint()
            .unwrap();
        assert_eq!(e.mode.0, "SignAndEncrypt");
        assert_eq!(e.policy.policy(), SecurityPolicy::Basic256Sha256);
        assert_eq!(e.mode.mode(), MessageSecurityMode::SignAndEncrypt);
    }

    #[test]
    fn bad_configs_name_the_key() {
        assert!(err(json!({"url": "http://x"})).contains("does not start with opc.tcp://"));
        assert!(err(json!({"url": "opc.tcp://"})).contains("has no host"));
        assert!(err(json!({"url": "opc.tcp://h:port"})).contains("port `port` is not a number"));
        assert!(
            err(json!({"url": "opc.tcp://h:1", "securityMode": "Sign"}))
                .contains("`securityMode` Sign needs a `securityPolicy` other than None")
        );
        assert!(
            err(json!({"url": "opc.tcp://h:1", "securityPolicy": "Basic256", "securityMode": "None"}))
                .contains("needs `securityMode` Sign or SignAndEncrypt")
        );
        let e = err(
            json!({"url": "opc.tcp://h:1", "certificate": "/nonexistent/c.der", "privateKey": "/x"}),
        );
        assert!(
            e.contains("`certificate` /nonexistent/c.der: No such file"),
            "{e}"
        );
        assert!(
            err(json!({"url": "opc.tcp://h:1", "certificate": "/etc/hostname"}))
                .contains("without `privateKey`")
        );
        assert!(err(json!({"url": "opc.tcp://h:1", "userName": "u"})).contains("needs `password`"));
        let e =
            err(json!({"url": "opc.tcp://h:1", "userName": "u", "password": "/nonexistent/pw"}));
        assert!(
            e.contains("`password` /nonexistent/pw: No such file"),
            "{e}"
        );
        assert!(
            err(json!({"url": "opc.tcp://h:1", "password": "/etc/hostname"}))
                .contains("without `userName`")
        );
        let e = err(json!({"url": "opc.tcp://h:1", "remoteCertificate": "/tmp"}));
        assert!(
            e.contains("`remoteCertificate` /tmp: not a regular file"),
            "{e}"
        );
        assert!(err(json!({"url": "opc.tcp://h:1", "maxNodesPerRead": 0})).contains("at least 1"));
    }

    #[test]
    fn password_file_loses_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret \n").unwrap();
        assert_eq!(read_password(&p).unwrap(), "s3cret ");
        std::fs::write(&p, "a\r\n").unwrap();
        assert_eq!(read_password(&p).unwrap(), "a");
        let e =
            cfg(json!({"url": "opc.tcp://h:1", "userName": "u", "password": p.to_str().unwrap()}))
                .endpoint()
                .unwrap();
        assert!(matches!(e.identity, Identity::UserName { ref user, .. } if user == "u"));
    }
}
