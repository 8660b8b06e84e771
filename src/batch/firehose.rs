//! Firehose request shaping: JSON lines → records → `PutRecordBatch` requests.
//!
//! Firehose bills every record rounded up to the next 5 KiB, and concatenates records
//! into S3 objects with no delimiter. So events are packed many to a record (up to
//! [`MAX_RECORD_BYTES`]), every record ends with `\n`, and a record never splits an
//! event: S3 objects are then plain JSON lines and the bill is close to the payload.
//! `aggregate = false` sends one event per record (for consumers that need it).
//!
//! A record is not copied out of the chunks its lines came in: it holds runs of them
//! ([`RecordData`], a handle and a range each), and the request body's base64 is
//! written from those runs straight (`sink::aws::firehose::request_body`): the one
//! pass over each byte between the buffer and the wire. A chunk's buffer goes back
//! for reuse once the last record holding it is delivered.
//!
//! An event longer than a record cannot be sent: it is set aside (dead-lettered) for
//! the caller to keep and count, never retried forever. `decode.max_message_bytes`
//! keeps events below this in practice.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;
use smallvec::SmallVec;

/// A record's limit, before base64 (Firehose quota).
pub const MAX_RECORD_BYTES: usize = 1_000 * 1024;
/// Records per `PutRecordBatch`.
pub const MAX_BATCH_RECORDS: usize = 500;
/// Bytes per `PutRecordBatch` (records' data).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Firehose bills each record rounded up to this.
pub const BILLING_UNIT: u64 = 5 * 1024;

/// What AWS bills for a record of `len` bytes.
pub fn billed_bytes(len: usize) -> u64 {
    (len as u64).div_ceil(BILLING_UNIT).max(1) * BILLING_UNIT
}

/// A record: whole JSON lines, ending with `\n`, with the tags (buffer sequence
/// numbers) of the first and last chunk whose lines it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirehoseRecord {
    pub data: RecordData,
    pub first: u64,
    pub last: u64,
}

/// A record's bytes where they already are: runs of the chunks its lines came in
/// (a chunk's handle and a range, never a copy), in order; a line that came without
/// its `\n` gets a static one. Most records are one or two runs: one event, or up to
/// a megabyte of lines across a chunk's end.
#[derive(Debug, Clone, Default)]
pub struct RecordData {
    runs: SmallVec<[Run; 2]>,
    len: usize,
}

#[derive(Debug, Clone)]
struct Run {
    chunk: Bytes,
    range: Range<usize>,
}

impl RecordData {
    /// Appends `chunk[range]`; a run that goes on where the last one ended, in the
    /// same chunk, only lengthens it.
    pub fn push(&mut self, chunk: &Bytes, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.len += range.len();
        if let Some(last) = self.runs.last_mut() {
            let same_chunk = last.chunk.as_ptr() == chunk.as_ptr() && last.chunk.len() == chunk.len();
            if same_chunk && last.range.end == range.start {
                last.range.end = range.end;
                return;
            }
        }
        self.runs.push(Run { chunk: chunk.clone(), range });
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record's bytes, run by run.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.runs.iter().map(|r| &r.chunk[r.range.clone()])
    }

    /// The record's bytes in one buffer (a copy, for tests).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces().flatten().copied().collect()
    }

    /// The handles of the chunks it holds, to hand back once it is delivered: the
    /// last holder of a chunk's buffer can give it back for reuse.
    pub fn into_chunks(self) -> impl Iterator<Item = Bytes> {
        self.runs.into_iter().map(|r| r.chunk)
    }
}

impl PartialEq for RecordData {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.pieces().flatten().eq(other.pieces().flatten())
    }
}

impl Eq for RecordData {}

/// Packs JSON lines into records.
#[derive(Debug)]
pub struct Aggregator {
    record_max: usize,
    aggregate: bool,
    /// Events per record, at most; 0: as many as fit.
    max_events: usize,
    current: RecordData,
    /// Events in `current`, counted when `max_events` limits them.
    current_events: usize,
    /// Tags of the lines in `current`.
    current_tags: Option<(u64, u64)>,
    records: Vec<FirehoseRecord>,
    oversize: Vec<Vec<u8>>,
}

impl Aggregator {
    /// `record_max` is clamped to 1 ..= [`MAX_RECORD_BYTES`].
    pub fn new(record_max: usize, aggregate: bool) -> Self {
        Self {
            record_max: record_max.clamp(1, MAX_RECORD_BYTES),
            aggregate,
            max_events: 0,
            current: RecordData::default(),
            current_events: 0,
            current_tags: None,
            records: Vec::new(),
            oversize: Vec::new(),
        }
    }

