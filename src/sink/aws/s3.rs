//! Amazon S3: one `PutObject` call per object.
//!
//! Objects are written whole, with their content type and encoding; a key is never
//! written twice by two objects (see `batch::s3`), so a retried put that had in fact
//! succeeded only writes the same bytes again. The body is signed as
//! `UNSIGNED-PAYLOAD` (no checksum pass over it); TLS carries it.

use aws_sdk_s3::primitives::ByteStream;

use super::client::{self, Failure};
use crate::config::{Compression, S3Config};

/// A client for one bucket.
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3 {
    pub async fn connect(config: &S3Config) -> anyhow::Result<Self> {
        let sdk = client::sdk_config(config.region.as_deref(), config.endpoint.as_deref(), config.request_timeout).await?;
        // An endpoint of one's own (a VPC endpoint's URL, an emulator) takes the bucket
        // in the path.
        // No checksum where S3 does not require one (PutObject): the body is signed
        // already, and a trailing checksum would cost a pass over every object.
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(config.endpoint.is_some())
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .build();
        Ok(Self { client: aws_sdk_s3::Client::from_conf(s3), bucket: config.bucket.clone() })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Writes one object.
    pub async fn put(&self, key: &str, body: Vec<u8>, compression: Compression) -> Result<(), Failure> {
        let mut put = self.client.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body)).content_type("application/x-ndjson");
        match compression {
            Compression::Gzip => put = put.content_encoding("gzip"),
            Compression::Zstd => put = put.content_encoding("zstd"),
            Compression::None => {}
        }
        // The payload is not hashed into the signature (`UNSIGNED-PAYLOAD`): a SHA-256
        // pass over every object would cost more CPU than compressing it; TLS protects
        // the body on the way.
        put.customize().disable_payload_signing().send().await.map_err(|e| client::classify(&e))?;
        Ok(())
    }
}
