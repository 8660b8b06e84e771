//! Amazon S3: one `PutObject` call per object.
//!
//! Objects are written whole, with their content type and encoding; a key is never
//! written twice by two objects (see `batch::s3`), so a retried put that had in fact
//! succeeded only writes the same bytes again. The body is signed as
//! `UNSIGNED-PAYLOAD` (no checksum pass over it); TLS carries it.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use std::time::Duration;

use super::client::{self, Failure, FailureKind};
use crate::config::{Compression, S3Config};

/// A client for one bucket.
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3 {
    pub async fn connect(config: &S3Config) -> anyhow::Result<Self> {
        let client = client(config.region.as_deref(), config.endpoint.as_deref(), config.request_timeout).await?;
        Ok(Self { client, bucket: config.bucket.clone() })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Writes one object: in one `PutObject` up to [`MULTIPART_FROM`], in parts of
    /// [`PART_BYTES`] above. A part that fails is sent again by itself; one that keeps
    /// failing fails the upload, which is aborted and the object retried whole (an
    /// object only exists once `CompleteMultipartUpload` succeeded).
    pub async fn put(&self, key: &str, body: bytes::Bytes, compression: Compression) -> Result<(), Failure> {
        if body.len() >= MULTIPART_FROM {
            return self.put_in_parts(key, body, compression).await;
        }
        let put = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body)).content_type("application/x-ndjson");
        let put = put.set_content_encoding(content_encoding(compression));
        // The payload is not hashed into the signature (`UNSIGNED-PAYLOAD`): a SHA-256
        // pass over every object would cost more CPU than compressing it; TLS protects
        // the body on the way.
        put.customize().disable_payload_signing().send().await.map_err(|e| client::classify(&e))?;
        Ok(())
    }

    async fn put_in_parts(&self, key: &str, body: bytes::Bytes, compression: Compression) -> Result<(), Failure> {
        let create = self.client.create_multipart_upload().bucket(&self.bucket).key(key).content_type("application/x-ndjson");
        let create = create.set_content_encoding(content_encoding(compression));
        let upload = create.send().await.map_err(|e| client::classify(&e))?;
        let id = upload.upload_id().unwrap_or_default().to_string();
        match self.upload_parts(key, &id, &body).await {
            Ok(parts) => {
                let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
                let complete = self.client.complete_multipart_upload().bucket(&self.bucket).key(key).upload_id(&id).multipart_upload(done).send().await;
                match complete {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        self.abort(key, &id).await;
                        Err(client::classify(&e))
                    }
                }
            }
            Err(failure) => {
                self.abort(key, &id).await;
                Err(failure)
            }
        }
    }

    async fn upload_parts(&self, key: &str, id: &str, body: &bytes::Bytes) -> Result<Vec<CompletedPart>, Failure> {
        let mut parts = Vec::new();
        for (i, part) in body.chunks(PART_BYTES).enumerate() {
            let number = i as i32 + 1;
            let e_tag = self.upload_part(key, id, number, body.slice_ref(part)).await?;
            parts.push(CompletedPart::builder().part_number(number).set_e_tag(e_tag).build());
        }
        Ok(parts)
    }

    /// Sends one part, retrying it alone (up to [`PART_ATTEMPTS`] times, with a short
    /// backoff) when it failed for a reason a retry can fix: one reset must not cost
    /// the parts already sent. A refusal, or a part that keeps failing, fails the upload.
    async fn upload_part(&self, key: &str, id: &str, number: i32, part: bytes::Bytes) -> Result<Option<String>, Failure> {
        let mut wait = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            let sent = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .part_number(number)
                .body(ByteStream::from(part.clone()))
                .customize()
                .disable_payload_signing()
                .send()
                .await;
            match sent {
                Ok(sent) => return Ok(sent.e_tag().map(str::to_owned)),
                Err(e) => {
                    let failure = client::classify(&e);
                    if failure.kind == FailureKind::Permanent || attempt >= PART_ATTEMPTS {
                        return Err(failure);
                    }
                    tracing::debug!(key, part = number, attempt, error = %failure.message, "a part failed; sending it again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 4).min(Duration::from_secs(2));
                    attempt += 1;
                }
            }
        }
    }

    /// Best effort: an upload left behind costs storage until the bucket's lifecycle
    /// rule (AbortIncompleteMultipartUpload) removes it.
    async fn abort(&self, key: &str, id: &str) {
        if let Err(e) = self.client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(id).send().await {
            tracing::debug!(key, error = %client::classify(&e).message, "cannot abort a multipart upload");
        }
    }
}

/// An S3 client from the standard chain, for `logferry run` and `logferry verify`. An
/// endpoint of one's own (a VPC endpoint's URL, an emulator) takes the bucket in the
/// path. No checksum where S3 does not require one (PutObject): the body is signed
/// already, and a trailing checksum would cost a pass over every object.
pub async fn client(region: Option<&str>, endpoint: Option<&str>, request_timeout: Duration) -> anyhow::Result<aws_sdk_s3::Client> {
    let sdk = client::sdk_config(region, endpoint, request_timeout).await?;
    let s3 = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(endpoint.is_some())
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(s3))
}

/// The `Content-Encoding` of an object so compressed.
fn content_encoding(compression: Compression) -> Option<String> {
    match compression {
        Compression::Gzip => Some("gzip".into()),
        Compression::Zstd => Some("zstd".into()),
        Compression::None => None,
    }
}

/// Objects this large or larger go in parts.
pub const MULTIPART_FROM: usize = 16 << 20;
/// Attempts at one part before the whole upload is given up and retried later.
pub const PART_ATTEMPTS: u32 = 4;
/// One part (S3's minimum is 5 MiB but for the last).
pub const PART_BYTES: usize = 8 << 20;
