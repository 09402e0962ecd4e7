//! Limits that keep untrusted YAML cheap to parse.
//!
//! The YAML scanner underneath `yaml_serde` is super-linear in flow nesting
//! depth (100 000 nested `[` take minutes) and only reports its recursion limit
//! after scanning everything; aliases can expand a small document into billions
//! of nodes. So before a document reaches the parser, [`check_depth`] measures
//! its nesting with a linear pre-scan, and [`check_expansion`] walks it once
//! with a node budget when it may contain aliases.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

/// The largest device definition file read, in bytes (4 MiB). Larger files
/// are reported and not read; their last good objects are kept.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

/// The deepest nesting of block and flow collections a document may have
/// (levels). KubeEdge objects need about ten.
pub const MAX_DEPTH: usize = 64;

/// Nodes a document may expand to through aliases, at least: the budget is
/// this or the document's length in bytes, whichever is larger, so a document
/// without aliases (at most one node per byte) never hits it.
pub const MIN_NODE_BUDGET: usize = 100_000;

/// Where a document nests deeper than allowed (1-based, in the document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    /// Line of the first node past the limit.
    pub(crate) line: usize,
    /// Column of that node.
    pub(crate) column: usize,
}

/// What the pre-scan knows about the line it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    Single,
    Double,
}

/// Checks that `doc` nests at most `max` levels deep, counting block levels
/// (distinct indentations and `- ` entries) plus open flow collections
/// (`[`, `{`). Linear in the length of `doc`; it skips comments, quoted
/// scalars and block scalars (`|`, `>`). It is an estimate that errs on the
/// side of counting a level too many only for unbalanced brackets at the
/// start of a value, which YAML itself rejects.
pub(crate) fn check_depth(doc: &str, max: usize) -> Result<(), TooDeep> {
    // Columns of the open block nodes (flow context ignores indentation).
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<Quote> = None;
    // Indentation of the line that opened the block scalar being skipped.
    let mut block_scalar: Option<usize> = None;
    for (i, line) in doc.lines().enumerate() {
        let line_no = i + 1;
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|&&b| b == b' ').count();
        let blank = bytes[indent..].iter().all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let too_deep = |column: usize| TooDeep {
            line: line_no,
            column: column + 1,
        };
        let mut pos = 0;
        // Whether the next token starts a node (where `[`, `{`, quotes and
        // block scalar indicators have their special meaning).
        let mut node_start = true;
        if quote.is_none() && flow == 0 {
            if blank || bytes[indent] == b'#' {
                continue;
            }
            while indents.last().is_some_and(|&c| c > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            pos = indent;
            // `- `, `? ` and `: ` at the start of a line open one more level each.
            while pos < bytes.len()
                && matches!(bytes[pos], b'-' | b'?' | b':')
                && bytes.get(pos + 1).is_none_or(|b| *b == b' ' || *b == b'\t')
            {
                pos += 1;
                while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
                    pos += 1;
                }
                if pos < bytes.len() && indents.last().is_none_or(|&c| c < pos) {
                    indents.push(pos);
                }
            }
            if indents.len() > max {
                return Err(too_deep(pos.min(bytes.len().saturating_sub(1))));
            }
        }
        while pos < bytes.len() {
            let b = bytes[pos];
            if let Some(q) = quote {
                match (q, b) {
                    (Quote::Double, b'\\') => pos += 1,
                    (Quote::Double, b'"') => quote = None,
                    (Quote::Single, b'\'') if bytes.get(pos + 1) == Some(&b'\'') => pos += 1,
                    (Quote::Single, b'\'') => quote = None,
                    _ => {}
                }
                pos += 1;
                if quote.is_none() {
                    node_start = false;
                }
                continue;
            }
            match b {
                b' ' | b'\t' => {}
                b'#' if pos == 0 || matches!(bytes[pos - 1], b' ' | b'\t') => break,
                b'"' if node_start => quote = Some(Quote::Double),
                b'\'' if node_start => quote = Some(Quote::Single),
                b'[' | b'{' if node_start || flow > 0 => {
                    flow += 1;
                    if indents.len() + flow > max {
                        return Err(too_deep(pos));
                    }
                    node_start = true;
                }
                b']' | b'}' if flow > 0 => {
                    flow -= 1;
                    node_start = false;
                }
                b',' if flow > 0 => node_start = true,
                b':' | b'?' | b'-'
                    if bytes
                        .get(pos + 1)
                        .is_none_or(|c| matches!(c, b' ' | b'\t' | b',' | b']' | b'}')) =>
                {
                    node_start = true;
                }
                b'|' | b'>' if node_start && flow == 0 => {
                    block_scalar = Some(indent);
                    break;
                }
                // An anchor or a tag comes before the node it names.
                b'&' | b'!' if node_start => {
                    while pos < bytes.len() && !matches!(bytes[pos], b' ' | b'\t') {
                        pos += 1;
                    }
                    continue;
                }
                _ => node_start = false,
            }
            pos += 1;
        }
    }
    Ok(())
}

