//! Value rules stock EdgeCore enforces on reports (spec §2.4, §2.5). Both sides of
//! this project use these: mappers to stay inside them, edgecore-dmi to check them.

/// Longest twin value stock EdgeCore accepts.
pub const TWIN_VALUE_MAX: usize = 512;
/// Longest twin property name stock EdgeCore accepts.
pub const TWIN_NAME_MAX: usize = 128;
/// Device states stock EdgeCore accepts (after lowercasing); others are dropped.
pub const ALLOWED_STATES: [&str; 5] = ["online", "offline", "ok", "unknown", "unhealthy"];

/// True for the characters allowed in twin names and values: `[a-zA-Z0-9-_.,:/@#]`.
pub fn is_twin_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ',' | ':' | '/' | '@' | '#')
}

/// True when `s` is an acceptable twin value (empty, or up to 512 allowed characters).
pub fn is_valid_twin_value(s: &str) -> bool {
    s.len() <= TWIN_VALUE_MAX && s.chars().all(is_twin_char)
}

/// True when `s` is an acceptable twin property name (1–128 allowed characters).
pub fn is_valid_twin_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= TWIN_NAME_MAX && s.chars().all(is_twin_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset() {
        assert!(is_valid_twin_value("-12.5"));
        assert!(is_valid_twin_value("2024-01-01T00:00:00"));
        assert!(is_valid_twin_value(""));
        assert!(!is_valid_twin_value("a b"));
        assert!(!is_valid_twin_value("{\"a\":1}"));
        assert!(!is_valid_twin_value("1e+5"));
        assert!(!is_valid_twin_value(&"9".repeat(513)));
        assert!(!is_valid_twin_name(""));
        assert!(is_valid_twin_name("temp_1"));
    }
}

/// Whether a reported twin value and a desired value say the same thing: equal
/// text, equal numbers (`21.70` and `21.7`, `5` and `5.0`), or equal booleans
/// (`true`/`TRUE`/`True`, as Go's `strconv.ParseBool` reads them, and `1`/`0`
/// against `true`/`false`).
///
/// Mappers generated from KubeEdge's mapper-framework send no metadata saying
/// whether a desired value was applied; a reported value equal to the desired
/// one is how their twins show it.
pub fn same_twin_value(reported: &str, desired: &str) -> bool {
    let (r, d) = (reported.trim(), desired.trim());
    if r == d {
        return true;
    }
    if let (Ok(a), Ok(b)) = (r.parse::<f64>(), d.parse::<f64>()) {
        return a == b;
    }
    let truth = |s: &str| match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    };
    matches!((truth(r), truth(d)), (Some(a), Some(b)) if a == b)
}

#[cfg(test)]
mod same_value_tests {
    use super::same_twin_value;

    #[test]
    fn numbers_booleans_and_text() {
        assert!(same_twin_value("21.7", "21.7"));
        assert!(same_twin_value("21.70", "21.7"));
        assert!(same_twin_value("5", "5.0"));
        assert!(same_twin_value("true", "TRUE"));
        assert!(same_twin_value("1", "true"));
        assert!(same_twin_value("on", "on"));
        assert!(!same_twin_value("21.700000000000003", "21.7"));
        assert!(!same_twin_value("on", "true"));
        assert!(!same_twin_value("", "0"));
        assert!(!same_twin_value("1", "2"));
    }
}
