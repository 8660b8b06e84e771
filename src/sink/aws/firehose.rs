//! Amazon Data Firehose: one `PutRecordBatch` call, and what its answer means per
//! record.
//!
//! A call can succeed as a whole and still refuse some records: `FailedPutCount > 0`,
//! and `RequestResponses[i]` (matching request index `i`) carries an `ErrorCode`
//! (`ServiceUnavailableException` when over the quota, `InternalFailure`). Only those
//! records are sent again; the others were accepted and never are.
//!
//! The request body is written here ([`request_body`]), not by the SDK's serializer:
//! that one takes each record as an owned `Blob` (a copy of the record, which must
//! stay here for a retry), encodes it into a base64 string of its own and copies that
//! into the body — three copies of every byte, each into freshly mapped pages. Here
//! the base64 is written once, from the records' runs where they are (pieces of the
//! buffer's chunks, see `batch::firehose`), into a body of the exact size; the SDK
//! still signs, sends and parses the answer.

use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::client::{self, Failure};
use crate::config::FirehoseConfig;

/// The per-record error code that means "over the quota".
pub const THROTTLED_CODE: &str = "ServiceUnavailableException";

/// A client for one delivery stream.
#[derive(Clone)]
pub struct Firehose {
    client: aws_sdk_firehose::Client,
    stream: String,
}

/// Per record of a call that went through: `None` accepted, `Some(code)` refused.
pub type RecordResults = Vec<Option<String>>;

/// A `PutRecordBatch` request body, ready to send.
#[derive(Debug, Clone)]
pub struct RequestBody {
    json: Bytes,
    records: usize,
}

impl RequestBody {
    /// The body's JSON.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The body's buffer, emptied, to write the next body into — once the call is
    /// over and nothing else holds it (else `None`).
    pub fn reclaim(self) -> Option<Vec<u8>> {
        crate::buffer::reclaim(self.json)
    }
}

/// The body of a `PutRecordBatch` call sending `records` to `stream`, as the SDK's
/// serializer would write it: `{"DeliveryStreamName":…,"Records":[{"Data":"<base64>"},…]}`,
/// written into `buffer` (an empty one, or a [reclaimed](RequestBody::reclaim) one).
/// Each record comes as its pieces, in order (runs of several chunks, say): its
/// base64 is that of the pieces joined.
pub fn request_body<'a, R>(stream: &str, records: impl Iterator<Item = R> + Clone, buffer: Vec<u8>) -> RequestBody
where
    R: IntoIterator<Item = &'a [u8]>,
{
    let base64 = base64_simd::STANDARD;
    let name = serde_json::to_vec(stream).expect("a string always serializes");
    const HEAD: &[u8] = b"{\"DeliveryStreamName\":";
    const LIST: &[u8] = b",\"Records\":[";
    const DATA: &[u8] = b"{\"Data\":\"";
    const END: &[u8] = b"\"}";
    let record_len = |r: R| r.into_iter().map(<[u8]>::len).sum::<usize>();
    let (count, encoded) = records.clone().fold((0, 0), |(n, len), r| (n + 1, len + base64.encoded_length(record_len(r))));
    let len = HEAD.len() + name.len() + LIST.len() + count * (DATA.len() + END.len()) + count.saturating_sub(1) + encoded + 2;
    let mut json = buffer;
    json.clear();
    json.reserve_exact(len);
    json.extend_from_slice(HEAD);
    json.extend_from_slice(&name);
    json.extend_from_slice(LIST);
    for (i, record) in records.enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(DATA);
        base64_of_pieces(record, &mut json);
        json.extend_from_slice(END);
    }
    json.extend_from_slice(b"]}");
    debug_assert_eq!(json.len(), len, "the body's size was computed wrong");
    RequestBody { json: json.into(), records: count }
}

/// Appends the base64 of `pieces` joined, without joining them: each piece's whole
/// groups of three bytes are encoded where they are; the one to two bytes left at a
/// piece's end are completed from the next piece's start.
fn base64_of_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    let base64 = base64_simd::STANDARD;
    let mut carry = [0u8; 3];
    let mut carried = 0;
    for mut piece in pieces {
        if carried > 0 {
            let take = (3 - carried).min(piece.len());
            carry[carried..carried + take].copy_from_slice(&piece[..take]);
            carried += take;
            piece = &piece[take..];
            if carried < 3 {
                continue;
            }
            base64.encode_append(carry, out);
        }
        let whole = piece.len() - piece.len() % 3;
        base64.encode_append(&piece[..whole], out);
        carried = piece.len() - whole;
        carry[..carried].copy_from_slice(&piece[whole..]);
    }
    base64.encode_append(&carry[..carried], out);
}

