//! The event's JSON form:
//! `{"time":"…","stream":"stdout","message":"…","truncated":true,"partial":true,"kubernetes":{…}}`
//! followed by `\n`. `truncated` and `partial` (the message may not be whole: cut short,
//! or following input lost unread) appear only when true; `kubernetes` only
//! for files whose path names a pod.
//!
//! Encoding appends to a caller-owned `Vec<u8>` and never allocates on its own. Invalid
//! UTF-8 in a message becomes U+FFFD, so the output is always valid JSON.

use super::time::TimeFormatter;
use super::{Event, Message};

/// How `message` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageFormat {
    /// Always a JSON string.
    #[default]
    String,
    /// A message that is itself a JSON object is embedded as an object; anything
    /// else is still a string.
    Json,
}

/// Kubernetes metadata known from a log file's path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubeMeta {
    pub namespace: String,
    pub pod: String,
    /// Unknown for a `/var/log/containers` link whose target is gone.
    pub pod_uid: Option<String>,
    pub container: String,
    pub restart_count: Option<u32>,
}

impl KubeMeta {
    /// The `,"kubernetes":{…}` fragment, built once per file and copied into each event.
    pub fn json_fragment(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b",\"kubernetes\":{\"namespace\":");
        write_json_string(&mut out, self.namespace.as_bytes());
        out.extend_from_slice(b",\"pod\":");
        write_json_string(&mut out, self.pod.as_bytes());
        if let Some(uid) = &self.pod_uid {
            out.extend_from_slice(b",\"pod_uid\":");
            write_json_string(&mut out, uid.as_bytes());
        }
        out.extend_from_slice(b",\"container\":");
        write_json_string(&mut out, self.container.as_bytes());
        if let Some(n) = self.restart_count {
            out.extend_from_slice(b",\"restart_count\":");
            out.extend_from_slice(n.to_string().as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// Writes events as JSON lines. Keep one per output: it caches the time prefix.
#[derive(Debug, Default, Clone)]
pub struct EventEncoder {
    times: TimeFormatter,
    message_format: MessageFormat,
    /// An escaped message unescaped, for [`Self::text`].
    text: Vec<u8>,
}

impl EventEncoder {
    pub fn new(message_format: MessageFormat) -> Self {
        Self { times: TimeFormatter::default(), message_format, text: Vec::new() }
    }

    /// `event`'s message as the application wrote it ([`Event::text`]), unescaped
    /// into space this encoder keeps.
    pub fn text<'s>(&'s mut self, event: &'s Event<'_>) -> &'s [u8] {
        event.text(&mut self.text)
    }

    /// Appends `event` as one JSON line. `kube` is a [`KubeMeta::json_fragment`], or
    /// empty when the file has no Kubernetes metadata.
    pub fn encode(&mut self, event: &Event<'_>, kube: &[u8], out: &mut Vec<u8>) {
        out.reserve(event.message.len() + kube.len() + 80);
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(self.times.format(event.time));
        out.extend_from_slice(b"\",\"stream\":\"");
        out.extend_from_slice(event.stream.as_str().as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        match self.message_format {
            MessageFormat::String => write_message(out, &event.message, event.escaped, &mut self.text),
            MessageFormat::Json => {
                let text = event.text(&mut self.text);
                if is_json_object(text) {
                    out.extend_from_slice(trim_ascii(text));
                } else if event.escaped {
                    write_passed(out, &event.message);
                } else {
                    write_json_string(out, text); // the message itself, in one slice
                }
            }
        }
        if event.truncated {
            out.extend_from_slice(b",\"truncated\":true");
        }
        if event.partial {
            out.extend_from_slice(b",\"partial\":true");
        }
        if event.lines > 1 {
            out.extend_from_slice(b",\"multiline\":");
            out.extend_from_slice(itoa_u32(event.lines, &mut [0; 10]));
        }
        out.extend_from_slice(kube);
        out.extend_from_slice(b"}\n");
    }
}

/// `n` in decimal, written into `buf`.
fn itoa_u32(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn is_json_object(msg: &[u8]) -> bool {
    let t = trim_ascii(msg);
    t.first() == Some(&b'{')
        && t.last() == Some(&b'}')
        && serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok()
}

/// Appends a message as a JSON string literal: escaped, or already escaped
/// ([`Event::escaped`]) and only quoted. A message in pieces is written piece by piece
/// ([`write_pieces`]); one with a piece after the first shorter than 4 bytes (rare) is
/// joined into `scratch` first.
#[inline]
fn write_message(out: &mut Vec<u8>, message: &Message<'_>, escaped: bool, scratch: &mut Vec<u8>) {
    if escaped {
        return write_passed(out, message);
    }
    if let Some(whole) = message.whole() {
        return write_json_string(out, whole);
    }
    if message.pieces().skip(1).any(|p| p.len() < 4) {
        return write_json_string(out, message.join(scratch));
    }
    out.push(b'"');
    write_pieces(out, message);
    out.push(b'"');
}

/// Escapes a message's pieces (each after the first at least 4 bytes long) as
/// escaping them joined would. The runtime cuts lines by bytes, so a character may
/// be cut between two pieces: the end of a piece from its last character's first byte
/// on (if that character is incomplete there) and the continuation bytes (up to 3)
/// that start the next are escaped together, from a few bytes on the stack. Every
/// place the text is cut at is a character boundary of the joined text (a byte that is
/// not a continuation byte always starts one, and so does each continuation byte past
/// a character's end), so each part comes out as it would within the whole.
fn write_pieces(out: &mut Vec<u8>, message: &Message<'_>) {
    let mut cut = [0u8; 8];
    let mut held = 0;
    let mut pieces = message.pieces().peekable();
    let mut first = true;
    while let Some(mut piece) = pieces.next() {
        if !first {
            let k = piece.iter().take(3).take_while(|&&b| b & 0xC0 == 0x80).count();
            cut[held..held + k].copy_from_slice(&piece[..k]);
            write_json_string_body(out, &cut[..held + k]);
            piece = &piece[k..];
        }
        first = false;
        let body = if pieces.peek().is_some() { crate::decode::reassemble::cut_at_char_boundary(piece) } else { piece };
        write_json_string_body(out, body);
        held = piece.len() - body.len();
        cut[..held].copy_from_slice(&piece[body.len()..]);
    }
}

/// Appends an escaped message ([`Event::escaped`]), quoted.
fn write_passed(out: &mut Vec<u8>, message: &Message<'_>) {
    out.push(b'"');
    for piece in message.pieces() {
        out.extend_from_slice(piece);
    }
    out.push(b'"');
}

/// Appends `s` as a JSON string literal, replacing invalid UTF-8 with U+FFFD.
pub fn write_json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    write_json_string_body(out, s);
    out.push(b'"');
}

/// [`write_json_string`] without the quotes. `s` is escaped first and checked after,
/// and only if the escaping did not find it all ASCII (most messages are); if it is
/// not UTF-8 after all, it is escaped again, chunk by chunk: each invalid sequence
/// (an incomplete character at the end included) becomes one U+FFFD.
fn write_json_string_body(out: &mut Vec<u8>, s: &[u8]) {
    let start = out.len();
    let ascii = write_escaped(out, s);
    if !ascii && simdutf8::basic::from_utf8(s).is_err() {
        out.truncate(start);
        for chunk in s.utf8_chunks() {
            write_escaped(out, chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                out.extend_from_slice("\u{FFFD}".as_bytes());
            }
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// True when any byte of the word is `"`, `\` or a control character (< 0x20).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (below_space | has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64))) != 0
}

#[inline]
fn byte_needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Escapes valid UTF-8. On x86-64 it goes 16 bytes at a time: with SSSE3 (every x86-64
/// CPU since 2006, detected at run time) every block is escaped whole by shuffles
/// ([`escape_blocks_ssse3`]) — with AVX2, a 32-byte block without specials is stored
/// in one go ([`escape_avx2`]) — otherwise (SSE2, part of every x86-64 CPU) each
/// block is stored whole into the output's spare room, then kept up to its first
/// special, which is escaped. Elsewhere (and for SSE2 and SSSE3, the last bytes) 8 at a time in a
/// `u64`, copying clean runs whole.
///
/// With AVX-512's byte compression (VBMI2: Intel since Ice Lake, AMD since Zen 4)
/// every 32-byte block but those with a control written `\u00XX` is escaped by one
/// compression ([`escape_avx512`]), the last bytes of `s` included.
///
/// Returns true when it found `s` all ASCII on the way (the AVX2 and AVX-512 paths
/// look; the others say false).
fn write_escaped(out: &mut Vec<u8>, s: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    let i = if has_avx512_compress() {
        // SAFETY: the CPU has what `escape_avx512` needs, as just checked.
        return unsafe { escape_avx512(out, s) };
    } else if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available, as just checked.
        return unsafe { escape_avx2(out, s) };
    } else if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: SSSE3 is available, as just checked.
        unsafe { escape_blocks_ssse3(out, s) }
    } else {
        escape_blocks_sse2(out, s)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let i = 0;
    write_escaped_words(out, s, i);
    false
}

/// The 16-byte blocks of `s` escaped onto `out` with SSE2, a special at a time; returns
/// where the blocks end.
#[cfg(target_arch = "x86_64")]
fn escape_blocks_sse2(out: &mut Vec<u8>, s: &[u8]) -> usize {
    let mut i = 0;
    while i + 16 <= s.len() {
        let block: &[u8; 16] = s[i..i + 16].try_into().expect("16 bytes");
        let mask = specials_mask16(block);
        let keep = if mask == 0 { 16 } else { mask.trailing_zeros() as usize };
        put16(out, block, keep);
        i += keep;
        if keep < 16 {
            let (bytes, n) = &ESCAPES[s[i] as usize];
            put6(out, bytes, *n as usize);
            i += 1;
        }
    }
    i
}

/// `s[i..]` escaped onto `out` 8 bytes at a time, copying clean runs whole.
fn write_escaped_words(out: &mut Vec<u8>, s: &[u8], mut i: usize) {
    let mut run_start = i;
    while i < s.len() {
        if i + 8 <= s.len() && !word_needs_escape(u64::from_le_bytes(s[i..i + 8].try_into().unwrap())) {
            i += 8;
            continue;
        }
        let end = (i + 8).min(s.len());
        while i < end {
            if byte_needs_escape(s[i]) {
                out.extend_from_slice(&s[run_start..i]);
                write_escape(out, s[i]);
                run_start = i + 1;
            }
            i += 1;
        }
    }
    out.extend_from_slice(&s[run_start..]);
}

/// `s` escaped onto `out` whole; returns whether it is all ASCII. 32-byte blocks: one
/// with no special is stored whole, one with only quotes and backslashes expanded by
/// [`expand_avx2`], any other escaped as two halves by [`escape_found_ssse3`]; then
/// the last bytes by [`escape_tail_ssse3`].
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn escape_avx2(out: &mut Vec<u8>, s: &[u8]) -> bool {
    use std::arch::x86_64::*;
    let mut i = 0;
    let mut seen = _mm256_setzero_si256();
    while i + 32 <= s.len() {
        // Room for the rest of `s` as it is (escaping only adds), so that a run of
        // blocks without specials is stored with no check, the length in a register.
        let rest = s.len() - i;
        if out.capacity() - out.len() < rest {
            out.reserve(rest);
        }
        let (at, mut len) = (out.as_mut_ptr(), out.len());
        // SAFETY: AVX2 is available (the caller's promise); each load reads
        // `s[i..i + 32]`, in bounds; the stores write as many bytes as the blocks
        // stored take of `s`, at most `rest`, into the spare room made above, and
        // `set_len` covers them.
        let special = unsafe {
            loop {
                let v = _mm256_loadu_si256(s.as_ptr().add(i).cast::<__m256i>());
                seen = _mm256_or_si256(seen, v);
                let quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
                let backslash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
                let control = _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v);
                let mask = _mm256_movemask_epi8(_mm256_or_si256(_mm256_or_si256(quote, backslash), control)) as u32;
                if mask != 0 {
                    break Some((v, mask, control));
                }
                _mm256_storeu_si256(at.add(len).cast::<__m256i>(), v);
                len += 32;
                i += 32;
                if i + 32 > s.len() {
                    break None;
                }
            }
        };
        // SAFETY: the bytes up to `len` were written just above.
        unsafe { out.set_len(len) };
        let Some((v, mask, control)) = special else {
            break;
        };
        // SAFETY: AVX2 is available (the caller's promise), which implies SSSE3; the
        // block is `s[i..i + 32]`, in bounds.
        unsafe {
            if _mm256_testz_si256(control, control) != 0 {
                // Quotes and backslashes only (JSON logs, Windows paths): all four
                // 8-byte groups expanded by two 32-byte shuffles.
                expand_avx2(out, v, mask);
            } else {
                // The halves, with what was found in them.
                let (low, high) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let (low_control, high_control) = (_mm256_castsi256_si128(control), _mm256_extracti128_si256::<1>(control));
                escape_found_ssse3(out, s, i, low, mask & 0xffff, low_control);
                escape_found_ssse3(out, s, i + 16, high, mask >> 16, high_control);
            }
        }
        i += 32;
    }
    let ascii = _mm256_movemask_epi8(seen) == 0;
    // SAFETY: AVX2 implies SSSE3; `i <= s.len()`.
    unsafe { escape_tail_ssse3(out, s, i) };
    ascii && s[i..].is_ascii()
}

/// The last bytes of `s`, from `i` (fewer than 32), escaped onto `out`: a 16-byte
/// block, then the rest (most messages end in some) as a block padded with spaces,
/// which come out as they are and are cut off again.
///
/// # Safety
/// The CPU must have SSSE3, and `i <= s.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn escape_tail_ssse3(out: &mut Vec<u8>, s: &[u8], mut i: usize) {
    if i + 16 <= s.len() {
        // SAFETY: SSSE3 is available (the caller's promise); the block is in bounds.
        unsafe { escape_block_ssse3(out, s, i) };
        i += 16;
    }
    if i < s.len() {
        let tail = s.len() - i;
        let mut padded = [b' '; 16];
        padded[..tail].copy_from_slice(&s[i..]);
        // SAFETY: SSSE3 is available; the padded block is 16 bytes.
        unsafe { escape_block_ssse3(out, &padded, 0) };
        out.truncate(out.len() - (16 - tail));
    }
}

/// Whether the CPU has what [`escape_avx512`] needs (looked up once by the standard
/// library, then a load).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx512_compress() -> bool {
    std::arch::is_x86_feature_detected!("avx512vbmi2")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx2")
}

/// `s` escaped onto `out` whole, 32 bytes at a time; returns whether it is all ASCII.
///
/// Two loops. Until a block has a special, blocks are stored as they are (a load,
/// three compares, a store). From a block with specials on, every block is escaped
/// by compression, whether it has specials or not: `\n`, `\t`, `\r`, `\b`, `\f` are
/// turned into their letters, each byte is widened to two — a `\` and itself — and
/// one compression keeps the `\` only where a byte is special: 32 bytes in, 32 to 64
/// out, the same few instructions whatever the specials, and no branch on them (in
/// text where a block in three has a special, that branch is mispredicted so often
/// that it cost more than the escaping). After [`DENSE_UNTIL_CLEAN`] blocks in a row
/// without specials, it goes back to storing them. The last 1–31 bytes are loaded
/// under a mask and go the same way. Only a block with a control written `\u00XX`
/// goes to the SSSE3 halves (or, last bytes, to [`escape_tail_ssse3`]).
///
/// # Safety
/// The CPU must have what [`has_avx512_compress`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,avx2")]
unsafe fn escape_avx512(out: &mut Vec<u8>, s: &[u8]) -> bool {
    use std::arch::x86_64::*;
    // The controls and the specials of `v` (bit k: byte k) among the bytes in `live`.
    #[target_feature(enable = "avx512bw,avx512vl")]
    #[inline]
    fn specials(v: __m256i, live: u32) -> (u32, u32) {
        let control = _mm256_cmplt_epu8_mask(v, _mm256_set1_epi8(0x20)) & live;
        let quote = _mm256_cmpeq_epi8_mask(v, _mm256_set1_epi8(b'"' as i8));
        let backslash = _mm256_cmpeq_epi8_mask(v, _mm256_set1_epi8(b'\\' as i8));
        (control, quote | backslash | control)
    }
    // The block at `i`: 32 bytes, or the last 1–31 under a mask (zero past them).
    #[target_feature(enable = "avx512bw,avx512vl")]
    #[inline]
    fn block_at(s: &[u8], i: usize) -> (__m256i, usize, u32) {
        let n = (s.len() - i).min(32);
        if n == 32 {
            // SAFETY: the 32 bytes at `i` are in `s`.
            (unsafe { _mm256_loadu_si256(s.as_ptr().add(i).cast::<__m256i>()) }, 32, u32::MAX)
        } else {
            let live = (1u32 << n) - 1;
            // SAFETY: a masked load reads only the `n` bytes at `i`, which are in `s`.
            (unsafe { _mm256_maskz_loadu_epi8(live, s.as_ptr().add(i).cast::<i8>()) }, n, live)
        }
    }
    let mut i = 0;
    let mut seen = _mm256_setzero_si256();
    // By low nibble: the letter of each control character with a two-byte escape.
    let letters = _mm256_broadcastsi128_si256(_mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, b'b' as i8, b't' as i8, b'n' as i8, 0, b'f' as i8, b'r' as i8, 0, 0));
    while i < s.len() {
        // Room for the rest of `s` as it is and for one block's escapes (a block
        // stores 64 bytes at most), so that a run of blocks without specials is
        // stored with no check, the length in a register.
        let rest = s.len() - i;
        if out.capacity() - out.len() < rest + 64 {
            out.reserve(rest + 64);
        }
        let (mut at, mut len, mut cap) = (out.as_mut_ptr(), out.len(), out.capacity());
        // SAFETY (all the intrinsics): the CPU has AVX-512 F, BW, VL and VBMI2 (the
        // caller's promise); the loads read `s[i..i + n]` (`block_at`); a clean block
        // stores 32 bytes at `len` into the room made above (a run stores no more
        // than it takes of `s`), a compressed one 64 bytes, only with 64 bytes of
        // room (checked before each); `set_len` covers only the bytes output.
        unsafe {
            let mut found = None;
            while i + 32 <= s.len() {
                let v = _mm256_loadu_si256(s.as_ptr().add(i).cast::<__m256i>());
                seen = _mm256_or_si256(seen, v);
                let (control, special) = specials(v, u32::MAX);
                if special != 0 {
                    found = Some((v, 32, control, special));
                    break;
                }
                _mm256_storeu_si256(at.add(len).cast::<__m256i>(), v);
                len += 32;
                i += 32;
            }
            if found.is_none() && i < s.len() {
                let (v, n, live) = block_at(s, i);
                seen = _mm256_or_si256(seen, v);
                let (control, special) = specials(v, live);
                if special == 0 {
                    _mm256_storeu_si256(at.add(len).cast::<__m256i>(), v);
                    len += n;
                    i += n;
                } else {
                    found = Some((v, n, control, special));
                }
            }
            out.set_len(len);
            let Some(mut block) = found else { break };
            // Dense: every block escaped by compression until enough come clean.
            let mut clean_run = 0;
            loop {
                let (v, n, control, special) = block;
                let letter = _mm256_shuffle_epi8(letters, v);
                let short = _mm256_test_epi8_mask(letter, letter) & _mm256_cmplt_epu8_mask(v, _mm256_set1_epi8(0x10));
                if control & !short != 0 {
                    // A control written `\u00XX`: the SSSE3 way.
                    out.set_len(len);
                    if n == 32 {
                        let controls = _mm256_movm_epi8(control);
                        let (low, high) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                        let (low_control, high_control) = (_mm256_castsi256_si128(controls), _mm256_extracti128_si256::<1>(controls));
                        escape_found_ssse3(out, s, i, low, special & 0xffff, low_control);
                        escape_found_ssse3(out, s, i + 16, high, special >> 16, high_control);
                    } else {
                        escape_tail_ssse3(out, s, i);
                    }
                    (at, len, cap) = (out.as_mut_ptr(), out.len(), out.capacity());
                } else {
                    let v = _mm256_mask_mov_epi8(v, control, letter);
                    // Byte k becomes the pair (`\`, byte k); the `\` is kept where k is special.
                    let high = _mm512_slli_epi16::<8>(_mm512_cvtepu8_epi16(v));
                    let pairs = _mm512_mask_mov_epi16(high, special, _mm512_or_si512(high, _mm512_set1_epi16(b'\\' as i16)));
                    // Bytes past `n` are zero pairs, and no byte kept is zero (controls are
                    // letters by now): keep the bytes that are not zero.
                    let packed = _mm512_maskz_compress_epi8(_mm512_test_epi8_mask(pairs, pairs), pairs);
                    _mm512_storeu_si512(at.add(len).cast::<__m512i>(), packed);
                    len += n + special.count_ones() as usize;
                }
                i += n;
                // No branch on `special`: the count of clean blocks in a row.
                clean_run = (clean_run + 1) * u32::from(special == 0);
                if i == s.len() || clean_run == DENSE_UNTIL_CLEAN {
                    break;
                }
                if cap - len < 64 {
                    out.set_len(len);
                    out.reserve(s.len() - i + 64);
                    (at, len, cap) = (out.as_mut_ptr(), out.len(), out.capacity());
                }
                let (v, n, live) = block_at(s, i);
                seen = _mm256_or_si256(seen, v);
                let (control, special) = specials(v, live);
                block = (v, n, control, special);
            }
            out.set_len(len);
        }
    }
    _mm256_movemask_epi8(seen) == 0
}