    /// At most `max` events per record (0: as many as fit): Firehose's dynamic
    /// partitioning splits an aggregated record into at most 500 events.
    pub fn with_max_events(mut self, max: usize) -> Self {
        self.max_events = max;
        self
    }

    pub fn record_max(&self) -> usize {
        self.record_max
    }

    /// Adds the JSON lines of `chunk` (each ending in `\n`; a last line without one
    /// gets it), tagged `tag`. Tags must not decrease. The records hold runs of
    /// `chunk` itself, not copies.
    pub fn push(&mut self, chunk: &Bytes, tag: u64) {
        let mut at = 0;
        while at < chunk.len() {
            let rest = &chunk[at..];
            let run = self.whole_lines_that_fit(rest);
            if run > 0 {
                self.append_run(chunk, at..at + run, tag);
                at += run;
                continue;
            }
            let end = at + memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            self.push_piece(chunk, at..end, tag);
            at = end;
        }
    }

    /// How many bytes at the start of `lines` are whole lines that all go into the
    /// record being filled, as they are: when events are aggregated without a count
    /// limit, the longest run that fits, found by one search back from the room left
    /// (so a run of short lines is taken at once, not line by line). 0 when the next
    /// line has to go through [`Self::push_piece`] (it does not fit, or counts apply).
    fn whole_lines_that_fit(&self, lines: &[u8]) -> usize {
        if !self.aggregate || self.max_events > 0 {
            return 0;
        }
        let room = self.record_max - self.current.len();
        let window = &lines[..lines.len().min(room)];
        memchr::memrchr(b'\n', window).map_or(0, |i| i + 1)
    }

    /// Appends `chunk[range]`, whole lines ending in `\n` that fit in the open record.
    fn append_run(&mut self, chunk: &Bytes, range: Range<usize>, tag: u64) {
        self.current.push(chunk, range);
        self.extend_tags(tag);
    }

    /// Adds one JSON line (an event cut to fit, say); one longer than a record is set
    /// aside (see [`Self::take_oversize`]).
    pub fn push_line(&mut self, line: Bytes, tag: u64) {
        self.push_piece(&line, 0..line.len(), tag);
    }

    /// Adds the one line `chunk[range]`.
    fn push_piece(&mut self, chunk: &Bytes, range: Range<usize>, tag: u64) {
        let line = &chunk[range.clone()];
        let unterminated = line.last() != Some(&b'\n');
        let len = line.len() + usize::from(unterminated);
        if len > self.record_max {
            self.oversize.push(with_newline(line));
            return;
        }
        let full = self.max_events > 0 && self.current_events >= self.max_events;
        if !self.aggregate || full || self.current.len() + len > self.record_max {
            self.seal();
        }
        self.current.push(chunk, range);
        if unterminated {
            self.current.push(&Bytes::from_static(b"\n"), 0..1);
        }
        self.current_events += 1;
        self.extend_tags(tag);
        if !self.aggregate {
            self.seal();
        }
    }

    /// Notes that the open record holds lines of the chunk tagged `tag`.
    fn extend_tags(&mut self, tag: u64) {
        self.current_tags = Some(match self.current_tags {
            Some((first, _)) => (first, tag),
            None => (tag, tag),
        });
    }

    /// Closes the record being filled.
    pub fn seal(&mut self) {
        if let Some((first, last)) = self.current_tags.take() {
            self.records.push(FirehoseRecord { data: std::mem::take(&mut self.current), first, last });
            self.current_events = 0;
        }
    }

    /// The tags of the record being filled, if any.
    pub fn open_tags(&self) -> Option<(u64, u64)> {
        self.current_tags
    }

    /// Bytes in the record being filled.
    pub fn open_bytes(&self) -> usize {
        self.current.len()
    }

    /// Sealed records, oldest first.
    pub fn take_records(&mut self) -> Vec<FirehoseRecord> {
        std::mem::take(&mut self.records)
    }

    /// Events too large for any record.
    pub fn take_oversize(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.oversize)
    }
}

/// `line` (a JSON event ending in `\n`) cut to at most `max` bytes: its `message` is
/// shortened at a character boundary and `"truncated": true` set. `None` when it
/// cannot be (not a JSON object, no string message, or the rest alone is too long).
pub fn truncate_event(line: &[u8], max: usize) -> Option<Vec<u8>> {
    let mut event: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
    let message = event.get("message")?.as_str()?.to_owned();
    event.insert("truncated".into(), serde_json::Value::Bool(true));
    let mut keep = message.len();
    loop {
        let mut cut = keep.min(message.len());
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        event.insert("message".into(), serde_json::Value::String(message[..cut].to_owned()));
        let mut out = serde_json::to_vec(&event).ok()?;
        out.push(b'\n');
        if out.len() <= max {
            return Some(out);
        }
        if cut == 0 {
            return None;
        }
        keep = cut.saturating_sub(out.len() - max);
    }
}

