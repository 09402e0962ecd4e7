//! The mapper's DMI side: its `DeviceMapperService` server, its client of
//! EdgeCore's `DeviceManagerService` (registration and reports), and the
//! conversion between DMI messages and the SDK's types. No other module of the
//! SDK touches DMI messages.

pub(crate) mod client;
pub(crate) mod convert;
pub(crate) mod server;
