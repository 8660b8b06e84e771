//! Firehose request shaping: JSON lines → records → `PutRecordBatch` requests.
//!
//! Firehose bills every record rounded up to the next 5 KiB, and concatenates records
//! into S3 objects with no delimiter. So events are packed many to a record (up to
//! [`MAX_RECORD_BYTES`]), every record ends with `\n`, and a record never splits an
//! event: S3 objects are then plain JSON lines and the bill is close to the payload.
//! `aggregate = false` sends one event per record (for consumers that need it).
//!
//! An event longer than a record cannot be sent: it is set aside (dead-lettered) for
//! the caller to keep and count, never retried forever. `decode.max_message_bytes`
//! keeps events below this in practice.

use std::collections::VecDeque;

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
    pub data: Vec<u8>,
    pub first: u64,
    pub last: u64,
}

/// Packs JSON lines into records.
#[derive(Debug)]
pub struct Aggregator {
    record_max: usize,
    aggregate: bool,
    /// Events per record, at most; 0: as many as fit.
    max_events: usize,
    current: Vec<u8>,
    /// Events in `current`, counted when `max_events` limits them.
    current_events: usize,
    /// Tags of the lines in `current`.
    current_tags: Option<(u64, u64)>,
    records: Vec<FirehoseRecord>,
    oversize: Vec<Vec<u8>>,
    /// Buffers of records delivered, emptied, to fill again (see [`Self::recycle`]).
    spares: Vec<Vec<u8>>,
    /// Their capacity, summed, and its limit (see [`Self::with_spare_bytes`]).
    spare_bytes: usize,
    spare_bytes_max: usize,
}
/// A record buffer starts with room for this much (or `record_max`, if less).
const RECORD_START: usize = 256 * 1024;

impl Aggregator {
    /// `record_max` is clamped to 1 ..= [`MAX_RECORD_BYTES`].
    pub fn new(record_max: usize, aggregate: bool) -> Self {
        Self {
            record_max: record_max.clamp(1, MAX_RECORD_BYTES),
            aggregate,
            max_events: 0,
            current: Vec::new(),
            current_events: 0,
            current_tags: None,
            records: Vec::new(),
            oversize: Vec::new(),
            spares: Vec::new(),
            spare_bytes: 0,
            spare_bytes_max: MAX_BATCH_BYTES,
        }
    }

