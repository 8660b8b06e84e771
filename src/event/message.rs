//! An event's message: one slice, or the pieces of a split line where they were read.
//!
//! A message the runtime split into 16 KiB pieces used to be joined into a buffer of
//! its own, then copied again into the event's JSON: for the large messages that hold
//! most of a node's bytes, two copies where the output needs one. A message can now
//! stay in pieces in the reader's buffer (see `decode::reassemble`), each piece where
//! its line was read, and [`Message::Pieces`] names them: the encoder writes them one
//! after the other, and only a consumer that must look inside the message (a multiline
//! rule, a route's filter, the JSON message format) joins them, into space it keeps.
//!
//! Never build a `Pieces` whose pieces are not all inside `window`: the accessors
//! index it and would panic.

/// Where a message's bytes are.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// All in one slice.
    Whole(&'a [u8]),
    /// In pieces, in order: each `(at, len)` is a stream offset and a length within
    /// `window` (whose first byte is at stream offset `offset`), or, with [`OWN`] set
    /// in `at`, an offset and a length within `own` (a piece that had to be copied,
    /// such as a value rewritten while decoding it).
    Pieces { window: &'a [u8], offset: u64, own: &'a [u8], pieces: &'a [(u64, u32)] },
}

/// The flag of a piece in [`Message::Pieces`]'s `own` bytes.
pub const OWN: u64 = 1 << 63;

impl<'a> From<&'a [u8]> for Message<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Message::Whole(bytes)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Message<'a> {
    fn from(bytes: &'a [u8; N]) -> Self {
        Message::Whole(bytes)
    }
}

impl<'a> Message<'a> {
    /// The message's bytes in order: one slice, or each piece.
    pub fn pieces(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let empty: &'a [(u64, u32)] = &[];
        let (whole, window, offset, own, pieces) = match *self {
            Message::Whole(b) => (Some(b), &b[..0], 0, &b[..0], empty),
            Message::Pieces { window, offset, own, pieces } => (None, window, offset, own, pieces),
        };
        whole.into_iter().chain(pieces.iter().map(move |&(at, len)| piece(window, offset, own, at, len)))
    }

    /// The bytes when they are in one slice.
    pub fn whole(&self) -> Option<&'a [u8]> {
        match *self {
            Message::Whole(b) => Some(b),
            Message::Pieces { .. } => None,
        }
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        match *self {
            Message::Whole(b) => b.len(),
            Message::Pieces { pieces, .. } => pieces.iter().map(|&(_, len)| len as usize).sum(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message in one slice: itself, or its pieces joined into `scratch` (cleared
    /// first).
    pub fn join<'s>(&self, scratch: &'s mut Vec<u8>) -> &'s [u8]
    where
        'a: 's,
    {
        if let Some(b) = self.whole() {
            return b;
        }
        scratch.clear();
        scratch.reserve(self.len());
        for p in self.pieces() {
            scratch.extend_from_slice(p);
        }
        scratch
    }

    /// The message's bytes in a fresh vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.join(&mut v).to_vec()
    }

    /// Where the first byte is (for tests that check what a message borrows).
    #[cfg(test)]
    pub fn as_ptr(&self) -> *const u8 {
        self.pieces().next().unwrap_or_default().as_ptr()
    }
}

fn piece<'a>(window: &'a [u8], offset: u64, own: &'a [u8], at: u64, len: u32) -> &'a [u8] {
    let (bytes, from) = if at & OWN == 0 { (window, at - offset) } else { (own, at & !OWN) };
    &bytes[from as usize..from as usize + len as usize]
}

/// Equal when the bytes are, however they are cut.
impl PartialEq for Message<'_> {
    fn eq(&self, other: &Self) -> bool {
        if self.len() != other.len() {
            return false;
        }
        let (mut a, mut b) = (self.pieces(), other.pieces());
        let (mut x, mut y): (&[u8], &[u8]) = (&[], &[]);
        loop {
            while x.is_empty() {
                match a.next() {
                    Some(p) => x = p,
                    None => return true, // same length: both are done
                }
            }
            while y.is_empty() {
                match b.next() {
                    Some(p) => y = p,
                    None => return false,
                }
            }
            let n = x.len().min(y.len());
            if x[..n] != y[..n] {
                return false;
            }
            (x, y) = (&x[n..], &y[n..]);
        }
    }
}

impl Eq for Message<'_> {}

impl PartialEq<&[u8]> for Message<'_> {
    fn eq(&self, other: &&[u8]) -> bool {
        *self == Message::Whole(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut<'a>(window: &'a [u8], pieces: &'a [(u64, u32)]) -> Message<'a> {
        Message::Pieces { window, offset: 100, own: b"OWNxy", pieces }
    }

    #[test]
    fn pieces_read_from_the_window_by_stream_offset_or_from_their_own_bytes() {
        let window = b"P:abc|P:de|F:fgh";
        let pieces = [(102, 3), (108, 2), (OWN | 3, 2), (113, 3)];
        let m = cut(window, &pieces);
        assert_eq!(m.pieces().collect::<Vec<_>>(), [&b"abc"[..], b"de", b"xy", b"fgh"]);
        assert_eq!(m.len(), 10);
        assert_eq!(m.to_vec(), b"abcdexyfgh");
        let mut scratch = b"old".to_vec();
        assert_eq!(m.join(&mut scratch), b"abcdexyfgh");
        assert_eq!(m.whole(), None);
    }

    #[test]
    fn a_whole_message_joins_without_copying() {
        let bytes = b"one piece";
        let m = Message::from(bytes);
        let mut scratch = Vec::new();
        assert_eq!(m.join(&mut scratch).as_ptr(), bytes.as_ptr());
        assert!(scratch.is_empty());
    }

    #[test]
    fn equal_bytes_are_equal_however_cut() {
        let window = b"xxabcdefgh";
        let a = [(102, 3), (105, 5)];
        let b = [(102, 1), (103, 0), (103, 7)];
        assert_eq!(cut(window, &a), cut(window, &b));
        assert_eq!(cut(window, &a), Message::from(b"abcdefgh"));
        assert_ne!(cut(window, &a), Message::from(b"abcdefgX"));
        assert_ne!(cut(window, &a), Message::from(b"abcdefg"));
        assert_eq!(Message::from(b""), cut(window, &[]));
    }
}