/// Blocks in a row without specials after which [`escape_avx512`] stores blocks as
/// they are again.
#[cfg(target_arch = "x86_64")]
const DENSE_UNTIL_CLEAN: u32 = 4;

/// A 32-byte block whose specials (`mask`, bit `k`: byte `k`) are all `"` or `\`,
/// escaped onto `out`: a `\` before each. Each 8-byte group expands as
/// [`escape_found_ssse3`]'s halves do, from [`EXPAND`]; groups 0 and 2 (the low bytes of
/// each 16-byte lane) by one shuffle, groups 1 and 3 by another.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn expand_avx2(out: &mut Vec<u8>, v: std::arch::x86_64::__m256i, mask: u32) {
    use std::arch::x86_64::*;
    // Four stores of 16 bytes, the last at most 48 bytes in.
    if out.capacity() - out.len() < 64 {
        out.reserve(64);
    }
    let [g0, g1, g2, g3] = [0, 8, 16, 24].map(|shift| &EXPAND[(mask >> shift & 0xff) as usize]);
    // SAFETY (all the intrinsics below): AVX2 is available (the caller's promise); the
    // stores write 16 bytes each, each at most 16 after the one before, into the 64
    // spare bytes made above; `set_len` covers only the bytes the table says are output.
    unsafe {
        let even = _mm256_shuffle_epi8(v, _mm256_set_m128i(g2.shuffle, g0.shuffle));
        let even = _mm256_or_si256(even, _mm256_set_m128i(g2.backslashes, g0.backslashes));
        let odd = _mm256_shuffle_epi8(_mm256_srli_si256::<8>(v), _mm256_set_m128i(g3.shuffle, g1.shuffle));
        let odd = _mm256_or_si256(odd, _mm256_set_m128i(g3.backslashes, g1.backslashes));
        let mut at = out.as_mut_ptr().add(out.len());
        _mm_storeu_si128(at.cast::<__m128i>(), _mm256_castsi256_si128(even));
        at = at.add(g0.len as usize);
        _mm_storeu_si128(at.cast::<__m128i>(), _mm256_castsi256_si128(odd));
        at = at.add(g1.len as usize);
        _mm_storeu_si128(at.cast::<__m128i>(), _mm256_extracti128_si256::<1>(even));
        at = at.add(g2.len as usize);
        _mm_storeu_si128(at.cast::<__m128i>(), _mm256_extracti128_si256::<1>(odd));
        out.set_len(out.len() + g0.len as usize + g1.len as usize + g2.len as usize + g3.len as usize);
    }
}

