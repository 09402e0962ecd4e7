//! The wire format: requests as bytes, answers as values or errors. Pure
//! functions, no I/O, so every rule has a unit test below.
//!
//! One request and one answer per line (`\n`-terminated UTF-8):
//!
//! * `READ <register>` is answered with the value's text;
//! * `WRITE <register> <value>` with `OK`;
{%- if push %}
//! * `SUBSCRIBE <register>...` with `OK`, after which the device sends
//!   `<register> <value>` lines on that connection: every register's value at
//!   once, then again whenever it changes;
{%- endif %}
//! * a refused request with `ERR <reason>`.
//!
//! Replace this module with your device's protocol. Keep the error
//! classification: the SDK's behaviour depends on it (see
//! [`DriverError`]). If a maintained crate speaks your protocol, use it here
//! instead of writing a codec.

use mapper_sdk::{DeviceFault, DriverError, DriverResult, PropertyType, Value, parse_value};

/// Longest register name, bytes.
pub const MAX_REGISTER_LEN: usize = 64;

/// Longest line accepted from the device, bytes (a longer one is a protocol
/// error, never an unbounded buffer).
pub const MAX_LINE: usize = 1024;

/// Checks a register name.
///
/// # Errors
/// [`DriverError::Config`] naming what is wrong: the property cannot work as
/// configured, so the SDK skips it and reports this error in its twin.
pub fn check_register(register: &str) -> DriverResult<()> {
    if register.is_empty() {
        return Err(DriverError::Config("register is empty".into()));
    }
    if register.len() > MAX_REGISTER_LEN {
        return Err(DriverError::Config(format!(
            "register `{register}` is longer than {MAX_REGISTER_LEN} bytes"
        )));
    }
    if let Some(c) = register
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(DriverError::Config(format!(
            "register `{}` has the character {c:?}; use ASCII letters, digits, `_`, `-` or `.`",
            register.escape_default()
        )));
    }
    Ok(())
}

/// `READ <register>\n`.
pub fn read_request(register: &str) -> Vec<u8> {
    format!("READ {register}\n").into_bytes()
}

/// `WRITE <register> <value>\n`.
///
/// # Errors
/// [`DriverError::Value`] when the value has no one-line text form (empty,
/// or with control characters): this value cannot be written, retrying will
/// not help.
pub fn write_request(register: &str, value: &Value) -> DriverResult<Vec<u8>> {
    let text = value.to_string();
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err(DriverError::Value(format!(
            "`{}` cannot be sent: the value must be one line of text",
            text.escape_default()
        )));
    }
    Ok(format!("WRITE {register} {text}\n").into_bytes())
}
{%- if push %}

/// `SUBSCRIBE <register> <register>...\n`.
pub fn subscribe_request(registers: &[&str]) -> Vec<u8> {
    format!("SUBSCRIBE {}\n", registers.join(" ")).into_bytes()
}

/// Splits a pushed line, `<register> <value>`.
///
/// # Errors
/// [`DriverError::Protocol`] for a line without both parts.
pub fn decode_notification(line: &str) -> DriverResult<(&str, &str)> {
    match line.split_once(' ') {
        Some((register, text)) if !register.is_empty() && !text.is_empty() => {
            Ok((register, text))
        }
        _ => Err(DriverError::Protocol(format!(
            "expected `<register> <value>`, got `{}`",
            line.escape_default()
        ))),
    }
}
{%- endif %}

/// A refusal, `ERR <reason>`, as the device fault it is.
fn refusal(line: &str) -> Option<DriverError> {
    let reason = line.strip_prefix("ERR")?;
    let reason = reason.trim();
    Some(DriverError::Device(DeviceFault::new(if reason.is_empty() {
        "refused without a reason"
    } else {
        reason
    })))
}

