//! Where `logferry verify` looks for its lines: S3 prefixes (the `s3` sink's, or the
//! bucket a Firehose stream delivers to), CloudWatch Logs groups and streams, a file
//! sink's file. Each look returns only what it had not returned before (objects by
//! key, log events by id, the file from where the last look stopped), so a line found
//! twice was stored twice.

use std::collections::HashSet;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// One stored event holding the run's token.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The event's message (its JSON line's `message`, or the bare text).
    pub message: String,
    /// The event said it was truncated or a partial line.
    pub flagged: bool,
    /// When the destination stored it (ms since the epoch): an object's last
    /// modification, a log event's ingestion; for a file, when it was read.
    pub landed_ms: i64,
    /// Where: an object key, a log stream.
    pub at: String,
}

/// A destination being watched.
pub enum Place {
    S3(S3Place),
    CloudWatch(CloudWatchPlace),
    File(FilePlace),
}

impl Place {
    /// What is looked at, for the report (`s3://bucket/prefix/`, a log group…).
    pub fn describe(&self) -> String {
        match self {
            Place::S3(p) => p.prefixes.iter().map(|k| format!("s3://{}/{k}", p.bucket)).collect::<Vec<_>>().join(", "),
            Place::CloudWatch(p) => {
                let group = if p.group_whole { format!("log group {}", p.group) } else { format!("log groups {}*", p.group) };
                match &p.stream {
                    Some((s, true)) => format!("CloudWatch Logs {group}, stream {s}"),
                    Some((s, false)) => format!("CloudWatch Logs {group}, streams {s}*"),
                    None => format!("CloudWatch Logs {group}"),
                }
            }
            Place::File(p) => format!("file {}", p.path.display()),
        }
    }

    /// What arrived since the last look (events holding `token`).
    pub async fn look(&mut self, token: &str) -> anyhow::Result<Vec<Stored>> {
        match self {
            Place::S3(p) => p.look(token).await,
            Place::CloudWatch(p) => p.look(token).await,
            Place::File(p) => p.look(token),
        }
    }
}

/// Objects under some prefixes of a bucket.
pub struct S3Place {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefixes: Vec<String>,
    /// Objects older than this (ms) cannot hold the run's lines: not read.
    since_ms: i64,
    read: HashSet<String>,
}

impl S3Place {
    pub async fn connect(region: Option<&str>, endpoint: Option<&str>, bucket: &str, prefixes: Vec<String>, since_ms: i64) -> anyhow::Result<Self> {
        let client = crate::sink::aws::s3::client(region, endpoint, Duration::from_secs(30)).await?;
        Ok(Self { client, bucket: bucket.to_owned(), prefixes, since_ms, read: HashSet::new() })
    }

    async fn look(&mut self, token: &str) -> anyhow::Result<Vec<Stored>> {
        let mut found = Vec::new();
        for prefix in self.prefixes.clone() {
            for (key, modified) in self.new_objects(&prefix).await? {
                let body = self.client.get_object().bucket(&self.bucket).key(&key).send().await.map_err(|e| sdk_error("GetObject", &self.bucket, &e))?;
                let bytes = body.body.collect().await.with_context(|| format!("reading s3://{}/{key}", self.bucket))?.into_bytes();
                let text = decompress(&bytes).with_context(|| format!("decompressing s3://{}/{key}", self.bucket))?;
                found.extend(events_with(&text, token, modified, &key));
                self.read.insert(key);
            }
        }
        Ok(found)
    }

    /// Keys under `prefix` not read yet, modified since the run began, with when.
    async fn new_objects(&self, prefix: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("ListObjectsV2", &self.bucket, &e))?;
            for object in page.contents() {
                let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else { continue };
                let modified = modified.to_millis().unwrap_or(0);
                // S3 keeps whole seconds: a second of slack.
                if modified + 1_000 >= self.since_ms && !self.read.contains(key) {
                    out.push((key.to_owned(), modified));
                }
            }
        }
        Ok(out)
    }
}

/// An object's text: gzip (one member or several) and zstd are recognized by their
/// magic bytes, whatever the key's extension (Firehose may compress its objects).
fn decompress(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(zstd::stream::decode_all(bytes)?)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Our event format, read back (what verify needs).
#[derive(serde::Deserialize)]
struct EventLine<'a> {
    #[serde(borrow)]
    message: &'a serde_json::value::RawValue,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    partial: bool,
}

/// The events among JSON lines `text` whose line holds `token`.
fn events_with(text: &[u8], token: &str, landed_ms: i64, at: &str) -> Vec<Stored> {
    let finder = memchr::memmem::Finder::new(token.as_bytes());
    crate::batch::lines(text).filter(|l| finder.find(l).is_some()).map(|l| stored(l, landed_ms, at)).collect()
}

/// One event from its JSON line, or the text as it is when it is not one of ours
/// (a CloudWatch sink sending bare messages).
fn stored(line: &[u8], landed_ms: i64, at: &str) -> Stored {
    let parsed: Option<EventLine<'_>> = serde_json::from_slice(line).ok();
    let (message, flagged) = match parsed {
        Some(e) => (serde_json::from_str::<String>(e.message.get()).unwrap_or_else(|_| e.message.get().to_owned()), e.truncated || e.partial),
        None => (String::from_utf8_lossy(line).into_owned(), false),
    };
    Stored { message, flagged, landed_ms, at: at.to_owned() }
}