/// The 16-byte blocks of `s` escaped onto `out` by [`escape_block_ssse3`]; returns
/// where the blocks end.
///
/// # Safety
/// The CPU must have SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn escape_blocks_ssse3(out: &mut Vec<u8>, s: &[u8]) -> usize {
    let mut i = 0;
    while i + 16 <= s.len() {
        // SAFETY: SSSE3 is available (the caller's promise); the block is in bounds.
        unsafe { escape_block_ssse3(out, s, i) };
        i += 16;
    }
    i
}

/// `s[i..i + 16]` escaped onto `out` whole, whatever its specials. A block with a
/// special is taken as two halves of 8 bytes, each expanded by one shuffle from a
/// table indexed by its specials (a `\\` before each, [`EXPAND`]); `\n`, `\t`, `\r`,
/// `\b`, `\f` are first turned into their letters by another. A block holding a
/// control character written `\u00XX` (rare in logs) is escaped byte by byte.
///
/// # Safety
/// The CPU must have SSSE3, and `i + 16 <= s.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn escape_block_ssse3(out: &mut Vec<u8>, s: &[u8], i: usize) {
    use std::arch::x86_64::*;
    // SAFETY: SSSE3 is available and the block in bounds (the caller's promises).
    unsafe {
        let v = _mm_loadu_si128(s.as_ptr().add(i).cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        let mask = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32;
        escape_found_ssse3(out, s, i, v, mask, control);
    }
}