/// Decodes the answer to `READ` as the model's type (`None`: as text).
///
/// # Errors
/// * [`DriverError::Device`] for `ERR <reason>`: the device answered and
///   refused; that property's error, the device stays connected.
/// * [`DriverError::Value`] when the text is not a value of the model's type
///   (`abc` for an INT): that property's error.
/// * [`DriverError::Protocol`] for an empty line: the link cannot be trusted,
///   the SDK reconnects.
pub fn decode_value(
    register: &str,
    line: &str,
    model_type: Option<PropertyType>,
) -> DriverResult<Value> {
    if let Some(e) = refusal(line) {
        return Err(e);
    }
    if line.is_empty() {
        return Err(DriverError::Protocol(format!(
            "empty answer to READ {register}"
        )));
    }
    parse_value(model_type.unwrap_or(PropertyType::String), line)
        .map_err(|e| DriverError::Value(format!("register {register}: {e}")))
}

/// Decodes the answer to `WRITE`{% if push %} or `SUBSCRIBE`{% endif %}.
///
/// # Errors
/// [`DriverError::Device`] for `ERR <reason>` (read-only register, value out
/// of the device's range); [`DriverError::Protocol`] for anything but `OK`.
pub fn decode_ok(line: &str) -> DriverResult<()> {
    if let Some(e) = refusal(line) {
        return Err(e);
    }
    if line == "OK" {
        Ok(())
    } else {
        Err(DriverError::Protocol(format!(
            "expected OK, got `{}`",
            line.escape_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_are_checked() {
        for good in ["temperature", "r1", "a.b-c_d", &"x".repeat(MAX_REGISTER_LEN)] {
            check_register(good).unwrap();
        }
        for bad in ["", "two words", "new\nline", "é", &"x".repeat(MAX_REGISTER_LEN + 1)] {
            assert!(
                matches!(check_register(bad), Err(DriverError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn requests_are_one_line() {
        assert_eq!(read_request("t"), b"READ t\n");
        assert_eq!(
            write_request("sp", &Value::Float(21.5)).unwrap(),
            b"WRITE sp 21.5\n"
        );
        assert_eq!(
            write_request("on", &Value::Bool(true)).unwrap(),
            b"WRITE on true\n"
        );
        for bad in [Value::String(String::new()), Value::String("a\nb".into())] {
            assert!(matches!(
                write_request("s", &bad),
                Err(DriverError::Value(_))
            ));
        }
    }

    #[test]
    fn values_are_decoded_as_the_model_type() {
        let v = |line, ty| decode_value("r", line, ty);
        assert_eq!(v("21.5", Some(PropertyType::Float)).unwrap(), Value::Float(21.5));
        assert_eq!(v("7", Some(PropertyType::Int)).unwrap(), Value::Int(7));
        assert_eq!(v("on", Some(PropertyType::Boolean)).unwrap(), Value::Bool(true));
        assert_eq!(v("abc", None).unwrap(), Value::String("abc".into()));
        assert!(matches!(v("abc", Some(PropertyType::Int)), Err(DriverError::Value(_))));
        assert!(matches!(v("", None), Err(DriverError::Protocol(_))));
    }

    #[test]
    fn refusals_are_device_faults_not_link_failures() {
        for line in ["ERR no such register", "ERR"] {
            let e = decode_value("r", line, None).unwrap_err();
            assert!(matches!(e, DriverError::Device(_)), "{e}");
            assert!(!e.is_link_failure());
            assert!(matches!(decode_ok(line), Err(DriverError::Device(_))));
        }
        decode_ok("OK").unwrap();
        let e = decode_ok("maybe").unwrap_err();
        assert!(e.is_link_failure(), "{e}");
    }
{%- if push %}

    #[test]
    fn notifications_and_subscriptions() {
        assert_eq!(subscribe_request(&["a", "b"]), b"SUBSCRIBE a b\n");
        assert_eq!(decode_notification("t 21.5").unwrap(), ("t", "21.5"));
        assert_eq!(decode_notification("s two words").unwrap(), ("s", "two words"));
        for bad in ["", "t", "t ", " 1"] {
            assert!(
                matches!(decode_notification(bad), Err(DriverError::Protocol(_))),
                "{bad:?}"
            );
        }
    }
{%- endif %}
}
