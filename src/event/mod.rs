//! The event: one logical log line, and its JSON form — the payload of every sink.
//!
//! An [`Event`] borrows its message from whoever produced it (the read buffer, in
//! pieces for a rejoined line, or the reassembly buffer that joined one), so producing
//! one costs no allocation.
//! [`encode::EventEncoder`] turns it into the stable wire format documented in the
//! README: one JSON object per line.

pub mod encode;
pub mod message;
pub mod time;

pub use encode::{EventEncoder, KubeMeta, MessageFormat};
pub use message::Message;
pub use time::Nanos;

/// Which output stream of the container wrote the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// `stdout`/`stderr` as the runtimes write them.
    pub fn from_bytes(b: &[u8]) -> Option<Stream> {
        match b {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One logical log line, after reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// `message` is already in the event's JSON escaping (the body of a JSON string as
    /// [`encode::write_json_string`] writes it: valid UTF-8, `"`, `\` and controls
    /// escaped): a Docker `log` value passed through without unescaping. Whoever
    /// looks inside takes [`Event::text`].
    pub escaped: bool,
    /// When the runtime wrote the line (its first fragment for a rejoined line), or
    /// when logferry read it if the line carried no usable time.
    pub time: Nanos,
    pub stream: Stream,
    /// The line without its trailing newline, possibly in pieces ([`Message`]). Raw
    /// bytes: usually UTF-8, but a raw (malformed) line may be anything; the encoder
    /// repairs it.
    pub message: Message<'a>,
    /// The message was cut at `max_message_bytes`.
    pub truncated: bool,
    /// The input ended inside a split line; this is what had arrived.
    pub partial: bool,
    /// Lines grouped into it by a multiline rule (a stack trace): 1 for a lone line.
    pub lines: u32,
}

impl<'a> Event<'a> {
    /// A lone line's event with raw (not escaped) bytes, flags clear.
    pub fn raw(time: Nanos, stream: Stream, message: &'a [u8]) -> Self {
        Event { time, stream, message: Message::Whole(message), escaped: false, truncated: false, partial: false, lines: 1 }
    }

    /// The message as the application wrote it, in one slice: `message` itself, or
    /// joined or unescaped into `scratch` (cleared first) when it is in pieces, or
    /// [`Event::escaped`] and holds an escape.
    pub fn text<'s>(&'s self, scratch: &'s mut Vec<u8>) -> &'s [u8] {
        let has_escape = |b: &[u8]| memchr::memchr(b'\\', b).is_some();
        if !self.escaped || !self.message.pieces().any(has_escape) {
            return self.message.join(scratch);
        }
        scratch.clear();
        // Each piece is a whole escaped value (no escape spans two): unescaped in turn.
        if self.message.pieces().any(|p| crate::decode::docker::unescape(p, scratch).is_err()) {
            // Not what the pass-through writes; shown as it is rather than lost.
            self.message.join(scratch);
        }
        scratch
    }
}