/// [`escape_block_ssse3`] once the block's specials are known: `v` is `s[i..i + 16]`,
/// `mask` its specials (bit `k`: byte `k`), `control` its control characters (0xff
/// bytes). The AVX2 loop passes the halves of a 32-byte block it has looked at.
///
/// # Safety
/// The CPU must have SSSE3, and `i + 16 <= s.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
unsafe fn escape_found_ssse3(
    out: &mut Vec<u8>,
    s: &[u8],
    i: usize,
    v: std::arch::x86_64::__m128i,
    mask: u32,
    control: std::arch::x86_64::__m128i,
) {
    use std::arch::x86_64::*;
    // An escaped block takes at most 32 bytes.
    if out.capacity() - out.len() < 32 {
        out.reserve(32);
    }
    // SAFETY (all the intrinsics below): SSSE3 is available (the caller's promise);
    // every store writes 16 bytes into the 32 spare ones made above (the second at
    // most 16 bytes after the first), and `set_len` covers only the bytes the table
    // says are output.
    unsafe {
        let at = out.as_mut_ptr().add(out.len());
        if mask == 0 {
            _mm_storeu_si128(at.cast::<__m128i>(), v);
            out.set_len(out.len() + 16);
            return;
        }
        let mut v = v;
        if _mm_movemask_epi8(control) != 0 {
            // By low nibble: the letter of each control character with a two-byte escape.
            let letters = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, b'b' as i8, b't' as i8, b'n' as i8, 0, b'f' as i8, b'r' as i8, 0, 0);
            let letter = _mm_shuffle_epi8(letters, v);
            let below_16 = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x0f)), v);
            let short = _mm_andnot_si128(_mm_cmpeq_epi8(letter, _mm_setzero_si128()), below_16);
            if _mm_movemask_epi8(_mm_andnot_si128(short, control)) != 0 {
                escape_one_by_one(out, s[i..i + 16].try_into().expect("16 bytes"), mask);
                return;
            }
            v = _mm_or_si128(_mm_andnot_si128(control, v), _mm_and_si128(control, letter));
        }
        let (low, high) = (&EXPAND[(mask & 0xff) as usize], &EXPAND[(mask >> 8) as usize]);
        let first = _mm_or_si128(_mm_shuffle_epi8(v, low.shuffle), low.backslashes);
        _mm_storeu_si128(at.cast::<__m128i>(), first);
        let at = at.add(low.len as usize);
        let second = _mm_or_si128(_mm_shuffle_epi8(_mm_srli_si128(v, 8), high.shuffle), high.backslashes);
        _mm_storeu_si128(at.cast::<__m128i>(), second);
        out.set_len(out.len() + low.len as usize + high.len as usize);
    }
}

