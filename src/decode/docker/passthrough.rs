//! Docker's `log` value passed through: escaped in the file, escaped in the event.
//!
//! A json-file `log` value is a JSON string Docker escaped; the event's `message` is a
//! JSON string the encoder escapes ([`crate::event::encode`]). The two agree on almost
//! every byte — plain text, `\"`, `\\`, `\n`, `\t`, multi-byte characters — so rather
//! than unescape the value and escape it again, it is checked and kept as it is, and
//! only what the two write differently is rewritten: Go's `\u003c`, `\u003e`,
//! `\u0026`, `\u2028`, `\u2029` and any other `\u` escape of a character the encoder
//! writes raw, `\u0008` and `\u000c` (the encoder writes `\b`, `\f`), an upper-case
//! `\u001B`, `\/`, and a raw control character (escaped). The result is byte for byte
//! what escaping the unescaped value gives; a value needing no rewrite stays in the
//! line, uncopied.
//!
//! Raw bytes beyond ASCII are checked as UTF-8 once per line, from the first of them
//! to the line's end. A line that is not valid UTF-8 (Docker never writes one) is not
//! passed through: its value is unescaped as before and the encoder repairs the whole
//! message, so a character cut between two corrupt pieces still comes out whole.

use super::{unicode_escape, Malformed, HEX_DIGITS};
use crate::event::encode::ESCAPES;

/// Where the passed-through `log` value lives, without its final `\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Passed {
    /// In the line, from the value's start to `end`: it needed no rewrite.
    Borrowed { end: usize, newline: bool },
    /// Rewritten into the scratch buffer, after what it held.
    Scratch { newline: bool },
    /// The line is not valid UTF-8: the value must be unescaped instead.
    NotUtf8,
}

/// Passes through the JSON string whose content starts at `s[start]` (just after its
/// opening quote). Returns how, and where its closing quote is (not for `NotUtf8`).
///
/// 64 bytes at a time: a block whose escapes are all ones the encoder writes alike and
/// that holds no closing quote, control character or (until checked) byte beyond
/// ASCII is passed over whole — which escapes a backslash starts is found for the
/// whole block at once ([`escaped_bits`]), so the `\"`-dense values of JSON logs cost
/// no more than plain text. Anything else is handled where it is, in order, on the
/// same masks (Go's `\u003c`-dense HTML and JSON-in-JSON cost no block scan per
/// escape); the scan goes on after the block, or after an escape that ends past it.
pub(super) fn pass_through(s: &[u8], start: usize, scratch: &mut Vec<u8>) -> Result<(Passed, usize), Malformed> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available, as just checked.
        return unsafe { pass_through_avx2(s, start, scratch) };
    }
    scan(s, start, scratch, Block::of_sse2, plain_sse2)
}

/// [`pass_through`] compiled for AVX2, so that the block masks inline into the scan.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pass_through_avx2(s: &[u8], start: usize, scratch: &mut Vec<u8>) -> Result<(Passed, usize), Malformed> {
    // SAFETY: AVX2 is available (the caller's promise).
    scan(s, start, scratch, |bytes, utf8_checked| unsafe { Block::of_avx2(bytes, utf8_checked) }, |bytes, utf8_checked| unsafe {
        plain_avx2(bytes, utf8_checked)
    })
}

