//! Amazon Data Firehose: one `PutRecordBatch` call, and what its answer means per
//! record.
//!
//! A call can succeed as a whole and still refuse some records: `FailedPutCount > 0`,
//! and `RequestResponses[i]` (matching request index `i`) carries an `ErrorCode`
//! (`ServiceUnavailableException` when over the quota, `InternalFailure`). Only those
//! records are sent again; the others were accepted and never are.

use aws_sdk_firehose::primitives::Blob;
use aws_sdk_firehose::types::Record;

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

impl Firehose {
    pub async fn connect(config: &FirehoseConfig) -> anyhow::Result<Self> {
        let sdk = client::sdk_config(config.region.as_deref(), config.endpoint.as_deref(), config.request_timeout).await?;
        Ok(Self { client: aws_sdk_firehose::Client::new(&sdk), stream: config.delivery_stream.clone() })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Sends `records` (each whole lines ending in `\n`) in one call.
    pub async fn put(&self, records: Vec<Vec<u8>>) -> Result<RecordResults, Failure> {
        let n = records.len();
        let records = records
            .into_iter()
            .map(|data| Record::builder().data(Blob::new(data)).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::unbuildable)?;
        let answer = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| client::classify(&e))?;
        let mut results: RecordResults = answer.request_responses().iter().map(|r| r.error_code().map(str::to_owned)).collect();
        // An answer with fewer entries than records says nothing of the rest: resend them.
        results.resize(n, Some("MissingResponse".into()));
        Ok(results)
    }
}