/// A block with a control character written `\u00XX` (ANSI colours' `\u001b`, say):
/// each special (bit `k` of `mask`: byte `k`) escaped from [`ESCAPES`] in turn, the
/// runs between them stored whole.
#[inline(never)]
fn escape_one_by_one(out: &mut Vec<u8>, block: &[u8; 16], mut mask: u32) {
    let mut padded = [0u8; 32];
    padded[..16].copy_from_slice(block);
    let mut from = 0;
    while mask != 0 {
        let k = mask.trailing_zeros() as usize;
        put16(out, padded[from..from + 16].try_into().expect("16 bytes"), k - from);
        let (bytes, n) = &ESCAPES[block[k] as usize];
        put6(out, bytes, *n as usize);
        from = k + 1;
        mask &= mask - 1;
    }
    put16(out, padded[from..from + 16].try_into().expect("16 bytes"), 16 - from);
}

/// How 8 bytes with specials at the bits of the index expand: which input byte each
/// output byte is (`0x80`: none, zero), the `\\` ORed in before each special, and the
/// output length.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(16))]
struct Expand {
    shuffle: std::arch::x86_64::__m128i,
    backslashes: std::arch::x86_64::__m128i,
    len: u8,
}

#[cfg(target_arch = "x86_64")]
static EXPAND: [Expand; 256] = {
    const fn m128(bytes: [u8; 16]) -> std::arch::x86_64::__m128i {
        // SAFETY: `__m128i` is 16 plain bytes.
        unsafe { std::mem::transmute::<[u8; 16], std::arch::x86_64::__m128i>(bytes) }
    }
    let mut table = [const { Expand { shuffle: m128([0x80; 16]), backslashes: m128([0; 16]), len: 0 } }; 256];
    let mut m = 0;
    while m < 256 {
        let (mut shuffle, mut backslashes) = ([0x80u8; 16], [0u8; 16]);
        let (mut k, mut j) = (0, 0);
        while k < 8 {
            if m & (1 << k) != 0 {
                backslashes[j] = b'\\';
                j += 1;
            }
            shuffle[j] = k as u8;
            j += 1;
            k += 1;
        }
        table[m] = Expand { shuffle: m128(shuffle), backslashes: m128(backslashes), len: j as u8 };
        m += 1;
    }
    table
};