/// [`pass_through`]'s scan, with `masks` finding a [`Block`]'s masks and `plain`
/// telling a block that needs none (no `"`, `\\`, control character or, until
/// checked, byte beyond ASCII: a third of the blocks of the replay mix).
#[inline(always)]
fn scan(
    s: &[u8],
    start: usize,
    scratch: &mut Vec<u8>,
    masks: impl Fn(&[u8; 64], bool) -> Block,
    plain: impl Fn(&[u8; 64], bool) -> bool,
) -> Result<(Passed, usize), Malformed> {
    let mut out = Rewrite { s, copied: start, rewriting: false, scratch };
    let mut long_newline = None;
    let mut utf8_checked = false;
    let mut i = start;
    // The byte at `i` is escaped by a backslash just before it.
    let mut carry = false;
    // The last block was plain: the next is likely so too, and worth the cheaper test
    // first. (Blocks with escapes come in runs; testing each of them for plain first
    // would cost a fifth more per block.)
    let mut after_plain = true;
    while i < s.len() {
        if after_plain && !carry {
            while let Some(bytes) = s.get(i..i + 64) {
                if !plain(bytes.try_into().expect("64 bytes"), utf8_checked) {
                    break;
                }
                i += 64;
            }
            if i >= s.len() {
                break;
            }
        }
        let block = Block::at(s, i, utf8_checked, &masks);
        after_plain = block.raw_specials | block.backslashes == 0;
        let (escaped, carry_out) = escaped_bits(block.backslashes, carry);
        let mut raw = block.raw_specials & !escaped;
        let mut odd = escaped & !block.kept_after_backslash;
        let (mut next, mut next_carry) = (i + 64, carry_out);
        while raw | odd != 0 {
            // The first thing to handle: a raw special, or the backslash of an escape
            // the encoder writes otherwise (just before the block when it escapes
            // byte 0).
            let at_raw = i + raw.trailing_zeros() as usize;
            let at_escape = (i + odd.trailing_zeros() as usize).wrapping_sub(1);
            let end = if odd != 0 && at_escape < at_raw {
                escape(s, at_escape, &mut out, &mut long_newline)?
            } else {
                match s[at_raw] {
                    b'"' => return Ok((out.finish(start, at_raw, long_newline), at_raw)),
                    c if c < 0x20 => {
                        let (bytes, n) = ESCAPES[c as usize];
                        out.replace(at_raw, at_raw + 1, bytes, n);
                        at_raw + 1
                    }
                    _ => {
                        // The first byte beyond ASCII. What follows the value in the
                        // line is ASCII, so the line's rest being UTF-8 makes the
                        // value's rest so. The scan starts again there, on masks
                        // without such bytes.
                        if simdutf8::basic::from_utf8(&s[at_raw..]).is_err() {
                            return Ok((Passed::NotUtf8, at_raw));
                        }
                        utf8_checked = true;
                        (next, next_carry) = (at_raw, false);
                        break;
                    }
                }
            };
            // The block's masks hold after what was handled (the escapes found from
            // its start are the ones handled). An escape ending past the block, or at
            // its end, leaves the next byte unescaped.
            if end >= i + 64 {
                (next, next_carry) = (end, false);
                break;
            }
            let handled = (1u64 << (end - i)) - 1;
            raw &= !handled;
            odd &= !handled;
        }
        i = next;
        carry = next_carry;
    }
    Err(Malformed)
}

/// Which bytes of a block are escaped — follow a backslash that starts an escape —
/// given the backslashes (bit `k`: byte `k`) and whether byte 0 is escaped by the
/// block before; and whether the next block's byte 0 is. A run of backslashes escapes
/// every other one; an odd run escapes the byte after it. simdjson's carry trick
/// (`find_escaped` in its `json_string_scanner`).
#[inline]
fn escaped_bits(backslashes: u64, carry: bool) -> (u64, bool) {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let carry = u64::from(carry);
    let backslashes = backslashes & !carry;
    let follows = (backslashes << 1) | carry;
    let odd_starts = backslashes & !EVEN & !follows;
    let (sum, overflow) = odd_starts.overflowing_add(backslashes);
    ((EVEN ^ (sum << 1)) & follows, overflow)
}

/// The masks of 64 bytes (bit `k`: byte `k`); past the line's end, bytes that are none
/// of these.
#[derive(Debug, Default, PartialEq, Eq)]
struct Block {
    /// `"`, control characters and, unless the line was checked as UTF-8, bytes
    /// beyond ASCII: what needs handling where it is not escaped.
    raw_specials: u64,
    backslashes: u64,
    /// What may follow a backslash in an escape the encoder writes alike:
    /// `"` `\` `n` `r` `t` `b` `f`.
    kept_after_backslash: u64,
}

impl Block {
    /// The block of `s` from `i`, its masks found by `masks`.
    #[inline(always)]
    fn at(s: &[u8], i: usize, utf8_checked: bool, masks: &impl Fn(&[u8; 64], bool) -> Block) -> Block {
        match s.get(i..i + 64) {
            Some(bytes) => masks(bytes.try_into().expect("64 bytes"), utf8_checked),
            None => {
                let mut padded = [b'.'; 64];
                padded[..s.len() - i].copy_from_slice(&s[i..]);
                masks(&padded, utf8_checked)
            }
        }
    }

    /// The masks of `bytes`, 16 at a time (SSE2 on x86-64, a loop elsewhere).
    fn of_sse2(bytes: &[u8; 64], utf8_checked: bool) -> Block {
        let mut block = Block::default();
        for (k, quarter) in bytes.chunks_exact(16).enumerate() {
            let (raw, backslashes, kept) = masks16(quarter.try_into().expect("16 bytes"), utf8_checked);
            block.raw_specials |= raw << (16 * k);
            block.backslashes |= backslashes << (16 * k);
            block.kept_after_backslash |= kept << (16 * k);
        }
        block
    }

