//! OPC-UA status codes and errors as [`DriverError`]s: what the server said
//! about one node (a device fault of that property) is kept apart from what
//! says the session or the connection is gone (a link failure: the SDK
//! reconnects with backoff).

use std::time::Duration;

use mapper_sdk::{DeviceFault, DriverError};
use opcua::types::{Error as UaError, StatusCode};

/// Status codes that mean the session, the secure channel or the connection
/// can no longer be used.
const LINK_LOST: &[StatusCode] = &[
    StatusCode::BadCommunicationError,
    StatusCode::BadConnectionClosed,
    StatusCode::BadConnectionRejected,
    StatusCode::BadDisconnect,
    StatusCode::BadNotConnected,
    StatusCode::BadServerNotConnected,
    StatusCode::BadServerHalted,
    StatusCode::BadShutdown,
    StatusCode::BadSessionIdInvalid,
    StatusCode::BadSessionClosed,
    StatusCode::BadSessionNotActivated,
    StatusCode::BadSecureChannelIdInvalid,
    StatusCode::BadSecureChannelClosed,
    StatusCode::BadSecureChannelTokenUnknown,
    StatusCode::BadTcpInternalError,
    StatusCode::BadTcpServerTooBusy,
    StatusCode::BadTcpMessageTooLarge,
    StatusCode::BadTcpMessageTypeInvalid,
    StatusCode::BadTcpSecureChannelUnknown,
    StatusCode::BadNoCommunication,
    StatusCode::BadTooManySessions,
    StatusCode::BadServerTooBusy,
    StatusCode::BadInvalidState,
];

/// Status codes that mean an answer could not be understood.
const GARBLED: &[StatusCode] = &[
    StatusCode::BadDecodingError,
    StatusCode::BadEncodingError,
    StatusCode::BadUnknownResponse,
    StatusCode::BadSecurityChecksFailed,
];

fn same_code(a: StatusCode, b: StatusCode) -> bool {
    a.sub_code() as u32 == b.sub_code() as u32
}

/// Whether `status` says the session or the link is gone.
pub fn is_link_status(status: StatusCode) -> bool {
    LINK_LOST
        .iter()
        .chain(GARBLED)
        .chain(&[StatusCode::BadTimeout, StatusCode::BadRequestTimeout])
        .any(|c| same_code(*c, status))
}

/// The name of a status code (`BadNodeIdUnknown`), without the flag bits.
pub fn status_name(status: StatusCode) -> String {
    status.sub_code().to_string()
}

/// A Bad status of one node or one operation: a fault of that property,
/// carrying the code and named (`BadNodeIdUnknown: The node id refers to a
/// node that does not exist in the server address space.`).
pub fn device_fault(status: StatusCode, context: &str) -> DriverError {
    let sub = status.sub_code();
    let message = if context.is_empty() {
        format!("{sub}:{}", sub.description())
    } else {
        format!("{context}: {sub}:{}", sub.description())
    };
    DriverError::Device(DeviceFault::with_code(status.bits(), message))
}

/// A failed service call as a driver error: link failures (the session,
/// channel or connection is gone, or the answer did not come in
/// `timeout`) are [`DriverError::Transport`], [`DriverError::Timeout`] or
/// [`DriverError::Protocol`]; anything else the server answered is a
/// [`DriverError::Device`] fault of every property in the call.
pub fn service_error(e: &UaError, timeout: Duration) -> DriverError {
    let status = e.status();
    if same_code(status, StatusCode::BadTimeout) || same_code(status, StatusCode::BadRequestTimeout)
    {
        return DriverError::Timeout(timeout);
    }
    if GARBLED.iter().any(|c| same_code(*c, status)) {
        return DriverError::Protocol(e.to_string());
    }
    if LINK_LOST.iter().any(|c| same_code(*c, status)) {
        return DriverError::transport(e.to_string());
    }
    device_fault(status, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classes() {
        assert_eq!(
            status_name(StatusCode::BadNodeIdUnknown),
            "BadNodeIdUnknown"
        );
        let e = device_fault(StatusCode::BadNodeIdUnknown, "ns=2;s=X").to_string();
        assert!(e.contains("ns=2;s=X: BadNodeIdUnknown"), "{e}");
        assert!(matches!(
            service_error(
                &UaError::new(StatusCode::BadSessionIdInvalid, "x"),
                Duration::ZERO
            ),
            DriverError::Transport(_)
        ));
        assert!(matches!(
            service_error(&UaError::new(StatusCode::BadTimeout, "x"), Duration::ZERO),
            DriverError::Timeout(_)
        ));
        assert!(matches!(
            service_error(
                &UaError::new(StatusCode::BadDecodingError, "x"),
                Duration::ZERO
            ),
            DriverError::Protocol(_)
        ));
        let d = service_error(
            &UaError::new(StatusCode::BadTooManyOperations, "x"),
            Duration::ZERO,
        );
        assert!(matches!(d, DriverError::Device(_)), "{d}");
        assert!(is_link_status(StatusCode::BadConnectionClosed));
        assert!(!is_link_status(StatusCode::BadNodeIdUnknown));
    }
}