/// Appends the first `keep` (≤ 16) bytes of `block` to `out`: the 16 are stored into
/// the spare capacity in one unaligned store, and the length grows by `keep`.
#[inline]
pub(crate) fn put16(out: &mut Vec<u8>, block: &[u8; 16], keep: usize) {
    // Checked here: `reserve` itself is not inlined and costs a call per block.
    if out.capacity() - out.len() < 16 {
        out.reserve(16);
    }
    // SAFETY: there are 16 bytes of spare capacity after `len` (made above); the
    // copy writes exactly those, and `set_len` covers only the `keep` ≤ 16 of them
    // that were initialized from `block`.
    unsafe {
        std::ptr::copy_nonoverlapping(block.as_ptr(), out.as_mut_ptr().add(out.len()), 16);
        out.set_len(out.len() + keep.min(16));
    }
}

/// Appends the first `keep` (≤ 6) bytes of `bytes` (an escape from [`ESCAPES`], a
/// short rewrite) by one 16-byte store.
#[inline]
pub(crate) fn put6(out: &mut Vec<u8>, bytes: &[u8; 6], keep: usize) {
    let mut block = [0u8; 16];
    block[..6].copy_from_slice(bytes);
    put16(out, &block, keep.min(6));
}

/// Bit `k` set when byte `k` of the 16 needs escaping.
#[cfg(target_arch = "x86_64")]
#[inline]
fn specials_mask16(block: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86-64 baseline; the load reads the 16 bytes of the
    // array, and `loadu` has no alignment requirement.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // v <= 0x1f (unsigned) exactly when min(v, 0x1f) == v.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// How each byte is written escaped, and in how many bytes (0 for bytes that need no
/// escape), as [`write_escape`] writes it: a table for the SSE2 loop.
pub(crate) static ESCAPES: [([u8; 6], u8); 256] = escapes();

const fn escapes() -> [([u8; 6], u8); 256] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [([0u8; 6], 0u8); 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = ([b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 15]], 6);
        b += 1;
    }
    table[b'"' as usize] = ([b'\\', b'"', 0, 0, 0, 0], 2);
    table[b'\\' as usize] = ([b'\\', b'\\', 0, 0, 0, 0], 2);
    table[b'\n' as usize] = ([b'\\', b'n', 0, 0, 0, 0], 2);
    table[b'\r' as usize] = ([b'\\', b'r', 0, 0, 0, 0], 2);
    table[b'\t' as usize] = ([b'\\', b't', 0, 0, 0, 0], 2);
    table[0x08] = ([b'\\', b'b', 0, 0, 0, 0], 2);
    table[0x0c] = ([b'\\', b'f', 0, 0, 0, 0], 2);
    table
}

