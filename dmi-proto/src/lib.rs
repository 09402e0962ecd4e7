//! # dmi-proto
//!
//! The KubeEdge Device Management Interface (DMI) v1beta1 for Rust: the bottom
//! layer of this workspace, used by `mapper-sdk` (mapper side) and `edgecore-dmi`
//! (edge side). It holds no business logic.
//!
//! * [`v1beta1`]: prost messages and tonic clients/servers generated at build time
//!   from `proto/api.proto` with `protox` (no system `protoc` needed). Package
//!   `v1beta1`, services `DeviceManagerService` (served by EdgeCore) and
//!   `DeviceMapperService` (served by mappers), field numbers as in KubeEdge v1.23.
//! * [`config_data`]: `configData` ⇄ JSON with EdgeCore's `Any` encoding rules.
//! * [`rules`]: the twin-value charset and state strings stock EdgeCore enforces.
//! * [`status`]: what a failed call means (transport, throttled, refused).
//! * [`transport`]: Unix-socket listeners and channels, including the
//!   `:authority` normalisation stock grpc-go clients need and the limits every
//!   served socket applies.
//!
//! ## Limits of served sockets
//!
//! Servers built on [`transport::UdsListener::incoming_with`] and
//! [`transport::ServerLimits::apply`] (edgecore-dmi and every mapper) bound
//! what a peer can hold; defaults, all configurable through
//! [`transport::ServerLimits`]:
//!
//! | limit | default | over it |
//! |---|---|---|
//! | connections per listening socket | 256, at most half the open-file soft limit | the connection idle longest is closed to make room; if all are busy, the newcomer is closed after 1 s |
//! | HTTP/2 preface after connecting | 10 s | connection closed |
//! | time without request traffic | 5 min | connection closed |
//! | unanswered keepalive ping (sent every 60 s) | 20 s | connection closed |
//! | streams in flight per connection | 100 | h2 refuses the stream |
//! | header block on the wire (HEADERS + CONTINUATION) | 64 KiB | connection dropped before buffering |
//! | header list decoded (name + value + 32 per field) | 16 KiB | connection dropped, nothing more decoded into memory |
//! | failing `accept` (`EMFILE`, ...) | pause 100 ms doubling to 1 s | one log line per 10 s |
//!
//! See the [`transport`] module for why each behaves as it does.
//!
//! ```no_run
//! use dmi_proto::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
//! use dmi_proto::transport::{channel, ChannelOptions};
//!
//! # async fn demo() -> Result<(), tonic::Status> {
//! let mut client = DeviceManagerServiceClient::new(channel("/etc/kubeedge/dmi.sock", ChannelOptions::default()));
//! let resp = client
//!     .mapper_register(dmi_proto::v1beta1::MapperRegisterRequest { with_data: true, mapper: None })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//! None; the crate is small and every user needs all of it.

pub mod config_data;
pub mod rules;
pub mod status;
pub mod transport;

/// Generated DMI v1beta1 messages, clients and servers.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// The file descriptor set is not embedded; the `.proto` text is, for tests and tools
/// that generate stubs in other languages.
pub const API_PROTO: &str = include_str!("../proto/api.proto");

/// Fully qualified name of the service EdgeCore serves.
pub const DEVICE_MANAGER_SERVICE: &str = "v1beta1.DeviceManagerService";
/// Fully qualified name of the service mappers serve.
pub const DEVICE_MAPPER_SERVICE: &str = "v1beta1.DeviceMapperService";