/// Checks that deserializing `doc` visits at most `budget` nodes, aliases
/// expanded. Stops at the first node past the budget, so the cost is bounded
/// by the budget, not by what the aliases would expand to.
pub(crate) fn check_expansion(doc: &str, budget: usize) -> Result<(), yaml_serde::Error> {
    let left = std::cell::Cell::new(budget);
    Budget { left: &left }.deserialize(yaml_serde::Deserializer::from_str(doc))
}

/// A seed that counts every node it visits against a shared budget.
#[derive(Clone, Copy)]
struct Budget<'a> {
    left: &'a std::cell::Cell<usize>,
}

impl Budget<'_> {
    fn take<E: de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => Err(E::custom(
                "the document expands to too many nodes (YAML aliases); it is not parsed",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.take()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.take()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.take()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.take()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.take()?;
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.take()?;
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`): the tag, then the value.
        use serde::de::VariantAccess;
        self.take()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(doc: &str) -> Option<(usize, usize)> {
        check_depth(doc, MAX_DEPTH)
            .err()
            .map(|e| (e.line, e.column))
    }

    #[test]
    fn ordinary_documents_pass() {
        let doc = "apiVersion: devices.kubeedge.io/v1beta1
kind: Device # a comment with [[[[ brackets
metadata:
  name: 'it''s [not a list'
  labels: {a: b, c: [1, 2, {d: e}]}
spec:
  description: range [0, 100) of \"x\" [
  script: |
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
    - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
  properties:
    - name: p
      visitors:
        configData: &cfg
          register: HoldingRegister
    - name: q
      visitors:
        configData: *cfg
      multi: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"
";
        assert_eq!(depth_error(doc), None);
        // Unbalanced brackets inside plain text never accumulate.
        assert_eq!(depth_error(&"note: a [b\n".repeat(200)), None);
        assert_eq!(depth_error(&"- x: [1, [2]]\n".repeat(200)), None);
    }

    #[test]
    fn deep_flow_nesting_is_refused_with_its_position() {
        let doc = format!("a: 1\nb: {}", "[".repeat(100_000));
        // `b` is level 1, the 64th `[` makes 65.
        assert_eq!(depth_error(&doc), Some((2, 4 + 63)));
        assert_eq!(depth_error(&"[".repeat(64)), Some((1, 64)));
        assert_eq!(depth_error(&"[".repeat(63)), None);
        // Across lines and inside mappings.
        assert!(depth_error(&"{a:\n".repeat(100)).is_some());
    }

    #[test]
    fn deep_block_nesting_is_refused() {
        let mut doc = String::new();
        for i in 0..100 {
            doc.push_str(&" ".repeat(i));
            doc.push_str("k:\n");
        }
        assert_eq!(depth_error(&doc), Some((65, 65)));
        let dashes = format!("{}x\n", "- ".repeat(100));
        assert_eq!(depth_error(&dashes).map(|(l, _)| l), Some(1));
        assert_eq!(depth_error(&format!("{}x\n", "- ".repeat(60))), None);
    }

    #[test]
    fn expansion_budget_stops_alias_bombs() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            doc.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            ));
        }
        let started = std::time::Instant::now();
        // The parser's own repetition limit or the budget, whichever comes first.
        assert!(check_expansion(&doc, MIN_NODE_BUDGET).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // One big anchor used many times: only the budget stops it.
        let wide = format!(
            "a: &a [{}]\nb: [{}]\n",
            ["x"].repeat(20_000).join(","),
            ["*a"].repeat(20_000).join(",")
        );
        let started = std::time::Instant::now();
        let e = check_expansion(&wide, MIN_NODE_BUDGET.max(wide.len())).unwrap_err();
        assert!(e.to_string().contains("too many nodes"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A few aliases are fine.
        check_expansion("a: &a {x: 1}\nb: *a\nc: !tag [*a, *a]\n", 100).unwrap();
        assert!(check_expansion("a: &a {x: 1}\nb: *a\nc: [*a, *a]\n", 10).is_err());
    }
}
