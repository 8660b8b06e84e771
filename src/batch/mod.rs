//! Batch: request shaping for the AWS sinks, with AWS's limits as typed constants.
//!
//! Owns packing events into Firehose records and records into requests
//! ([`firehose`]), turning events into CloudWatch Logs batches per log stream
//! ([`cloudwatch`]), and the S3 sink's object keys ([`s3`]); the name templates the
//! last two share. Never does I/O.

pub mod cloudwatch;
pub mod firehose;
pub mod s3;

/// The `kubernetes` object of our event format, read back (names for templates).
#[derive(serde::Deserialize, Default)]
pub(crate) struct Kube<'a> {
    #[serde(default, borrow)]
    pub namespace: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub pod: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub pod_uid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    pub container: Option<std::borrow::Cow<'a, str>>,
}

/// The non-empty lines of JSON lines, without their newlines (found with `memchr`).
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len())).filter_map(move |end| {
        let line = &data[start.min(end)..end];
        start = end + 1;
        (!line.is_empty()).then_some(line)
    })
}

/// One piece of a name template: literal text, or the index of a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplatePart {
    Text(String),
    Field(usize),
}

/// Parses a template of literal text and `{placeholder}`s, each one of `placeholders`;
/// an unknown placeholder or an unclosed `{` is an error saying so.
pub(crate) fn parse_template(text: &str, placeholders: &[&str]) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_string()));
        }
        let close = rest[open..].find('}').ok_or_else(|| format!("{text:?} has a '{{' without its '}}'"))? + open;
        let name = &rest[open + 1..close];
        let field = placeholders
            .iter()
            .position(|p| *p == name)
            .ok_or_else(|| format!("{{{name}}} is not a placeholder (use {})", placeholders.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")))?;
        parts.push(TemplatePart::Field(field));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_string()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_the_non_empty_pieces_between_newlines() {
        let got: Vec<&[u8]> = super::lines(b"a\nbc\n\nd").collect();
        assert_eq!(got, [&b"a"[..], b"bc", b"d"]);
        assert_eq!(super::lines(b"x\n").collect::<Vec<_>>(), [&b"x"[..]]);
        assert_eq!(super::lines(b"").count(), 0);
        assert_eq!(super::lines(b"\n\n").count(), 0);
    }
}