fn with_newline(line: &[u8]) -> Vec<u8> {
    let mut v = line.to_vec();
    if v.last() != Some(&b'\n') {
        v.push(b'\n');
    }
    v
}

/// Takes the next request's records from the front of `queue`: at most
/// `max_records` and `max_bytes` (each capped at AWS's limit), but at least one.
pub fn take_batch(queue: &mut VecDeque<FirehoseRecord>, max_records: usize, max_bytes: usize) -> Vec<FirehoseRecord> {
    let (max_records, max_bytes) = (max_records.min(MAX_BATCH_RECORDS), max_bytes.min(MAX_BATCH_BYTES));
    let mut batch: Vec<FirehoseRecord> = Vec::new();
    let mut bytes = 0;
    while let Some(r) = queue.front() {
        let fits = batch.is_empty() || (batch.len() < max_records && bytes + r.data.len() <= max_bytes);
        if !fits {
            break;
        }
        bytes += r.data.len();
        batch.extend(queue.pop_front());
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    fn data(bytes: &[u8]) -> RecordData {
        let mut d = RecordData::default();
        d.push(&chunk(bytes), 0..bytes.len());
        d
    }

    /// Dynamic partitioning splits a record into at most 500 events: with
    /// `max_events`, no record holds more, and the bytes cap still applies.
    #[test]
    fn records_hold_at_most_max_events() {
        let mut a = Aggregator::new(MAX_RECORD_BYTES, true).with_max_events(500);
        let line = format!("{{\"message\":\"{}\"}}\n", "x".repeat(200));
        for tag in 0..1234u64 {
            a.push(&chunk(line.as_bytes()), tag);
        }
        a.seal();
        let counts: Vec<usize> = a.take_records().iter().map(|r| r.data.to_vec().iter().filter(|&&c| c == b'\n').count()).collect();
        assert_eq!(counts, [500, 500, 234]);
        let mut a = Aggregator::new(10_000, true).with_max_events(500);
        for tag in 0..100u64 {
            a.push(&chunk(line.as_bytes()), tag);
        }
        a.seal();
        assert!(a.take_records().iter().all(|r| r.data.len() <= 10_000), "the byte cap still holds");
    }

    /// `records` cut into requests by [`take_batch`] at AWS's limits, as index ranges.
    fn batches(records: &[Vec<u8>]) -> Vec<std::ops::Range<usize>> {
        let mut queue: VecDeque<FirehoseRecord> = records.iter().map(|d| FirehoseRecord { data: data(d), first: 0, last: 0 }).collect();
        let mut out = Vec::new();
        let mut start = 0;
        while !queue.is_empty() {
            let n = take_batch(&mut queue, usize::MAX, usize::MAX).len();
            out.push(start..start + n);
            start += n;
        }
        out
    }

    /// Records hold runs of the chunks themselves: no byte is copied, consecutive
    /// lines of a chunk are one run, and a record across a chunk's end is one run
    /// per chunk. A line that came without its newline gets a static one.
    #[test]
    fn records_hold_the_chunks_bytes_where_they_are() {
        let within = |piece: &[u8], chunk: &Bytes| {
            let (start, end) = (chunk.as_ptr() as usize, chunk.as_ptr() as usize + chunk.len());
            piece.as_ptr() as usize >= start && piece.as_ptr() as usize + piece.len() <= end
        };
        let one = chunk(b"{\"a\":1}\n{\"b\":2}\n");
        let two = chunk(b"{\"c\":3}\n{\"d\":4}");
        let mut a = Aggregator::new(MAX_RECORD_BYTES, true);
        a.push(&one, 1);
        a.push(&two, 2);
        a.seal();
        let records = a.take_records();
        assert_eq!(records.len(), 1);
        let pieces: Vec<&[u8]> = records[0].data.pieces().collect();
        assert_eq!(pieces, [&one[..], &b"{\"c\":3}\n{\"d\":4}"[..], b"\n"]);
        assert!(within(pieces[0], &one) && within(pieces[1], &two));

        let mut single = Aggregator::new(MAX_RECORD_BYTES, false);
        single.push(&one, 1);
        for r in single.take_records() {
            let pieces: Vec<&[u8]> = r.data.pieces().collect();
            assert!(pieces.len() == 1 && within(pieces[0], &one), "one event, one run of the chunk");
        }

        let mut partitioned = Aggregator::new(MAX_RECORD_BYTES, true).with_max_events(500);
        partitioned.push(&one, 1);
        partitioned.seal();
        assert_eq!(partitioned.take_records()[0].data.pieces().count(), 1, "lines taken one by one still make one run");
    }

    /// Once every record holding a chunk is delivered, the last handle gives the
    /// chunk's own buffer back, whole, to be filled again.
    #[test]
    fn the_last_record_holding_a_chunk_gives_its_buffer_back() {
        let mut buffer = Vec::with_capacity(64 * 1024);
        for i in 0..1000 {
            buffer.extend_from_slice(format!("{{\"n\":{i}}}\n").as_bytes());
        }
        let (at, capacity) = (buffer.as_ptr(), buffer.capacity());
        let mut a = Aggregator::new(2_000, true);
        a.push(&Bytes::from(buffer), 1);
        a.seal();
        let records = a.take_records();
        assert!(records.len() > 2);
        let mut handles: Vec<Bytes> = records.into_iter().flat_map(|r| r.data.into_chunks()).collect();
        let last = handles.pop().unwrap();
        assert!(crate::buffer::reclaim(handles.pop().unwrap()).is_none(), "still held by another record");
        drop(handles);
        let back = crate::buffer::reclaim(last).expect("the last holder");
        assert_eq!((back.as_ptr(), back.capacity(), back.len()), (at, capacity, 0));
    }

    #[test]
    fn billing_rounds_up_to_five_kib() {
        assert_eq!(billed_bytes(0), 5120);
        assert_eq!(billed_bytes(200), 5120);
        assert_eq!(billed_bytes(5120), 5120);
        assert_eq!(billed_bytes(5121), 10240);
    }

    #[test]
    fn one_event_per_record_when_not_aggregating() {
        let mut a = Aggregator::new(MAX_RECORD_BYTES, false);
        a.push(&chunk(b"{\"a\":1}\n{\"b\":2}\n"), 7);
        a.push(&chunk(b"{\"c\":3}"), 8);
        let got: Vec<(Vec<u8>, u64, u64)> = a.take_records().into_iter().map(|r| (r.data.to_vec(), r.first, r.last)).collect();
        assert_eq!(got, vec![(b"{\"a\":1}\n".to_vec(), 7, 7), (b"{\"b\":2}\n".to_vec(), 7, 7), (b"{\"c\":3}\n".to_vec(), 8, 8)]);
    }

    #[test]
    fn an_event_over_the_record_limit_is_set_aside() {
        let mut a = Aggregator::new(10, true);
        a.push(&chunk(b"short\nthis line is far too long\n"), 1);
        a.push(&chunk(b"ok\n"), 2);
        assert_eq!(a.open_tags(), Some((1, 2)));
        a.seal();
        assert_eq!(a.take_records(), vec![FirehoseRecord { data: data(b"short\nok\n"), first: 1, last: 2 }]);
        assert_eq!(a.take_oversize(), vec![b"this line is far too long\n".to_vec()]);
    }

    #[test]
    fn truncation_cuts_the_message_to_fit() {
        let line = br#"{"time":"t","stream":"stdout","message":"h\u00e9llo w\u00f6rld, a long line","kubernetes":{"pod":"p"}}"#;
        let cut = truncate_event(line, 100).unwrap();
        assert!(cut.len() <= 100 && cut.ends_with(b"\n"), "{}", String::from_utf8_lossy(&cut));
        let v: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        assert_eq!(v["truncated"], true);
        assert!("héllo wörld, a long line".starts_with(v["message"].as_str().unwrap()));
        assert_eq!(v["kubernetes"]["pod"], "p");
        assert_eq!(truncate_event(line, 20), None, "the rest alone is too long");
        assert_eq!(truncate_event(b"not json\n", 5), None);
    }

    fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
        // Bytes other than a newline: map 10 to something else rather than reject it.
        let byte = any::<u8>().prop_map(|c| if c == b'\n' { b'x' } else { c });
        prop::collection::vec(prop::collection::vec(byte, 0..3000), 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn records_keep_every_line_whole_and_in_order(lines in lines(), record_max in 1usize..20_000, aggregate in any::<bool>()) {
            let mut a = Aggregator::new(record_max, aggregate);
            let mut input = Vec::new();
            for l in &lines {
                input.extend_from_slice(l);
                input.push(b'\n');
            }
            a.push(&Bytes::from(input), 0);
            a.seal();
            let records: Vec<Vec<u8>> = a.take_records().into_iter().map(|r| r.data.to_vec()).collect();
            let dead = a.take_oversize();
            for r in &records {
                prop_assert!(r.len() <= record_max && r.ends_with(b"\n"));
                if !aggregate {
                    prop_assert_eq!(r.iter().filter(|&&c| c == b'\n').count(), 1);
                }
            }
            // Every line is in exactly one place: a record (in order) or a dead letter.
            let kept: Vec<&[u8]> = records.iter().flat_map(|r| r.split_inclusive(|&c| c == b'\n')).collect();
            let want: Vec<Vec<u8>> = lines.iter().map(|l| [l.as_slice(), b"\n"].concat()).collect();
            let want_kept: Vec<&[u8]> = want.iter().filter(|l| l.len() <= record_max).map(|l| l.as_slice()).collect();
            prop_assert_eq!(kept, want_kept);
            prop_assert_eq!(dead.len(), want.iter().filter(|l| l.len() > record_max).count());
            for b in batches(&records) {
                prop_assert!(b.len() <= MAX_BATCH_RECORDS);
                prop_assert!(records[b].iter().map(Vec::len).sum::<usize>() <= MAX_BATCH_BYTES);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Runs of whole lines are taken at once where they fit; the records are the
        /// same as those of pushing line by line.
        #[test]
        fn pushing_chunks_packs_as_pushing_lines_does(
            chunks in prop::collection::vec(lines(), 1..6),
            record_max in 1usize..20_000,
            aggregate in any::<bool>(),
            max_events in prop_oneof![Just(0usize), 1usize..50],
            unterminated in any::<bool>(),
        ) {
            let mut by_chunk = Aggregator::new(record_max, aggregate).with_max_events(max_events);
            let mut by_line = Aggregator::new(record_max, aggregate).with_max_events(max_events);
            for (tag, lines) in chunks.iter().enumerate() {
                let mut data: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
                if unterminated && data.last() == Some(&b'\n') {
                    data.pop();
                }
                by_chunk.push(&chunk(&data), tag as u64);
                for line in data.split_inclusive(|&c| c == b'\n') {
                    by_line.push_line(chunk(line), tag as u64);
                }
                prop_assert_eq!(by_chunk.open_tags(), by_line.open_tags());
                prop_assert_eq!(by_chunk.open_bytes(), by_line.open_bytes());
            }
            by_chunk.seal();
            by_line.seal();
            prop_assert_eq!(by_chunk.take_records(), by_line.take_records());
            prop_assert_eq!(by_chunk.take_oversize(), by_line.take_oversize());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The ack logic relies on it: a record's tags are exactly the first and last
        /// chunk whose lines it holds, and the open record's tags cover what it holds.
        #[test]
        fn records_carry_the_tags_of_the_chunks_they_hold(
            chunks in prop::collection::vec(prop::collection::vec(1usize..300, 0..20), 1..40),
            record_max in 64usize..2000,
            aggregate in any::<bool>(),
        ) {
            let mut a = Aggregator::new(record_max, aggregate);
            // Each line is its chunk's tag, padded: "<tag>:xxxx\n".
            let mut records = Vec::new();
            for (tag, lens) in chunks.iter().enumerate() {
                let mut data = Vec::new();
                for len in lens {
                    data.extend_from_slice(format!("{tag}:{}\n", "x".repeat(*len)).as_bytes());
                }
                a.push(&Bytes::from(data), tag as u64);
                records.extend(a.take_records());
                if let Some((first, last)) = a.open_tags() {
                    prop_assert!(first <= last && last <= tag as u64);
                }
            }
            a.seal();
            records.extend(a.take_records());
            for r in &records {
                let tags: Vec<u64> = r.data.to_vec().split_inclusive(|&c| c == b'\n')
                    .map(|l| std::str::from_utf8(l).unwrap().split(':').next().unwrap().parse().unwrap())
                    .collect();
                prop_assert_eq!((r.first, r.last), (tags[0], *tags.last().unwrap()));
            }
        }
    }

    #[test]
    fn batches_respect_count_and_bytes() {
        let small: Vec<Vec<u8>> = (0..1201).map(|_| vec![b'x'; 10]).collect();
        let b = batches(&small);
        assert_eq!(b, vec![0..500, 500..1000, 1000..1201]);
        let big: Vec<Vec<u8>> = (0..9).map(|_| vec![b'x'; MAX_RECORD_BYTES]).collect();
        let b = batches(&big);
        assert_eq!(b.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![4, 4, 1]);
    }
}