/// Log events in CloudWatch Logs, found with `FilterLogEvents` on the run's token.
pub struct CloudWatchPlace {
    client: aws_sdk_cloudwatchlogs::Client,
    /// The group, or the part of its name that is known (then every group so named).
    group: String,
    group_whole: bool,
    /// The stream, whole or its known start; `None`: any stream.
    stream: Option<(String, bool)>,
    since_ms: i64,
    seen: HashSet<String>,
}

impl CloudWatchPlace {
    pub async fn connect(region: Option<&str>, endpoint: Option<&str>, group: (String, bool), stream: Option<(String, bool)>, since_ms: i64) -> anyhow::Result<Self> {
        let sdk = crate::sink::aws::client::sdk_config(region, endpoint, Duration::from_secs(30)).await?;
        let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        Ok(Self { client, group: group.0, group_whole: group.1, stream, since_ms, seen: HashSet::new() })
    }

    async fn look(&mut self, token: &str) -> anyhow::Result<Vec<Stored>> {
        let mut found = Vec::new();
        for group in self.groups().await? {
            let mut call = self.client.filter_log_events().log_group_name(&group).start_time(self.since_ms - 60_000).filter_pattern(format!("\"{token}\""));
            call = match &self.stream {
                Some((s, true)) => call.log_stream_names(s),
                Some((s, false)) => call.log_stream_name_prefix(s),
                None => call,
            };
            let mut pages = call.into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = match page {
                    Ok(page) => page,
                    // The group is made when logferry sends its first event there.
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => break,
                    Err(e) => return Err(sdk_error("FilterLogEvents", &group, &e)),
                };
                for event in page.events() {
                    let id = event.event_id().unwrap_or_default();
                    let message = event.message().unwrap_or_default();
                    if !message.contains(token) || !self.seen.insert(format!("{group}\n{id}")) {
                        continue;
                    }
                    let at = format!("{group} {}", event.log_stream_name().unwrap_or_default());
                    found.push(stored(message.as_bytes(), event.ingestion_time().unwrap_or(0), &at));
                }
            }
        }
        Ok(found)
    }

    /// The group, or every group whose name starts with what is known of it.
    async fn groups(&self) -> anyhow::Result<Vec<String>> {
        if self.group_whole {
            return Ok(vec![self.group.clone()]);
        }
        let mut out = Vec::new();
        let mut pages = self.client.describe_log_groups().log_group_name_prefix(&self.group).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("DescribeLogGroups", &self.group, &e))?;
            out.extend(page.log_groups().iter().filter_map(|g| g.log_group_name().map(str::to_owned)));
        }
        Ok(out)
    }
}

/// A file sink's file, read from where the last look stopped.
pub struct FilePlace {
    path: PathBuf,
    offset: u64,
    /// A line not yet ended at the last look.
    partial: Vec<u8>,
}

impl FilePlace {
    pub fn new(path: PathBuf) -> Self {
        Self { path, offset: 0, partial: Vec::new() }
    }

    fn look(&mut self, token: &str) -> anyhow::Result<Vec<Stored>> {
        use std::io::{Seek, SeekFrom};
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut data = std::mem::take(&mut self.partial);
        let read = file.read_to_end(&mut data)?;
        self.offset += read as u64;
        let ended = data.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
        self.partial = data.split_off(ended);
        Ok(events_with(&data, token, super::marks::now_ms(), &self.path.display().to_string()))
    }
}

/// An AWS error with what was being done and on what, in the sinks' words (what to
/// check included).
fn sdk_error<E, R>(call: &str, on: &str, e: &aws_sdk_s3::error::SdkError<E, R>) -> anyhow::Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + crate::sink::aws::client::HasStatus,
{
    anyhow::anyhow!("{call} on {on}: {}", crate::sink::aws::client::classify(e).message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_events_are_read_from_plain_gzip_and_zstd_objects() {
        let text = b"{\"time\":\"t\",\"stream\":\"stdout\",\"message\":\"tok 1/2 \\\"q\\\"\"}\n{\"message\":\"other\"}\n{\"message\":\"tok 2\",\"partial\":true}\n";
        let gz = {
            let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap());
            let mut out = vec![0; c.gzip_compress_bound(text.len())];
            let n = c.gzip_compress(text, &mut out).unwrap();
            out.truncate(n);
            // Two members, as an object of several compressed blocks would be.
            let mut twice = out.clone();
            twice.extend_from_slice(&out);
            twice
        };
        let zst = zstd::bulk::compress(text, 1).unwrap();
        assert_eq!(decompress(text).unwrap(), text);
        assert_eq!(decompress(&gz).unwrap(), [&text[..], &text[..]].concat());
        assert_eq!(decompress(&zst).unwrap(), text);
        let found = events_with(text, "tok", 5, "k");
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].message.as_str(), found[0].flagged), ("tok 1/2 \"q\"", false));
        assert_eq!((found[1].message.as_str(), found[1].flagged), ("tok 2", true));
        let bare = stored(b"tok 3/4 plain", 7, "g s");
        assert_eq!((bare.message.as_str(), bare.flagged, bare.landed_ms), ("tok 3/4 plain", false, 7));
    }
}