impl Firehose {
    pub async fn connect(config: &FirehoseConfig) -> anyhow::Result<Self> {
        let sdk = client::sdk_config(config.region.as_deref(), config.endpoint.as_deref(), config.request_timeout).await?;
        Ok(Self { client: aws_sdk_firehose::Client::new(&sdk), stream: config.delivery_stream.clone() })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The body of a call sending `records` (each whole lines ending in `\n`, as its
    /// pieces) to this client's stream, written into `buffer`.
    pub fn body<'a, R: IntoIterator<Item = &'a [u8]>>(&self, records: impl Iterator<Item = R> + Clone, buffer: Vec<u8>) -> RequestBody {
        request_body(&self.stream, records, buffer)
    }

    /// Sends `body` in one call. The SDK builds its request for no records and the
    /// body is put in its place before signing (so the signature covers it).
    pub async fn put(&self, body: &RequestBody) -> Result<RecordResults, Failure> {
        let n = body.records;
        let json = body.json.clone();
        let answer = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.stream)
            .set_records(Some(Vec::new()))
            .customize()
            .mutate_request(move |request| {
                request.headers_mut().insert("content-length", json.len().to_string());
                *request.body_mut() = SdkBody::from(json.clone());
            })
            .send()
            .await
            .map_err(|e| client::classify(&e))?;
        let mut results: RecordResults = answer.request_responses().iter().map(|r| r.error_code().map(str::to_owned)).collect();
        // An answer with fewer entries than records says nothing of the rest: resend them.
        results.resize(n, Some("MissingResponse".into()));
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the SDK's serializer writes for `records`, as JSON: each record's data in
    /// the SDK's own base64.
    fn sdk_body(stream: &str, records: &[Vec<u8>]) -> serde_json::Value {
        serde_json::json!({
            "DeliveryStreamName": stream,
            "Records": records.iter().map(|r| serde_json::json!({"Data": aws_smithy_types::base64::encode(r)})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn the_body_is_the_sdks_json_with_base64_data() {
        let records = vec![b"{\"message\":\"a\"}\n".to_vec(), Vec::new(), vec![0xff, 0, b'"', b'\\'], b"x\ny\n".to_vec()];
        let body = request_body("logs-\"1\"", records.iter().map(|r| [r.as_slice()]), Vec::new());
        assert_eq!(body.records, 4);
        let parsed: serde_json::Value = serde_json::from_slice(body.json()).unwrap();
        assert_eq!(parsed, sdk_body("logs-\"1\"", &records));
        assert_eq!(
            std::str::from_utf8(body.json()).unwrap(),
            r#"{"DeliveryStreamName":"logs-\"1\"","Records":[{"Data":"eyJtZXNzYWdlIjoiYSJ9Cg=="},{"Data":""},{"Data":"/wAiXA=="},{"Data":"eAp5Cg=="}]}"#
        );
    }

    #[test]
    fn a_body_still_held_elsewhere_is_not_reclaimed() {
        let body = request_body("s", [[&b"line\n"[..]]].into_iter(), Vec::new());
        let sent = body.clone();
        assert_eq!(body.reclaim(), None, "the SDK may still hold the bytes");
        assert_eq!(sent.reclaim().map(|b| (b.len(), b.capacity() > 0)), Some((0, true)));
    }

    #[test]
    fn a_body_with_no_records_is_an_empty_list() {
        let body = request_body("s", std::iter::empty::<[&[u8]; 1]>(), Vec::new());
        assert_eq!(body.json(), br#"{"DeliveryStreamName":"s","Records":[]}"#);
    }

    proptest! {
        #[test]
        fn every_record_decodes_back(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let body = request_body("stream", records.iter().map(|r| [r.as_slice()]), vec![b'x'; 100]);
            let parsed: serde_json::Value = serde_json::from_slice(body.json()).unwrap();
            prop_assert_eq!(parsed, sdk_body("stream", &records));
            let json = body.json().to_vec();
            let buffer = body.reclaim().expect("nothing else holds the body");
            prop_assert!(buffer.is_empty() && buffer.capacity() >= json.len());
            let again = request_body("stream", records.iter().map(|r| [r.as_slice()]), buffer);
            prop_assert_eq!(again.json(), &json[..]);
        }

        /// A record given as pieces cut anywhere (ends of 0 to 5 bytes among them, so
        /// that a group of three spans several) encodes as the pieces joined.
        #[test]
        fn a_record_in_pieces_encodes_as_joined(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(0usize..6, 0..40),
        ) {
            let mut cuts = cuts.into_iter().cycle();
            let pieces: Vec<Vec<&[u8]>> = records
                .iter()
                .map(|r| {
                    let mut rest = r.as_slice();
                    let mut out = Vec::new();
                    while !rest.is_empty() {
                        // An empty piece, then a byte, where the cut is 0.
                        let n = cuts.next().map_or(rest.len(), |c| c.min(rest.len()));
                        out.push(&rest[..n]);
                        let step = if n == 0 { out.push(&rest[..1]); 1 } else { n };
                        rest = &rest[step..];
                    }
                    out
                })
                .collect();
            let body = request_body("stream", pieces.iter().map(|p| p.iter().copied()), Vec::new());
            let joined = request_body("stream", records.iter().map(|r| [r.as_slice()]), Vec::new());
            prop_assert_eq!(body.json(), joined.json());
        }
    }
}