    /// The masks of `bytes`, 32 at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn of_avx2(bytes: &[u8; 64], utf8_checked: bool) -> Block {
        // SAFETY: AVX2 is available (the caller's promise); each half is 32 bytes of
        // the array.
        let (low, high) = unsafe { (masks32_avx2(bytes.as_ptr(), utf8_checked), masks32_avx2(bytes.as_ptr().add(32), utf8_checked)) };
        Block {
            raw_specials: low.0 | high.0 << 32,
            backslashes: low.1 | high.1 << 32,
            kept_after_backslash: low.2 | high.2 << 32,
        }
    }
}

/// [`Block`]'s three masks for the 32 bytes at `at`. What may follow a backslash is
/// found by two table lookups, on the high and the low half of each byte: `"` `\` `n`
/// `r` `t` `b` `f` are four groups by their high half (2, 5, 6, 7), and each group's
/// bit is set for its low halves.
///
/// # Safety
/// The CPU must have AVX2, and `at` must point to 32 readable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn masks32_avx2(at: *const u8, utf8_checked: bool) -> (u64, u64, u64) {
    use std::arch::x86_64::*;
    // By low half: 2 → `"` `b` `r`; 4 → `t`; 6 → `f`; c → `\`; e → `n`.
    const LOW: [i8; 16] = [0, 0, 1 | 4 | 8, 0, 8, 0, 4, 0, 0, 0, 0, 0, 2, 0, 4, 0];
    // By high half: 2 → `"`; 5 → `\`; 6 → `b` `f` `n`; 7 → `r` `t`.
    const HIGH: [i8; 16] = [0, 0, 1, 0, 0, 2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0];
    // SAFETY: the caller promises AVX2 and 32 readable bytes; `loadu` has no alignment
    // requirement, and the tables are 16 bytes each.
    unsafe {
        let v = _mm256_loadu_si256(at.cast::<__m256i>());
        let quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
        let backslash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
        let control = _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v);
        let high = if utf8_checked { 0 } else { _mm256_movemask_epi8(v) as u32 as u64 };
        let nibble = _mm256_set1_epi8(0x0f);
        let low_table = _mm256_broadcastsi128_si256(_mm_loadu_si128(LOW.as_ptr().cast::<__m128i>()));
        let high_table = _mm256_broadcastsi128_si256(_mm_loadu_si128(HIGH.as_ptr().cast::<__m128i>()));
        // A byte beyond ASCII (top bit set) looks up 0: none is kept.
        let by_low = _mm256_shuffle_epi8(low_table, v);
        let by_high = _mm256_shuffle_epi8(high_table, _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble));
        let other = _mm256_cmpeq_epi8(_mm256_and_si256(by_low, by_high), _mm256_setzero_si256());
        (
            _mm256_movemask_epi8(_mm256_or_si256(quote, control)) as u32 as u64 | high,
            _mm256_movemask_epi8(backslash) as u32 as u64,
            !(_mm256_movemask_epi8(other) as u32) as u64,
        )
    }
}

/// Whether the 64 bytes need no [`Block`] masks: no `"`, `\\` or control character,
/// and no byte beyond ASCII unless `utf8_checked`.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn plain_avx2(bytes: &[u8; 64], utf8_checked: bool) -> bool {
    use std::arch::x86_64::*;
    // SAFETY: the caller promises AVX2; the loads read the 64 bytes of the array, and
    // `loadu` has no alignment requirement.
    unsafe {
        let low = _mm256_loadu_si256(bytes.as_ptr().cast::<__m256i>());
        let high = _mm256_loadu_si256(bytes.as_ptr().add(32).cast::<__m256i>());
        // `"` (0x22) with bit 1 flipped is 0x20, a control character stays below it,
        // and every other byte lands above: one minimum of both halves tells them.
        let flip = _mm256_set1_epi8(2);
        let least = _mm256_min_epu8(_mm256_xor_si256(low, flip), _mm256_xor_si256(high, flip));
        let quote_or_control = _mm256_cmpeq_epi8(_mm256_min_epu8(least, _mm256_set1_epi8(0x20)), least);
        let backslash = _mm256_set1_epi8(b'\\' as i8);
        let backslashes = _mm256_or_si256(_mm256_cmpeq_epi8(low, backslash), _mm256_cmpeq_epi8(high, backslash));
        let mut found = _mm256_or_si256(quote_or_control, backslashes);
        if !utf8_checked {
            found = _mm256_or_si256(found, _mm256_or_si256(low, high));
        }
        _mm256_movemask_epi8(found) == 0
    }
}

/// [`plain_avx2`] without AVX2.
fn plain_sse2(bytes: &[u8; 64], utf8_checked: bool) -> bool {
    bytes.chunks_exact(16).all(|quarter| {
        let (raw, backslashes, _) = masks16(quarter.try_into().expect("16 bytes"), utf8_checked);
        raw | backslashes == 0
    })
}