    /// Keeps delivered record buffers for reuse up to `bytes` of them (by default one
    /// request's worth). The records of every request in flight come back together
    /// when their answers do: keeping only one request's worth freed the rest, and
    /// the next records faulted in fresh pages again.
    pub fn with_spare_bytes(mut self, bytes: usize) -> Self {
        self.spare_bytes_max = bytes;
        self
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

    /// Adds JSON lines (each ending in `\n`; a last line without one gets it) that
    /// came in the chunk tagged `tag`. Tags must not decrease.
    pub fn push(&mut self, lines: &[u8], tag: u64) {
        let mut rest = lines;
        while !rest.is_empty() {
            let run = self.whole_lines_that_fit(rest);
            if run > 0 {
                self.append_run(&rest[..run], tag);
                rest = &rest[run..];
                continue;
            }
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            self.push_line(&rest[..end], tag);
            rest = &rest[end..];
        }
    }

    /// How many bytes at the start of `lines` are whole lines that all go into the
    /// record being filled, as they are: when events are aggregated without a count
    /// limit, the longest run that fits, found by one search back from the room left
    /// (so a run of short lines is copied at once, not line by line). 0 when the next
    /// line has to go through [`Self::push_line`] (it does not fit, or counts apply).
    fn whole_lines_that_fit(&self, lines: &[u8]) -> usize {
        if !self.aggregate || self.max_events > 0 {
            return 0;
        }
        let room = self.record_max - self.current.len();
        let window = &lines[..lines.len().min(room)];
        memchr::memrchr(b'\n', window).map_or(0, |i| i + 1)
    }

    /// Appends `run`, whole lines ending in `\n` that fit in the open record.
    fn append_run(&mut self, run: &[u8], tag: u64) {
        self.start_record(run.len());
        self.current.extend_from_slice(run);
        self.extend_tags(tag);
    }

    /// Adds one JSON line; one longer than a record is set aside (see [`Self::take_oversize`]).
    pub fn push_line(&mut self, line: &[u8], tag: u64) {
        let len = line.len() + usize::from(line.last() != Some(&b'\n'));
        if len > self.record_max {
            self.oversize.push(with_newline(line));
            return;
        }
        let full = self.max_events > 0 && self.current_events >= self.max_events;
        if !self.aggregate || full || self.current.len() + len > self.record_max {
            self.seal();
        }
        if self.aggregate {
            self.start_record(len);
        }
        self.current.extend_from_slice(line);
        if line.last() != Some(&b'\n') {
            self.current.push(b'\n');
        }
        self.current_events += 1;
        self.extend_tags(tag);
        if !self.aggregate {
            self.seal();
        }
    }

    /// Gives the open record, if it has no buffer yet, a spare or a new one with
    /// room for `len` bytes at least.
    fn start_record(&mut self, len: usize) {
        if self.current.capacity() == 0 {
            self.current = match self.spares.pop() {
                Some(spare) => {
                    self.spare_bytes -= spare.capacity();
                    spare
                }
                None => Vec::new(),
            };
            self.current.reserve(self.record_max.min(RECORD_START).max(len));
        }
    }

    /// Takes back a delivered record's buffer to fill again: a full record's buffer
    /// is 1,000 KiB of pages the allocator would otherwise hand back to the system
    /// and the next record would fault in again, zeroed, page by page. Kept up to
    /// the [spare bytes](Self::with_spare_bytes), and none when not aggregating
    /// (records are single events then); [`Self::drop_spares`] lets them go.
    pub fn recycle(&mut self, mut data: Vec<u8>) {
        let fits = self.spare_bytes + data.capacity() <= self.spare_bytes_max;
        if self.aggregate && fits && data.capacity() >= self.record_max.min(RECORD_START) {
            data.clear();
            self.spare_bytes += data.capacity();
            self.spares.push(data);
        }
    }

    /// Frees the spare buffers (when the sink is idle: memory comes back while quiet).
    pub fn drop_spares(&mut self) {
        self.spares = Vec::new();
        self.spare_bytes = 0;
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

    /// Dynamic partitioning splits a record into at most 500 events: with
    /// `max_events`, no record holds more, and the bytes cap still applies.
    #[test]
    fn records_hold_at_most_max_events() {
        let mut a = Aggregator::new(MAX_RECORD_BYTES, true).with_max_events(500);
        let line = format!("{{\"message\":\"{}\"}}\n", "x".repeat(200));
        for tag in 0..1234u64 {
            a.push(line.as_bytes(), tag);
        }
        a.seal();
        let counts: Vec<usize> = a.take_records().iter().map(|r| r.data.iter().filter(|&&c| c == b'\n').count()).collect();
        assert_eq!(counts, [500, 500, 234]);
        let mut a = Aggregator::new(10_000, true).with_max_events(500);
        for tag in 0..100u64 {
            a.push(line.as_bytes(), tag);
        }
        a.seal();
        assert!(a.take_records().iter().all(|r| r.data.len() <= 10_000), "the byte cap still holds");
    }

    /// A delivered record's buffer is filled again, not a fresh one allocated; kept
    /// up to the spare bytes, none when not aggregating, none after `drop_spares`.
    #[test]
    fn delivered_record_buffers_are_filled_again() {
        let line = format!("{}\n", "x".repeat(999));
        let mut a = Aggregator::new(4_000, true).with_spare_bytes(4 * 4_000);
        a.push(line.repeat(20).as_bytes(), 1);
        a.seal();
        let records = a.take_records();
        assert_eq!(records.len(), 5);
        assert!(records.iter().all(|r| r.data.capacity() == 4_000));
        let buffers: Vec<*const u8> = records.iter().map(|r| r.data.as_ptr()).collect();
        records.into_iter().for_each(|r| a.recycle(r.data));
        assert_eq!(a.spares.len(), 4, "16,000 bytes of spares: four of the five");
        a.push(line.repeat(8).as_bytes(), 2);
        a.seal();
        let again = a.take_records();
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|r| buffers.contains(&r.data.as_ptr())), "spare buffers are reused");
        assert!(again.iter().all(|r| r.data == line.repeat(4).as_bytes()), "and hold only the new lines");
        assert_eq!(a.spare_bytes, 2 * 4_000, "two taken back out");
        again.into_iter().for_each(|r| a.recycle(r.data));
        a.recycle(Vec::with_capacity(4_000));
        assert_eq!((a.spares.len(), a.spare_bytes), (4, 16_000), "never past the limit");
        a.drop_spares();
        assert!(a.spares.is_empty() && a.spare_bytes == 0);
        let mut window = Aggregator::new(4_000, true).with_spare_bytes(5 * 4 * 4_000);
        for tag in 0..5 {
            window.push(line.repeat(16).as_bytes(), tag);
        }
        window.seal();
        window.take_records().into_iter().for_each(|r| window.recycle(r.data));
        assert_eq!(window.spares.len(), 20, "five requests' records, all kept");
        let mut single = Aggregator::new(4_000, false);
        single.recycle(Vec::with_capacity(1 << 20));
        assert!(single.spares.is_empty(), "one event per record: nothing worth keeping");
    }