/// Writes the escape of one byte that needs one (see [`byte_needs_escape`]).
pub(crate) fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Stream;

    fn encode(ev: Event<'_>, fmt: MessageFormat, kube: &[u8]) -> String {
        let mut out = Vec::new();
        EventEncoder::new(fmt).encode(&ev, kube, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn ev(msg: &[u8]) -> Event<'_> {
        Event::raw(0, Stream::Stdout, msg)
    }

    #[test]
    fn escapes_what_json_requires_and_nothing_else() {
        let s = encode(ev("a\"b\\c\n\t\u{1}<>&é日😀/".as_bytes()), MessageFormat::String, b"");
        assert_eq!(
            s,
            "{\"time\":\"1970-01-01T00:00:00.000000000Z\",\"stream\":\"stdout\",\"message\":\"a\\\"b\\\\c\\n\\t\\u0001<>&é日😀/\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["message"], "a\"b\\c\n\t\u{1}<>&é日😀/");
    }

    #[test]
    fn the_escape_table_writes_what_write_escape_writes() {
        for b in 0..=255u8 {
            let (bytes, n) = &ESCAPES[b as usize];
            if byte_needs_escape(b) {
                let mut want = Vec::new();
                write_escape(&mut want, b);
                assert_eq!(&bytes[..*n as usize], &want[..], "byte {b:#x}");
            } else {
                assert_eq!(*n, 0, "byte {b:#x} needs no escape");
            }
        }
    }

    /// `s` (valid UTF-8) escaped by every way the CPU has: each block path with the
    /// words after it, the words alone. With whether the path said `s` is ASCII.
    fn escaped_on_every_path(s: &[u8]) -> Vec<(&'static str, Vec<u8>, bool)> {
        let mut all = Vec::new();
        let mut words = Vec::new();
        write_escaped_words(&mut words, s, 0);
        all.push(("words", words, false));
        #[cfg(target_arch = "x86_64")]
        {
            let mut out = Vec::new();
            let at = escape_blocks_sse2(&mut out, s);
            write_escaped_words(&mut out, s, at);
            all.push(("SSE2", out, false));
            if std::arch::is_x86_feature_detected!("ssse3") {
                let mut out = Vec::new();
                // SAFETY: SSSE3 is available, as just checked.
                let at = unsafe { escape_blocks_ssse3(&mut out, s) };
                write_escaped_words(&mut out, s, at);
                all.push(("SSSE3", out, false));
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut out = Vec::new();
                // SAFETY: AVX2 is available, as just checked.
                let ascii = unsafe { escape_avx2(&mut out, s) };
                all.push(("AVX2", out, ascii));
            }
            if has_avx512_compress() {
                let mut out = Vec::new();
                // SAFETY: the CPU has what it needs, as just checked.
                let ascii = unsafe { escape_avx512(&mut out, s) };
                all.push(("AVX-512", out, ascii));
            }
        }
        all
    }

    /// Every path the CPU has writes what serde_json writes; one that says `s` is ASCII
    /// is right.
    fn check_every_path(s: &str) {
        let want = serde_json::to_string(s).unwrap();
        for (path, got, ascii) in escaped_on_every_path(s.as_bytes()) {
            assert_eq!(String::from_utf8(got).unwrap(), want[1..want.len() - 1], "{path}: {s:?}");
            assert!(!ascii || s.is_ascii(), "{path} took {s:?} for ASCII");
        }
    }

    #[test]
    fn escape_scan_finds_specials_at_every_position() {
        // Every ASCII byte (short escapes, `\u00XX`, plain) at every place of blocks,
        // masked or padded last bytes and both, on every path.
        for len in 0..70 {
            for pos in 0..len {
                for special in 0u8..0x80 {
                    let mut msg = vec![b'x'; len];
                    msg[pos] = special;
                    let mut out = Vec::new();
                    write_json_string(&mut out, &msg);
                    let back: String = serde_json::from_slice(&out).unwrap();
                    assert_eq!(back.as_bytes(), &msg[..]);
                    check_every_path(std::str::from_utf8(&msg).unwrap());
                }
            }
        }
    }

    #[test]
    fn every_path_says_ascii_only_of_ascii() {
        for len in 0..80 {
            for pos in 0..len {
                let mut msg = "y".repeat(len);
                msg.replace_range(pos..pos + 1, "\u{e9}");
                check_every_path(&msg);
                let (ascii_msg, wide) = ("y".repeat(len), escaped_on_every_path(msg.as_bytes()));
                assert!(wide.iter().all(|(_, _, ascii)| !ascii), "{msg:?}");
                assert!(escaped_on_every_path(ascii_msg.as_bytes()).iter().all(|(p, _, ascii)| *ascii || ["words", "SSE2", "SSSE3"].contains(p)));
            }
        }
    }

    /// Values dense in specials of every kind (blocks with several, all of one half,
    /// controls short and long, multi-byte characters across blocks), as serde_json
    /// writes them, on every block path: AVX-512, AVX2 and SSSE3 when the CPU has
    /// them, SSE2, words.
    #[test]
    fn escapes_dense_specials_as_serde_json_does_on_every_path() {
        let alphabet: [&str; 12] = ["\"", "\\", "\n", "\t", "\r", "\u{8}", "\u{c}", "\u{1}", "\u{1b}", "a", "é", "日😀"];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for case in 0..4000 {
            let mut msg = String::new();
            let len = case % 90;
            while msg.len() < len {
                crate::xorshift(&mut state);
                // Half the cases with no long control, so whole blocks take the shuffles.
                let choices = if case % 2 == 0 { 7 } else { alphabet.len() };
                msg.push_str(alphabet[(state % choices as u64) as usize]);
                if state.is_multiple_of(3) {
                    msg.push_str("plain text");
                }
            }
            let want = serde_json::to_string(&msg).unwrap();
            let mut got = Vec::new();
            write_json_string(&mut got, msg.as_bytes());
            assert_eq!(String::from_utf8(got).unwrap(), want, "{msg:?}");
            check_every_path(&msg);
        }
    }

    /// Runs of clean blocks (up to twice as many in a row as end the AVX-512 path's
    /// compressing) between blocks with specials, at every alignment, and long runs of
    /// specials only (each block doubling: the room made is outgrown mid-loop), as
    /// serde_json writes them, on every path.
    #[test]
    fn clean_runs_between_special_blocks_come_out_as_serde_json_writes_them() {
        let specials: [&str; 8] = ["\"", "\\", "\n", "\t", "\u{1}", "\u{1b}", "é", "日"];
        let mut state = 0x6a09_e667_f3bc_c908_u64;
        for case in 0..3000 {
            let mut msg = "p".repeat(case % 37);
            for _ in 0..case % 11 {
                crate::xorshift(&mut state);
                let clean_blocks = (state % (2 * DENSE_UNTIL_CLEAN as u64 + 1)) as usize;
                msg.push_str(&"c".repeat(32 * clean_blocks + (state >> 8) as usize % 32));
                for _ in 0..1 + (state >> 16) % 3 {
                    crate::xorshift(&mut state);
                    msg.push_str(specials[(state % specials.len() as u64) as usize]);
                }
            }
            check_every_path(&msg);
        }
        for len in [31, 32, 33, 64, 100, 257, 700, 2049] {
            for special in ["\"", "\\", "\n", "\u{1}"] {
                check_every_path(&special.repeat(len));
                check_every_path(&format!("{}{}", "c".repeat(len), special.repeat(len)));
            }
        }
    }

    /// Blocks whose specials are all `"` and `\\`, in every density (the AVX2 path
    /// expands them whole), as serde_json writes them.
    #[test]
    fn quotes_and_backslashes_come_out_as_serde_json_writes_them() {
        let alphabet: [&str; 6] = ["\"", "\\", "a", "plain text ", "é", "{\"k\":\"v\"}"];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for case in 0..4000 {
            let mut msg = String::new();
            // From a special in nearly every byte to one every few dozen.
            let choices = 2 + case % 5;
            while msg.len() < case % 200 {
                crate::xorshift(&mut state);
                msg.push_str(alphabet[(state % choices as u64) as usize]);
            }
            let mut got = Vec::new();
            write_json_string(&mut got, msg.as_bytes());
            assert_eq!(String::from_utf8(got).unwrap(), serde_json::to_string(&msg).unwrap(), "{msg:?}");
            check_every_path(&msg);
        }
    }

    #[test]
    fn replaces_invalid_utf8() {
        let s = encode(ev(b"ok \xff\xfe then \xe6\x97"), MessageFormat::String, b"");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["message"], "ok \u{FFFD}\u{FFFD} then \u{FFFD}");
        // Long enough for whole blocks, with the bad byte, or the only byte beyond
        // ASCII, in a block or after them: escaped first, then checked.
        for at in [0, 20, 40, 70, 100] {
            for bad in [&b"\xff"[..], "é".as_bytes()] {
                let mut msg = b"\"quoted\" and plain text long enough for whole blocks of it, \t twice over...".to_vec();
                let at = at.min(msg.len());
                msg.splice(at..at, bad.iter().copied());
                let mut out = Vec::new();
                write_json_string(&mut out, &msg);
                let want = serde_json::to_string(&String::from_utf8_lossy(&msg)).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), want, "{msg:?}");
            }
        }
    }

    #[test]
    fn flags_and_kubernetes_in_order() {
        let meta = KubeMeta {
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: Some("u".into()),
            container: "c".into(),
            restart_count: Some(2),
        };
        let e = Event { truncated: true, partial: true, stream: Stream::Stderr, ..ev(b"m") };
        assert_eq!(
            encode(e, MessageFormat::String, &meta.json_fragment()),
            "{\"time\":\"1970-01-01T00:00:00.000000000Z\",\"stream\":\"stderr\",\"message\":\"m\",\"truncated\":true,\"partial\":true,\"kubernetes\":{\"namespace\":\"ns\",\"pod\":\"p\",\"pod_uid\":\"u\",\"container\":\"c\",\"restart_count\":2}}\n"
        );
    }

    #[test]
    fn a_grouped_event_says_how_many_lines_it_holds() {
        let e = Event { lines: 42, ..ev(b"java.lang.Error: x\n\tat A.b(A.java:1)") };
        let v: serde_json::Value = serde_json::from_str(&encode(e, MessageFormat::String, b"")).unwrap();
        assert_eq!(v["multiline"], 42);
        assert_eq!(v["message"], "java.lang.Error: x\n\tat A.b(A.java:1)");
        assert!(!encode(ev(b"one"), MessageFormat::String, b"").contains("multiline"));
    }

    /// An escaped message (a Docker value passed through) is quoted as it is; the
    /// `json` format looks at it unescaped.
    #[test]
    fn an_escaped_message_is_quoted_as_it_is_and_unescaped_where_looked_at() {
        let e = Event { escaped: true, ..ev(br#"{\"level\":\"info\",\"msg\":\"a\\tb \\u0001\"}"#) };
        let s = encode(e, MessageFormat::String, b"");
        assert!(s.contains(r#""message":"{\"level\":\"info\",\"msg\":\"a\\tb \\u0001\"}"}"#), "{s}");
        let obj = encode(e, MessageFormat::Json, b"");
        assert!(obj.contains(r#""message":{"level":"info","msg":"a\tb \u0001"}}"#), "{obj}");
        let v: serde_json::Value = serde_json::from_str(&obj).unwrap();
        assert_eq!(v["message"]["msg"], "a\tb \u{1}");
        let text = Event { escaped: true, ..ev(br#"not \"an object\"\n"#) };
        let v: serde_json::Value = serde_json::from_str(&encode(text, MessageFormat::Json, b"")).unwrap();
        assert_eq!(v["message"], "not \"an object\"\n");
    }

    #[test]
    fn json_message_format_embeds_objects_only() {
        let obj = encode(ev(br#" {"level":"info","n":1} "#), MessageFormat::Json, b"");
        assert!(obj.contains(r#""message":{"level":"info","n":1}}"#), "{obj}");
        for not_obj in [&b"[1,2]"[..], b"{broken", b"plain", b"{\"a\":1} trailing"] {
            let s = encode(ev(not_obj), MessageFormat::Json, b"");
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            assert!(v["message"].is_string(), "{s}");
        }
    }

    /// `bytes` cut at `cuts` into pieces laid out in a window between other bytes, as
    /// lines in a read buffer, every third in the decoder's own bytes: the window, the
    /// own bytes and each piece's place.
    fn laid_out(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, Vec<u8>, Vec<(u64, u32)>) {
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        let (mut window, mut own, mut places, mut from) = (b"line head ".to_vec(), b"other".to_vec(), Vec::new(), 0);
        for (i, end) in ends.into_iter().enumerate() {
            let len = (end - from) as u32;
            if i % 3 == 2 {
                places.push((crate::event::message::OWN | own.len() as u64, len));
                own.extend_from_slice(&bytes[from..end]);
            } else {
                places.push((1000 + window.len() as u64, len));
                window.extend_from_slice(&bytes[from..end]);
            }
            window.extend_from_slice(b"\n2026 stdout P ");
            from = end;
        }
        (window, own, places)
    }

    fn token() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            4 => "[a-z {}:,\"\\\\\n\t]{1,8}".prop_map(String::into_bytes),
            2 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ]
    }

    proptest::proptest! {
        /// A message in pieces (a split line left where it was read) encodes byte for
        /// byte as the same message whole, cut anywhere: between the bytes of a
        /// character, next to invalid ones, into empty pieces; as a string and with the
        /// `json` format.
        #[test]
        fn a_raw_message_in_pieces_encodes_as_the_message_whole(
            tokens in proptest::collection::vec(token(), 0..40),
            cuts in proptest::collection::vec(0usize..120, 0..6),
        ) {
            let bytes = tokens.concat();
            let (window, own, places) = laid_out(&bytes, &cuts);
            let cut = Event { message: Message::Pieces { window: &window, offset: 1000, own: &own, pieces: &places }, ..ev(b"") };
            assert_eq!(cut.message.to_vec(), bytes);
            for fmt in [MessageFormat::String, MessageFormat::Json] {
                proptest::prop_assert_eq!(encode(cut, fmt, b""), encode(ev(&bytes), fmt, b""));
            }
        }

        /// The same for an escaped message (Docker values passed through): each piece
        /// an escaped value of its own.
        #[test]
        fn an_escaped_message_in_pieces_encodes_as_the_message_whole(
            texts in proptest::collection::vec(proptest::collection::vec(token(), 0..8), 1..6),
        ) {
            let mut escaped = Vec::new();
            let mut cuts = Vec::new();
            for text in &texts {
                write_json_string_body(&mut escaped, String::from_utf8_lossy(&text.concat()).as_bytes());
                cuts.push(escaped.len());
            }
            let (window, own, places) = laid_out(&escaped, &cuts);
            let cut = Event { escaped: true, message: Message::Pieces { window: &window, offset: 1000, own: &own, pieces: &places }, ..ev(b"") };
            let whole = Event { escaped: true, ..ev(&escaped) };
            for fmt in [MessageFormat::String, MessageFormat::Json] {
                proptest::prop_assert_eq!(encode(cut, fmt, b""), encode(whole, fmt, b""));
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            proptest::prop_assert_eq!(cut.text(&mut a), whole.text(&mut b));
        }
    }
}
