//! btleplug errors → [`DriverError`]: BlueZ refusing a request (not
//! permitted, not supported, a wrong value length) is the device's answer;
//! everything else (not connected, D-Bus gone, no reply) is the link.

use mapper_sdk::{DeviceFault, DriverError};

/// D-Bus error names with which BlueZ (or the peripheral through it) refuses
/// a request; retrying or reconnecting will not change the answer.
const REFUSALS: &[&str] = &[
    "org.bluez.Error.NotPermitted",
    "org.bluez.Error.NotAuthorized",
    "org.bluez.Error.NotSupported",
    "org.bluez.Error.InvalidValueLength",
    "org.bluez.Error.InvalidOffset",
    "org.bluez.Error.InvalidArguments",
];

/// The D-Bus error name and message inside a btleplug error, when BlueZ sent one.
#[cfg(target_os = "linux")]
fn dbus_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<(String, String)> {
    match e.downcast_ref::<bluez_async::BluetoothError>()? {
        bluez_async::BluetoothError::DbusError(d) => Some((
            d.name().unwrap_or_default().to_owned(),
            d.message().unwrap_or_default().to_owned(),
        )),
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn dbus_error(_: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<(String, String)> {
    None
}

/// Classifies a btleplug error (module docs).
pub fn link_error(e: btleplug::Error) -> DriverError {
    use btleplug::Error as E;
    match e {
        E::TimedOut(d) => DriverError::Timeout(d),
        E::PermissionDenied => DriverError::Device(DeviceFault::new("permission denied")),
        E::NotSupported(what) => {
            DriverError::Device(DeviceFault::new(format!("not supported: {what}")))
        }
        E::NoSuchCharacteristic | E::UnexpectedCharacteristic => {
            DriverError::Device(DeviceFault::new(e.to_string()))
        }
        E::Other(inner) => match dbus_error(inner.as_ref()) {
            Some((name, message)) if REFUSALS.contains(&name.as_str()) => {
                DriverError::Device(DeviceFault::new(format!("{name}: {message}")))
            }
            Some((name, message)) => DriverError::transport(format!("{name}: {message}")),
            None => DriverError::transport(inner.to_string()),
        },
        other => DriverError::transport(other.to_string()),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_device_faults_and_the_rest_link_failures() {
        let refused = bluez_async::BluetoothError::DbusError(dbus::Error::new_custom(
            "org.bluez.Error.NotPermitted",
            "Write not permitted",
        ));
        let e = link_error(btleplug::Error::Other(Box::new(refused)));
        assert!(matches!(e, DriverError::Device(_)), "{e:?}");
        assert!(e.to_string().contains("Write not permitted"), "{e}");
        let gone = bluez_async::BluetoothError::DbusError(dbus::Error::new_custom(
            "org.freedesktop.DBus.Error.NoReply",
            "no reply",
        ));
        let e = link_error(btleplug::Error::Other(Box::new(gone)));
        assert!(e.is_link_failure(), "{e:?}");
        assert!(link_error(btleplug::Error::NotConnected).is_link_failure());
        assert!(matches!(
            link_error(btleplug::Error::TimedOut(std::time::Duration::from_secs(1))),
            DriverError::Timeout(_)
        ));
        assert!(matches!(
            link_error(btleplug::Error::PermissionDenied),
            DriverError::Device(_)
        ));
    }
}
