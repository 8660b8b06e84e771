//! A fault-injecting AWS on 127.0.0.1: speaks Firehose's `PutRecordBatch` and
//! CloudWatch Logs' `PutLogEvents`, `CreateLogGroup`, `CreateLogStream` and
//! `PutRetentionPolicy` (AWS JSON 1.1) well enough for the real SDK, and does to each
//! put what a policy says: accept, refuse some records with an `ErrorCode`, refuse
//! events for their time (`rejectedLogEventsInfo`), throttle, fail with a 500, answer
//! too late, or drop the connection. It keeps every record (event) it accepted, so a
//! test can check that nothing was lost and nothing accepted was ever sent again.
//! For CloudWatch Logs it knows which groups and streams exist: a put to a stream
//! nobody created is `ResourceNotFoundException`, as AWS does.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

/// One put as the server saw it (Firehose: the delivery stream; CloudWatch Logs:
/// `group|stream`, each event's message with a newline as a record).
pub struct Call {
    pub stream: String,
    pub records: Vec<Vec<u8>>,
    /// Bytes of record data.
    pub bytes: usize,
}

/// What to do with a call.
#[derive(Debug, Clone)]
pub enum Action {
    /// Accept every record.
    Accept,
    /// A 200 with `FailedPutCount`: `Some(code)` refuses that record.
    Partial(Vec<Option<&'static str>>),
    /// Whole-call throttling (`ServiceUnavailableException`, 503).
    Throttle,
    /// A 500 with no error body.
    ServerError,
    /// An error answer with this status and `__type`.
    Error(u16, &'static str),
    /// Answer (an acceptance that the server then forgets) only after this long.
    Slow(Duration),
    /// Close the connection without answering.
    Reset,
    /// CloudWatch Logs: accept all but the first `n` events, refused as too old.
    RejectOld(usize),
}

/// What the server has seen and kept.
#[derive(Default)]
pub struct Seen {
    pub calls: u64,
    pub throttled: u64,
    /// Throttled calls by stream.
    pub throttled_by: HashMap<String, u64>,
    pub refused_records: u64,
    pub faults: u64,
    /// Accepted records by stream, in the order accepted.
    pub accepted: HashMap<String, Vec<Vec<u8>>>,
    /// (stream, when, bytes) per accepted call.
    pub accepted_at: Vec<(String, Instant, usize)>,
    /// CloudWatch Logs: groups created, with the retention set on each.
    pub groups: HashMap<String, Option<i64>>,
    /// CloudWatch Logs: `group|stream` created.
    pub streams: std::collections::HashSet<String>,
    /// CloudWatch Logs: puts refused because the stream did not exist.
    pub not_found: u64,
    /// S3 multipart uploads in progress: upload id → (object path, parts by number).
    pub uploads: HashMap<String, (String, std::collections::BTreeMap<u32, Vec<u8>>)>,
    /// S3 multipart uploads aborted.
    pub aborted: u64,
}

impl Seen {
    /// Every line of every accepted record of `stream`.
    pub fn lines(&self, stream: &str) -> Vec<Vec<u8>> {
        let records = self.accepted.get(stream).map(Vec::as_slice).unwrap_or_default();
        let mut out = Vec::new();
        for r in records {
            assert!(r.ends_with(b"\n"), "a record must end with a newline");
            out.extend(r.split_inclusive(|&c| c == b'\n').map(<[u8]>::to_vec));
        }
        out
    }
}

impl Seen {
    /// The `message` of every accepted event (our JSON lines) of `stream`, in order.
    pub fn messages(&self, stream: &str) -> Vec<String> {
        self.lines(stream).iter().map(|l| message(l)).collect()
    }
}

/// The `message` of one of our JSON event lines.
pub fn message(line: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(line).unwrap()["message"].as_str().unwrap().to_string()
}

/// A server that throttles every put while the flag is set and accepts them after.
pub fn throttling_server() -> (FaultServer, std::sync::Arc<AtomicBool>) {
    let throttle = Arc::new(AtomicBool::new(true));
    let t = throttle.clone();
    let server = FaultServer::start(move |_| if t.load(Ordering::Relaxed) { Action::Throttle } else { Action::Accept });
    (server, throttle)
}

type Policy = Box<dyn FnMut(&Call) -> Action + Send>;

pub struct FaultServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    pub fn start(policy: impl FnMut(&Call) -> Action + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let policy: Arc<Mutex<Policy>> = Arc::new(Mutex::new(Box::new(policy)));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (seen, policy) = (s.clone(), policy.clone());
                std::thread::spawn(move || serve(conn, &seen, &policy));
            }
        });
        Self { addr, seen, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Serves one keep-alive connection.
fn serve(conn: TcpStream, seen: &Mutex<Seen>, policy: &Mutex<Policy>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let Some((headers, body)) = read_request(&mut reader, &mut conn) else { return };
        let target = headers.get("x-amz-target").cloned().unwrap_or_default();
        if target.is_empty() && ["PUT", "POST", "DELETE"].contains(&headers[":method"].as_str()) {
            let (path, query) = headers[":path"].split_once('?').unwrap_or((&headers[":path"], ""));
            let open = match (headers[":method"].as_str(), query_value(query, "uploadId")) {
                ("PUT", Some(id)) => upload_part(&mut conn, path, &id, query, body, seen, policy),
                ("PUT", None) => put_object(&mut conn, path, body, seen, policy),
                ("POST", None) => create_upload(&mut conn, path, seen),
                ("POST", Some(id)) => complete_upload(&mut conn, &id, seen),
                (_, id) => {
                    let mut s = seen.lock().unwrap();
                    s.aborted += 1;
                    id.and_then(|id| s.uploads.remove(&id));
                    drop(s);
                    respond_xml(&mut conn, 204, "");
                    true
                }
            };
            if !open {
                return;
            }
            continue;
        }
        let logs = target.starts_with("Logs_");
        let call = match target.rsplit('.').next().unwrap_or_default() {
            "PutRecordBatch" => parse_call(&body),
            "PutLogEvents" => match parse_log_events(&body, seen) {
                Some(call) => call,
                None => {
                    seen.lock().unwrap().not_found += 1;
                    respond(&mut conn, 400, r#"{"__type":"ResourceNotFoundException","message":"The specified log stream does not exist."}"#);
                    continue;
                }
            },
            other => {
                let (status, body) = manage_logs(other, &body, seen);
                respond(&mut conn, status, &body);
                continue;
            }
        };
        let action = (policy.lock().unwrap())(&call);
        let mut s = seen.lock().unwrap();
        s.calls += 1;
        match action {
            Action::Accept if logs => {
                let codes = vec![None; call.records.len()];
                accept(&mut s, call, &codes);
                drop(s);
                respond(&mut conn, 200, r#"{"nextSequenceToken":"1"}"#);
            }
            Action::RejectOld(n) => {
                let codes: Vec<_> = (0..call.records.len()).map(|i| (i < n).then_some("TooOld")).collect();
                s.refused_records += n.min(call.records.len()) as u64;
                accept(&mut s, call, &codes);
                drop(s);
                let body = match n {
                    0 => r#"{"nextSequenceToken":"1"}"#.to_string(),
                    n => format!(r#"{{"nextSequenceToken":"1","rejectedLogEventsInfo":{{"tooOldLogEventEndIndex":{}}}}}"#, n - 1),
                };
                respond(&mut conn, 200, &body);
            }
            Action::Accept => {
                let codes = vec![None; call.records.len()];
                let body = accept(&mut s, call, &codes);
                drop(s);
                respond(&mut conn, 200, &body);
            }
            Action::Partial(codes) => {
                s.refused_records += codes.iter().filter(|c| c.is_some()).count() as u64;
                let body = accept(&mut s, call, &codes);
                drop(s);
                respond(&mut conn, 200, &body);
            }
            Action::Throttle => {
                s.throttled += 1;
                *s.throttled_by.entry(call.stream.clone()).or_default() += 1;
                drop(s);
                match logs {
                    true => respond(&mut conn, 400, r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#),
                    false => respond(&mut conn, 503, r#"{"__type":"ServiceUnavailableException","message":"Slow down."}"#),
                }
            }
            Action::ServerError => {
                s.faults += 1;
                drop(s);
                respond(&mut conn, 500, "");
            }
            Action::Error(status, code) => {
                s.faults += 1;
                drop(s);
                respond(&mut conn, status, &format!(r#"{{"__type":"{code}","message":"injected {code}"}}"#));
            }
            Action::Slow(wait) => {
                s.faults += 1;
                drop(s);
                std::thread::sleep(wait);
                let n = call.records.len();
                let entries = vec![r#"{"RecordId":"late"}"#; n].join(",");
                respond(&mut conn, 200, &format!(r#"{{"FailedPutCount":0,"Encrypted":false,"RequestResponses":[{entries}]}}"#));
                return;
            }
            Action::Reset => {
                s.faults += 1;
                return;
            }
        }
    }
}

/// S3 `PutObject` (`PUT /<bucket>/<key>`, path style): an accepted object is kept
/// under its path as one record, its bytes as sent (compressed or not). Returns
/// whether the connection stays open.
fn put_object(conn: &mut TcpStream, path: &str, body: Vec<u8>, seen: &Mutex<Seen>, policy: &Mutex<Policy>) -> bool {
    let call = Call { stream: path.to_string(), bytes: body.len(), records: vec![body] };
    let action = (policy.lock().unwrap())(&call);
    let mut s = seen.lock().unwrap();
    s.calls += 1;
    let error = |code: &str| format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected {code}</Message></Error>");
    match action {
        Action::Accept | Action::Partial(_) | Action::RejectOld(_) => {
            s.accepted_at.push((call.stream.clone(), Instant::now(), call.bytes));
            s.accepted.entry(call.stream).or_default().extend(call.records);
            drop(s);
            respond_xml(conn, 200, "");
        }
        Action::Throttle => {
            s.throttled += 1;
            *s.throttled_by.entry(call.stream).or_default() += 1;
            drop(s);
            respond_xml(conn, 503, &error("SlowDown"));
        }
        Action::ServerError => {
            s.faults += 1;
            drop(s);
            respond_xml(conn, 500, &error("InternalError"));
        }
        Action::Error(status, code) => {
            s.faults += 1;
            drop(s);
            respond_xml(conn, status, &error(code));
        }
        Action::Slow(wait) => {
            s.faults += 1;
            drop(s);
            std::thread::sleep(wait);
            respond_xml(conn, 200, "");
            return false;
        }
        Action::Reset => {
            s.faults += 1;
            return false;
        }
    }
    true
}

/// The value of `name` in a query string (no percent-decoding: ids are plain).
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
}

/// `POST /<bucket>/<key>?uploads`: a new upload id.
fn create_upload(conn: &mut TcpStream, path: &str, seen: &Mutex<Seen>) -> bool {
    let mut s = seen.lock().unwrap();
    let id = format!("upload-{}", s.uploads.len() + s.accepted.len() + s.aborted as usize + 1);
    s.uploads.insert(id.clone(), (path.to_string(), Default::default()));
    drop(s);
    let key = path.trim_start_matches('/').split_once('/').map_or("", |(_, k)| k);
    respond_xml(conn, 200, &format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"));
    true
}

/// `PUT …?partNumber=N&uploadId=U`: the policy decides, as for a whole object (its
/// call's stream is the object's path with `#part`).
fn upload_part(conn: &mut TcpStream, path: &str, id: &str, query: &str, body: Vec<u8>, seen: &Mutex<Seen>, policy: &Mutex<Policy>) -> bool {
    let number: u32 = query_value(query, "partNumber").and_then(|n| n.parse().ok()).unwrap_or(0);
    let call = Call { stream: format!("{path}#part"), bytes: body.len(), records: vec![body] };
    let action = (policy.lock().unwrap())(&call);
    let mut s = seen.lock().unwrap();
    s.calls += 1;
    match action {
        Action::Accept | Action::Partial(_) | Action::RejectOld(_) => {
            if let Some((_, parts)) = s.uploads.get_mut(id) {
                parts.insert(number, call.records.into_iter().next().unwrap());
            }
            drop(s);
            respond_xml(conn, 200, "");
            true
        }
        Action::Reset => {
            s.faults += 1;
            false
        }
        _ => {
            s.faults += 1;
            drop(s);
            respond_xml(conn, 500, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>injected</Message></Error>");
            true
        }
    }
}

/// `POST …?uploadId=U`: the parts joined in order become the object.
fn complete_upload(conn: &mut TcpStream, id: &str, seen: &Mutex<Seen>) -> bool {
    let mut s = seen.lock().unwrap();
    let Some((path, parts)) = s.uploads.remove(id) else {
        drop(s);
        respond_xml(conn, 404, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchUpload</Code><Message>no such upload</Message></Error>");
        return true;
    };
    let body: Vec<u8> = parts.into_values().flatten().collect();
    s.accepted_at.push((path.clone(), Instant::now(), body.len()));
    s.accepted.entry(path).or_default().push(body);
    drop(s);
    respond_xml(conn, 200, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><CompleteMultipartUploadResult><ETag>\"0\"</ETag></CompleteMultipartUploadResult>");
    true
}

fn respond_xml(conn: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        500 => "Internal Server Error",
        503 => "Slow Down",
        _ => "Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nETag: \"0\"\r\nx-amz-request-id: test\r\n\r\n{body}",
        body.len()
    );
}

/// Keeps the accepted records; the response body.
fn accept(s: &mut Seen, call: Call, codes: &[Option<&'static str>]) -> String {
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut failed = 0;
    for (i, record) in call.records.into_iter().enumerate() {
        match codes.get(i).copied().flatten() {
            None => {
                bytes += record.len();
                s.accepted.entry(call.stream.clone()).or_default().push(record);
                entries.push(format!(r#"{{"RecordId":"r{i}"}}"#));
            }
            Some(code) => {
                failed += 1;
                entries.push(format!(r#"{{"ErrorCode":"{code}","ErrorMessage":"injected"}}"#));
            }
        }
    }
    s.accepted_at.push((call.stream, Instant::now(), bytes));
    format!(r#"{{"FailedPutCount":{failed},"Encrypted":false,"RequestResponses":[{}]}}"#, entries.join(","))
}

fn parse_call(body: &[u8]) -> Call {
    let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON request");
    let stream = v["DeliveryStreamName"].as_str().unwrap_or_default().to_string();
    let records: Vec<Vec<u8>> = v["Records"]
        .as_array()
        .map(|a| a.iter().map(|r| base64::engine::general_purpose::STANDARD.decode(r["Data"].as_str().unwrap()).unwrap()).collect())
        .unwrap_or_default();
    let bytes = records.iter().map(Vec::len).sum();
    Call { stream, records, bytes }
}

/// A `PutLogEvents` to an existing stream as a call (`None`: no such stream).
fn parse_log_events(body: &[u8], seen: &Mutex<Seen>) -> Option<Call> {
    let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON request");
    let key = format!("{}|{}", v["logGroupName"].as_str().unwrap_or_default(), v["logStreamName"].as_str().unwrap_or_default());
    if !seen.lock().unwrap().streams.contains(&key) {
        return None;
    }
    let events = v["logEvents"].as_array().cloned().unwrap_or_default();
    let stamps: Vec<i64> = events.iter().map(|e| e["timestamp"].as_i64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "events must be in chronological order");
    assert!(events.len() <= 10_000, "at most 10,000 events per call");
    let records: Vec<Vec<u8>> = events.iter().map(|e| format!("{}\n", e["message"].as_str().unwrap()).into_bytes()).collect();
    let size: usize = records.iter().map(|r| r.len() - 1 + 26).sum();
    assert!(size <= 1_048_576, "at most 1 MiB per call");
    let bytes = records.iter().map(Vec::len).sum();
    Some(Call { stream: key, records, bytes })
}

/// CreateLogGroup, CreateLogStream, PutRetentionPolicy.
fn manage_logs(action: &str, body: &[u8], seen: &Mutex<Seen>) -> (u16, String) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON request");
    let group = v["logGroupName"].as_str().unwrap_or_default().to_string();
    let mut s = seen.lock().unwrap();
    let not_found = (400, r#"{"__type":"ResourceNotFoundException","message":"The specified log group does not exist."}"#.to_string());
    let exists = (400, r#"{"__type":"ResourceAlreadyExistsException","message":"exists"}"#.to_string());
    match action {
        "CreateLogGroup" if s.groups.contains_key(&group) => exists,
        "CreateLogGroup" => {
            s.groups.insert(group, None);
            (200, "{}".into())
        }
        "CreateLogStream" if !s.groups.contains_key(&group) => not_found,
        "CreateLogStream" => {
            let key = format!("{group}|{}", v["logStreamName"].as_str().unwrap_or_default());
            if s.streams.insert(key) {
                (200, "{}".into())
            } else {
                exists
            }
        }
        "PutRetentionPolicy" if !s.groups.contains_key(&group) => not_found,
        "PutRetentionPolicy" => {
            s.groups.insert(group, v["retentionInDays"].as_i64());
            (200, "{}".into())
        }
        other => (400, format!(r#"{{"__type":"InvalidParameterException","message":"unsupported {other}"}}"#)),
    }
}

/// One request's headers (lower-cased names) and body; `None` at end of stream.
fn read_request(reader: &mut BufReader<TcpStream>, conn: &mut TcpStream) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut headers = HashMap::new();
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let mut request = line.split_whitespace();
    headers.insert(":method".to_string(), request.next().unwrap_or_default().to_string());
    headers.insert(":path".to_string(), request.next().unwrap_or_default().to_string());
    loop {
        line.clear();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    if headers.get("expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nx-amzn-RequestId: test\r\n\r\n{body}",
        body.len()
    );
}

/// A tiny deterministic random source for fault plans.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