    /// `records` cut into requests by [`take_batch`] at AWS's limits, as index ranges.
    fn batches(records: &[Vec<u8>]) -> Vec<std::ops::Range<usize>> {
        let mut queue: VecDeque<FirehoseRecord> = records.iter().map(|d| FirehoseRecord { data: d.clone(), first: 0, last: 0 }).collect();
        let mut out = Vec::new();
        let mut start = 0;
        while !queue.is_empty() {
            let n = take_batch(&mut queue, usize::MAX, usize::MAX).len();
            out.push(start..start + n);
            start += n;
        }
        out
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
        a.push(b"{\"a\":1}\n{\"b\":2}\n", 7);
        a.push(b"{\"c\":3}", 8);
        let got: Vec<(Vec<u8>, u64, u64)> = a.take_records().into_iter().map(|r| (r.data, r.first, r.last)).collect();
        assert_eq!(got, vec![(b"{\"a\":1}\n".to_vec(), 7, 7), (b"{\"b\":2}\n".to_vec(), 7, 7), (b"{\"c\":3}\n".to_vec(), 8, 8)]);
    }

    #[test]
    fn an_event_over_the_record_limit_is_set_aside() {
        let mut a = Aggregator::new(10, true);
        a.push(b"short\nthis line is far too long\n", 1);
        a.push(b"ok\n", 2);
        assert_eq!(a.open_tags(), Some((1, 2)));
        a.seal();
        assert_eq!(a.take_records(), vec![FirehoseRecord { data: b"short\nok\n".to_vec(), first: 1, last: 2 }]);
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
            a.push(&input, 0);
            a.seal();
            let records: Vec<Vec<u8>> = a.take_records().into_iter().map(|r| r.data).collect();
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

        /// Runs of whole lines are copied at once where they fit; the records are the
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
                by_chunk.push(&data, tag as u64);
                for line in data.split_inclusive(|&c| c == b'\n') {
                    by_line.push_line(line, tag as u64);
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
                a.push(&data, tag as u64);
                records.extend(a.take_records());
                if let Some((first, last)) = a.open_tags() {
                    prop_assert!(first <= last && last <= tag as u64);
                }
            }
            a.seal();
            records.extend(a.take_records());
            for r in &records {
                let tags: Vec<u64> = r.data.split_inclusive(|&c| c == b'\n')
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