/// [`Block`]'s three masks for 16 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn masks16(bytes: &[u8; 16], utf8_checked: bool) -> (u64, u64, u64) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86-64 baseline; the load reads the 16 bytes of the
    // array, and `loadu` has no alignment requirement.
    unsafe {
        let v = _mm_loadu_si128(bytes.as_ptr().cast::<__m128i>());
        let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        let quote = eq(b'"');
        let backslash = eq(b'\\');
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        let high = if utf8_checked { 0 } else { _mm_movemask_epi8(v) as u64 };
        let letters = _mm_or_si128(_mm_or_si128(_mm_or_si128(eq(b'n'), eq(b'r')), _mm_or_si128(eq(b't'), eq(b'b'))), eq(b'f'));
        let kept = _mm_or_si128(_mm_or_si128(quote, backslash), letters);
        (
            _mm_movemask_epi8(_mm_or_si128(quote, control)) as u64 | high,
            _mm_movemask_epi8(backslash) as u64,
            _mm_movemask_epi8(kept) as u64,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn masks16(bytes: &[u8; 16], utf8_checked: bool) -> (u64, u64, u64) {
    let (mut raw, mut backslashes, mut kept) = (0, 0, 0);
    for (k, &c) in bytes.iter().enumerate() {
        raw |= u64::from(c == b'"' || c < 0x20 || (!utf8_checked && c >= 0x80)) << k;
        backslashes |= u64::from(c == b'\\') << k;
        kept |= u64::from(matches!(c, b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f')) << k;
    }
    (raw, backslashes, kept)
}

/// The escape at `s[k]` (a backslash) that the encoder writes otherwise: rewritten.
/// Returns where it ends. A `\u000a` is noted in `long_newline` (where it ends, and the
/// scratch length before it): it ends the message if the value ends right after it.
#[inline(always)]
fn escape(s: &[u8], k: usize, out: &mut Rewrite<'_>, long_newline: &mut Option<(usize, usize)>) -> Result<usize, Malformed> {
    if let Some(c) = s.get(k..k + 8).and_then(|word| go_html_escape(word.try_into().expect("8 bytes"))) {
        // Go's `\u003c`, `\u003e`, `\u0026` (HTML-safe escaping, on by default), by
        // one comparison of the escape's six bytes.
        out.replace(k, k + 6, [c, 0, 0, 0, 0, 0], 1);
        return Ok(k + 6);
    }
    if s.get(k + 1) == Some(&b'u') {
        if let Some(c) = printable_ascii_escape(s.get(k + 2..k + 6)) {
            // Go's `\u003c`, `\u003e`, `\u0026`: by far the commonest rewrite, made here
            // in the scan's loop.
            out.replace(k, k + 6, [c, 0, 0, 0, 0, 0], 1);
            return Ok(k + 6);
        }
    }
    escape_otherwise(s, k, out, long_newline)
}

/// [`escape`] for every other escape: `\/`, and `\u` of anything but printable ASCII.
#[inline(never)]
fn escape_otherwise(s: &[u8], k: usize, out: &mut Rewrite<'_>, long_newline: &mut Option<(usize, usize)>) -> Result<usize, Malformed> {
    match s.get(k + 1) {
        Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => Ok(k + 2),
        Some(b'/') => {
            out.replace(k, k + 2, [b'/', 0, 0, 0, 0, 0], 1);
            Ok(k + 2)
        }
        Some(b'u') => {
            let (ch, used) = unicode_escape(&s[k + 2..])?;
            let end = k + 2 + used;
            match ESCAPES.get(ch as usize) {
                // The encoder escapes it too (a control character, `"` or `\`).
                Some(&(bytes, n)) if n != 0 => {
                    if s[k..end] != bytes[..n as usize] {
                        let at = out.replace(k, end, bytes, n);
                        if ch == '\n' {
                            *long_newline = Some((end, at));
                        }
                    }
                }
                _ => {
                    let mut bytes = [0; 6];
                    let n = ch.encode_utf8(&mut bytes).len();
                    out.replace(k, end, bytes, n as u8);
                }
            }
            Ok(end)
        }
        _ => Err(Malformed),
    }
}

/// The character of Go's `\u003c`, `\u003e` or `\u0026` when `word` starts with one
/// of them (as Go writes them, lower-case).
#[inline(always)]
fn go_html_escape(word: &[u8; 8]) -> Option<u8> {
    const SIX: u64 = (1 << 48) - 1;
    const fn escape_of(digits: &[u8; 6]) -> u64 {
        u64::from_le_bytes([digits[0], digits[1], digits[2], digits[3], digits[4], digits[5], 0, 0])
    }
    match u64::from_le_bytes(*word) & SIX {
        w if w == escape_of(b"\\u003c") => Some(b'<'),
        w if w == escape_of(b"\\u003e") => Some(b'>'),
        w if w == escape_of(b"\\u0026") => Some(b'&'),
        _ => None,
    }
}

/// The character of the four hex digits of a `\u00XX` escape when the encoder writes
/// it raw: printable ASCII other than `"` and `\`.
#[inline]
fn printable_ascii_escape(digits: Option<&[u8]>) -> Option<u8> {
    let &[b'0', b'0', high, low] = digits? else {
        return None;
    };
    let (high, low) = (HEX_DIGITS[high as usize], HEX_DIGITS[low as usize]);
    let c = high << 4 | low;
    ((high | low) & 0x10 == 0 && (0x20..0x7f).contains(&c) && c != b'"' && c != b'\\').then_some(c)
}

/// The value as it is until the first rewrite; from then on copied into `scratch`,
/// after what it held.
///
/// While rewriting, `scratch` has room for the rest of the line and [`SLACK`] bytes
/// more: `spare capacity ≥ s.len() - copied + SLACK`. Every rewrite but a raw control
/// character's (which reserves for itself) writes no more than it consumes, so the
/// room lasts; the runs between rewrites and the rewritten bytes are then stored with
/// no capacity check, in whole 32-byte moves that may write past what they keep.
struct Rewrite<'a> {
    s: &'a [u8],
    /// `s` up to here is in `scratch` (or needs no copy yet).
    copied: usize,
    rewriting: bool,
    scratch: &'a mut Vec<u8>,
}

/// Room kept past the rest of the line while rewriting: a 32-byte move's overshoot,
/// an 8-byte store's, and a raw control character's escape.
const SLACK: usize = 64;

impl Rewrite<'_> {
    /// Replaces `s[from..to]` with the first `n` (≤ 6) bytes of `with`; returns the
    /// scratch length before them.
    #[inline(always)]
    fn replace(&mut self, from: usize, to: usize, with: [u8; 6], n: u8) -> usize {
        let n = usize::from(n).min(6);
        if !self.rewriting || n > to - from {
            self.make_room(n);
        }
        self.copy_run(from);
        let at = self.scratch.len();
        let mut word = [0u8; 8];
        word[..6].copy_from_slice(&with);
        // SAFETY: the spare capacity is at least `s.len() - copied + SLACK` after the
        // run (the struct's invariant, `make_room` for a rewrite that grows), so the
        // 8 bytes stored fit; `set_len` covers the `n` of them initialized.
        unsafe {
            std::ptr::copy_nonoverlapping(word.as_ptr(), self.scratch.as_mut_ptr().add(at), 8);
            self.scratch.set_len(at + n);
        }
        self.copied = to;
        at
    }

    /// Starts rewriting (after what `scratch` holds), and makes the room the invariant
    /// needs, plus `grow` bytes for a rewrite longer than what it replaces.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self, grow: usize) {
        self.rewriting = true;
        self.scratch.reserve(self.s.len() - self.copied + SLACK + grow);
    }

    /// Copies `s[copied..to]` (a run needing no rewrite) to `scratch`, 32 bytes at a
    /// move where the line has them to read.
    #[inline(always)]
    fn copy_run(&mut self, to: usize) {
        let (from, len) = (self.copied, to - self.copied);
        let at = self.scratch.len();
        assert!(to <= self.s.len());
        debug_assert!(self.scratch.capacity() - at >= self.s.len() - from + SLACK);
        // SAFETY: `from..to` is within `s` (asserted); the spare capacity after `at` is
        // at least `s.len() - from + SLACK` (the invariant), which covers `len` rounded
        // up to 32; the moves read `s` only below `s.len()` (checked) and do not
        // overlap `scratch`; `set_len` covers the `len` bytes copied.
        unsafe {
            let (src, dst) = (self.s.as_ptr().add(from), self.scratch.as_mut_ptr().add(at));
            if from + len.next_multiple_of(32) <= self.s.len() {
                let mut k = 0;
                while k < len {
                    std::ptr::copy_nonoverlapping(src.add(k), dst.add(k), 32);
                    k += 32;
                }
            } else {
                std::ptr::copy_nonoverlapping(src, dst, len);
            }
            self.scratch.set_len(at + len);
        }
    }

    /// The value ends at `end` (its closing quote); a final newline — a `\n`, or a
    /// `\u000a` ending there (`long_newline`) — is left out.
    fn finish(self, start: usize, end: usize, long_newline: Option<(usize, usize)>) -> Passed {
        if let Some((at_end, at)) = long_newline.filter(|&(e, _)| e == end) {
            debug_assert!(self.rewriting && at_end == self.copied);
            self.scratch.truncate(at);
            return Passed::Scratch { newline: true };
        }
        let newline = ends_in_short_newline(self.s, start, end);
        let end = if newline { end - 2 } else { end };
        if !self.rewriting {
            return Passed::Borrowed { end, newline };
        }
        self.scratch.extend_from_slice(&self.s[self.copied..end]);
        Passed::Scratch { newline }
    }
}

/// `s[start..end]` ends in the escape `\n`: an `n` after an odd run of backslashes.
fn ends_in_short_newline(s: &[u8], start: usize, end: usize) -> bool {
    if end < start + 2 || s[end - 1] != b'n' {
        return false;
    }
    let run = s[start..end - 1].iter().rev().take_while(|&&c| c == b'\\').count();
    run % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::docker::unescape;
    use crate::event::encode::write_json_string;

    /// Passes the JSON string literal `lit` through (with and without AVX2, which
    /// must agree): how, and the message.
    fn pass(lit: &str) -> (Passed, Vec<u8>) {
        let s = lit.as_bytes();
        let mut scratch = Vec::new();
        let (passed, end) = pass_through(s, 1, &mut scratch).unwrap();
        // The same without AVX2.
        let mut sse2_scratch = Vec::new();
        assert_eq!(scan(s, 1, &mut sse2_scratch, Block::of_sse2, plain_sse2), Ok((passed, end)), "{lit}");
        assert_eq!(sse2_scratch, scratch, "{lit}");
        let out = match passed {
            Passed::Borrowed { end: e, .. } => {
                assert_eq!(end, s.len() - 1, "{lit}");
                s[1..e].to_vec()
            }
            Passed::Scratch { .. } => scratch.clone(),
            Passed::NotUtf8 => Vec::new(),
        };
        (passed, out)
    }

    /// What the encoder writes for `lit`'s value (without its final newline).
    fn encoded(lit: &str) -> Vec<u8> {
        let value: String = serde_json::from_str(lit).unwrap();
        let mut out = Vec::new();
        write_json_string(&mut out, value.strip_suffix('\n').unwrap_or(&value).as_bytes());
        out[1..out.len() - 1].to_vec()
    }

    #[test]
    fn what_the_encoder_writes_alike_stays_in_the_line() {
        for lit in [r#""""#, r#""plain""#, r#""q\" b\\ \r\t\b\f mid\nline é日😀 \u0001 \u001b""#, r#""ends\n""#, r#""\n""#] {
            let (passed, out) = pass(lit);
            assert!(matches!(passed, Passed::Borrowed { .. }), "{lit}: {passed:?}");
            assert_eq!(out, encoded(lit), "{lit}");
        }
        assert_eq!(pass(r#""ends\n""#).0, Passed::Borrowed { end: 5, newline: true });
        assert_eq!(pass(r#""a\\n""#).0, Passed::Borrowed { end: 5, newline: false });
    }

    #[test]
    fn what_go_writes_otherwise_is_rewritten() {
        for lit in [
            r#""\u003cdiv\u003e \u0026 x\u2028y\u2029""#,
            r#""\u0008\u000c\u000A\u001B \u0022\u005c \/ \u00e9 \ud83d\ude00 x""#,
            r#""\u003cend\u003e\n""#,
            r#""ends in a long newline\u000a""#,
            r#""\u000a""#,
            r#""\/\n""#,
        ] {
            let (passed, out) = pass(lit);
            assert!(matches!(passed, Passed::Scratch { .. }), "{lit}: {passed:?}");
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(encoded(lit)).unwrap(), "{lit}");
        }
        assert_eq!(pass(r#""x\u000a""#).0, Passed::Scratch { newline: true });
        // Raw control characters (which serde_json refuses) are escaped.
        assert_eq!(pass("\"raw\u{1}control\ttab\""), (Passed::Scratch { newline: false }, b"raw\\u0001control\\ttab".to_vec()));
        // A lone surrogate (which serde_json refuses) becomes U+FFFD, as Go reads it.
        assert_eq!(pass(r#""a\ud800b\udc00\n""#), (Passed::Scratch { newline: true }, "a\u{FFFD}b\u{FFFD}".as_bytes().to_vec()));
        assert_eq!(pass(r#""\u003c\n""#).0, Passed::Scratch { newline: true });
    }

    /// Runs of up to 200 pieces of text (up to six blocks) between rewrites — ones that shrink
    /// and ones that grow (a raw control character, six bytes out for one in), many in
    /// a row — come out as the encoder writes them: the rewrite's room never runs out,
    /// and its 32-byte moves keep only what they copy.
    #[test]
    fn runs_of_every_length_between_rewrites_that_shrink_or_grow() {
        // (in the line, as the encoder writes it)
        let rewrites = [("\\u003c", "<"), ("\\u0026", "&"), ("\u{1}", "\\u0001"), ("\t", "\\t"), ("\\/", "/"), ("\\u00e9", "é")];
        for run in 0..200 {
            for (k, &(from, to)) in rewrites.iter().enumerate() {
                let (mut lit, mut want) = (String::from("\""), String::new());
                for round in 0..4 {
                    // Text the encoder writes alike: ASCII, a raw `é`, an escaped quote.
                    let text: String = ["x", "é", "\\\"", "yz"].iter().cycle().skip(round + k).take(run).copied().collect();
                    lit.push_str(&text);
                    want.push_str(&text);
                    lit.push_str(from);
                    want.push_str(to);
                }
                // A run of growing rewrites, then the end.
                lit.push_str(&"\u{1f}".repeat(run % 40));
                want.push_str(&"\\u001f".repeat(run % 40));
                lit.push('"');
                let (passed, out) = pass(&lit);
                assert!(matches!(passed, Passed::Scratch { newline: false }), "{lit:?}: {passed:?}");
                assert_eq!(String::from_utf8(out).unwrap(), want, "{lit:?}");
            }
        }
    }

    /// Every `\u00XX`, in either case, alone and between text: as the encoder writes
    /// its character (the printable ASCII ones take a shortcut); a bad digit is
    /// malformed.
    #[test]
    fn every_u00xx_escape_comes_out_as_the_encoder_writes_it() {
        for c in 0..=0xffu32 {
            for digits in [format!("{c:04x}"), format!("{c:04X}")] {
                for lit in [format!("\"\\u{digits}\""), format!("\"a\\u{digits}b\\u{digits}\\u003c\"")] {
                    let (_, out) = pass(&lit);
                    assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(encoded(&lit)).unwrap(), "{lit}");
                }
            }
        }
        for bad in [r#""\u00g1""#, r#""\u003""#, r#""x\u0 3c""#] {
            assert_eq!(pass_through(bad.as_bytes(), 1, &mut Vec::new()), Err(Malformed), "{bad}");
        }
    }

    #[test]
    fn a_line_not_utf8_is_not_passed_through() {
        let mut scratch = Vec::new();
        assert_eq!(pass_through(b"\"ok \xff\"", 1, &mut scratch).unwrap().0, Passed::NotUtf8);
        // Bad bytes after the value count too: the line is checked whole.
        assert_eq!(pass_through(b"\"\xc3\xa9\",\"x\":\"\xff\"", 1, &mut scratch).unwrap().0, Passed::NotUtf8);
        // Valid: checked once, then characters beyond ASCII are plain.
        assert_eq!(pass_through("\"é 日 \u{1F600} é\"".as_bytes(), 1, &mut scratch).unwrap().0, Passed::Borrowed { end: 15, newline: false });
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in [&b"\"unterminated"[..], b"\"bad \\q\"", b"\"\\u12\"", b"\"\\", b"\"x\\"] {
            assert!(pass_through(bad, 1, &mut Vec::new()).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    /// Values dense in escapes of every kind Go and others write, ending anywhere in a
    /// 16-byte block: passed through, they are what the encoder writes for the value
    /// serde_json reads, and unescaping them gives that value back.
    #[test]
    fn dense_values_come_out_as_the_encoder_writes_them() {
        let alphabet: [&str; 19] = [
            "\\\"", "\\\\", "\\n", "\\t", "\\r", "\\b", "\\f", "\\/", "\\u003c", "\\u0026", "\\u2028", "\\u0008", "\\u001b", "\\u001B",
            "\\ud83d\\ude00", "a", "é日", "{\\\"k\\\":1}", "plain text ",
        ];
        let mut state = 0x51_7cc1_b727_220a_u64;
        for case in 0..6000 {
            let mut value = String::new();
            while value.len() < case % 300 {
                crate::xorshift(&mut state);
                value.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let newline = ["", "\\n", "\\u000a"][case % 3];
            let lit = format!("\"{value}{newline}\"");
            let (passed, out) = pass(&lit);
            let want = encoded(&lit);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), String::from_utf8(want).unwrap(), "{lit}");
            let value: String = serde_json::from_str(&lit).unwrap();
            let ends_line = value.ends_with('\n');
            assert!(matches!(passed, Passed::Borrowed { newline, .. } | Passed::Scratch { newline } if newline == ends_line), "{lit}");
            let mut back = Vec::new();
            unescape(&out, &mut back).unwrap();
            assert_eq!(back, value.strip_suffix('\n').unwrap_or(&value).as_bytes(), "{lit}");
        }
    }

    /// The block-wide escape finding agrees with reading the backslashes one by one:
    /// every pattern of the low 16 bytes under fixed high ones, and random blocks,
    /// with either carry.
    #[test]
    fn escaped_bits_agree_with_a_byte_at_a_time_reading() {
        let by_bytes = |backslashes: u64, carry: bool| {
            let (mut escaped, mut escaping) = (0u64, carry);
            for k in 0..64 {
                if escaping {
                    escaped |= 1 << k;
                    escaping = false;
                } else if backslashes & (1 << k) != 0 {
                    escaping = true;
                }
            }
            (escaped, escaping)
        };
        let mut state = 0x2b99_2ddf_a232_49d6_u64;
        let highs = [0, u64::MAX << 16, 0x8000_0000_0000_0000, 0x5555_5555_5555_0000, 0xaaaa_aaaa_aaaa_0000];
        let randoms = (0..20_000).map(|_| {
            crate::xorshift(&mut state);
            state & (state >> 7)
        });
        let masks = highs.iter().flat_map(|&h| (0..=0xffff_u64).map(move |low| h | low)).chain(randoms);
        for backslashes in masks {
            for carry in [false, true] {
                assert_eq!(escaped_bits(backslashes, carry), by_bytes(backslashes, carry), "{backslashes:064b} carry {carry}");
            }
        }
    }

    /// Every way of finding a block's masks agrees with a byte-at-a-time reading, on
    /// random bytes weighted to the ones that matter.
    #[test]
    fn block_masks_agree_on_every_path() {
        let alphabet = b"\"\\nrtbfu/ \x01\x1f\x7f\x80\xc3\xffaAzZ0";
        let mut state = 0x8c9f_3ab1_07d4_e215_u64;
        for _ in 0..20_000 {
            let mut bytes = [0u8; 64];
            for b in &mut bytes {
                crate::xorshift(&mut state);
                *b = if state.is_multiple_of(4) { (state >> 8) as u8 } else { alphabet[(state >> 8) as usize % alphabet.len()] };
            }
            for checked in [false, true] {
                let mut want = Block::default();
                for (k, &c) in bytes.iter().enumerate() {
                    want.raw_specials |= u64::from(c == b'"' || c < 0x20 || (!checked && c >= 0x80)) << k;
                    want.backslashes |= u64::from(c == b'\\') << k;
                    want.kept_after_backslash |= u64::from(b"\"\\nrtbf".contains(&c)) << k;
                }
                assert_eq!(Block::of_sse2(&bytes, checked), want, "{bytes:?}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is available, as just checked.
                    assert_eq!(unsafe { Block::of_avx2(&bytes, checked) }, want, "{bytes:?}");
                }
                assert_plain_agrees(&bytes, checked, &want);
            }
        }
        // Plain text with one byte of every value at each place.
        for k in 0..64 {
            for c in 0..=u8::MAX {
                let mut bytes = [b'a'; 64];
                bytes[k] = c;
                for checked in [false, true] {
                    assert_plain_agrees(&bytes, checked, &Block::of_sse2(&bytes, checked));
                }
            }
        }
    }

    /// A block is plain exactly when it has no raw special and no backslash.
    fn assert_plain_agrees(bytes: &[u8; 64], checked: bool, block: &Block) {
        let want = block.raw_specials | block.backslashes == 0;
        assert_eq!(plain_sse2(bytes, checked), want, "{bytes:?} checked={checked}");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available, as just checked.
            assert_eq!(unsafe { plain_avx2(bytes, checked) }, want, "{bytes:?} checked={checked}");
        }
    }

    /// Runs of escaped backslashes, then an escape kept or rewritten, at every offset
    /// across two blocks (so runs straddle a block's end).
    #[test]
    fn backslash_runs_across_blocks_come_out_as_the_encoder_writes_them() {
        for pos in 0..140 {
            for run in 0..5 {
                for after in ["\\\"", "\\n", "\\u003c", "x", "\\/", ""] {
                    for tail in ["", "\\n"] {
                        let lit = format!("\"{}{}{after}{tail}\"", "a".repeat(pos), "\\\\".repeat(run));
                        let (passed, out) = pass(&lit);
                        assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(encoded(&lit)).unwrap(), "{lit}");
                        let value: String = serde_json::from_str(&lit).unwrap();
                        let newline = matches!(passed, Passed::Borrowed { newline: true, .. } | Passed::Scratch { newline: true });
                        assert_eq!(newline, value.ends_with('\n'), "{lit}");
                    }
                }
            }
        }
    }
}
