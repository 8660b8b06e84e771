//! One turn's reading of the current file: lines handed to the decoder within the
//! turn's budget (a split message finished first, its pieces left in the read buffer
//! meanwhile), and the read buffer given back at the end so that no stream holds one
//! between turns.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};

use super::members::{Current, Source};
use super::{FINISH_STEP, MAX_POOLED_BUFFERS, MAX_POOLED_CAPACITY};
use crate::decode::{FileDecoder, Window};
use crate::event::{Event, Nanos};
use crate::tail::lines::{LineKind, READ_SIZE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Drained {
    /// No line was available.
    None,
    /// Lines were read until the file had no more.
    Some,
    /// The budget ran out first.
    Budget,
}

/// A split message waits where it was read while it spreads over this much of the
/// file at most: half a read buffer, so that keeping it never grows the buffer (a
/// refill keeps it and reads at least a quarter of [`READ_SIZE`] more).
pub(super) const IN_PLACE_SPAN: u64 = READ_SIZE as u64 / 2;

/// Hands the lines of the current file to the decoder within the turn's budget (see
/// [`drain_kept`]); the pieces of a split message left in the read buffer are copied
/// out at the end, since the buffer goes back to the pool.
pub(super) fn drain_lines<F: FnMut(&Event<'_>, &[u8])>(
    cur: &mut Current,
    decoder: &mut FileDecoder,
    kube: &[u8],
    budget: usize,
    read_time: Nanos,
    emit: &mut F,
) -> io::Result<Drained> {
    let drained = drain_kept(cur, decoder, kube, budget, read_time, emit);
    let (kept, offset) = cur.reader.kept();
    decoder.detach(Window { bytes: kept, offset: cur.base + offset });
    cur.reader.keep_from(None);
    drained
}

/// [`drain_lines`], leaving the pieces of a split message in the read buffer.
fn drain_kept<F: FnMut(&Event<'_>, &[u8])>(
    cur: &mut Current,
    decoder: &mut FileDecoder,
    kube: &[u8],
    budget: usize,
    read_time: Nanos,
    emit: &mut F,
) -> io::Result<Drained> {
    // The budget counts what is handed out; reads are sized to what is left of it, so
    // little is read past the end of a turn (and read again at the next).
    let start = cur.reader.offset();
    let mut any = Drained::None;
    let emit = &mut |e: &Event<'_>| emit(e, kube);
    // A message the runtime split is read to its last piece before the turn ends, so
    // that no stream holds one between turns (on a node catching up, nearly every turn
    // would end inside one: most bytes are in long lines). That may take the turn past
    // its budget by about one message, at most by `overrun` (pieces of two streams
    // interleaving for longer wait for the next turn).
    let overrun = (4 * cur.reader.max_line()) as u64;
    let budget = budget as u64;
    // Once the budget is spent, the lines already read are handed out and no more is
    // read — but for a split message open then, which is finished, and ends the turn:
    // what was read past it is read again next turn (see `release_buffer`).
    let mut finishing = false;
    loop {
        let spent = cur.reader.offset() - start;
        let open = decoder.has_pending();
        if spent >= budget {
            if open {
                finishing = true;
            } else if finishing {
                return Ok(Drained::Budget);
            }
        }
        // (Finishing a message past the budget reads in small steps: what follows it
        // is read again next turn.)
        let left = if spent < budget {
            budget - spent
        } else if open {
            (budget + overrun).saturating_sub(spent).min(FINISH_STEP)
        } else {
            0
        } as usize;
        let Some(line) = cur.reader.next_line_reading(left)? else {
            return Ok(if left == 0 { Drained::Budget } else { any });
        };
        any = Drained::Some;
        let offset = cur.base + line.offset;
        if line.kind == LineKind::Overlong {
            decoder.overlong_line(line.bytes, offset, read_time, emit);
            // What is skipped of it is not to be kept.
            let (kept, at) = cur.reader.kept();
            decoder.detach(Window { bytes: kept, offset: cur.base + at });
        } else {
            let window = Window { bytes: line.window, offset: cur.base + line.window_offset };
            decoder.line_in(window, offset, read_time, emit);
        }
        cur.reader.keep_from(decoder.keep_from().map(|at| at - cur.base));
    }
}

/// At the end of a turn, the read buffer goes back to the pool, so that a stream
/// holds none between turns whatever the number of streams: an incomplete last line
/// is read again next turn from a plain file (the descriptor moves back over it), or
/// kept in an exact-size copy from a gzip stream (which cannot move back).
pub(super) fn release_buffer(cur: &mut Current) -> Option<Vec<u8>> {
    if cur.reader.buffered() > 0 {
        if let Source::Plain(f) = cur.reader.get_ref() {
            let held = cur.reader.buffered() as i64;
            let mut f: &File = f;
            if f.seek(SeekFrom::Current(-held)).is_ok() {
                cur.reader.unread_held();
                return cur.reader.reclaim();
            }
        }
        return cur.reader.shrink();
    }
    cur.reader.reclaim()
}

/// Keeps a read buffer for the next turn, unless enough are kept or it grew for a long
/// line (the memory a burst of long lines took is given back).
pub(super) fn give_back(pool: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if pool.len() < MAX_POOLED_BUFFERS && (READ_SIZE..=MAX_POOLED_CAPACITY).contains(&buf.capacity()) {
        pool.push(buf);
    }
}
