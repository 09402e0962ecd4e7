//! The mapper's DMI side: its `DeviceMapperService` server and its client of
//! EdgeCore's `DeviceManagerService` (registration and reports).

pub(crate) mod client;
pub(crate) mod server;
