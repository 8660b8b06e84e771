//! What every AWS sink shares: the SDK configuration from the standard chain, and
//! the classification of a failed call into what to do about it.
//!
//! The SDK's own retries are off: a throttled or failed call comes back to the sink,
//! which retries with its own backoff (data waits in the disk buffer, not in memory)
//! and feeds throttling to its pacer.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_firehose::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The SDK configuration: credentials and region from the standard chain
/// (environment, profile, IRSA web identity, EKS Pod Identity, IMDSv2), the region
/// and endpoint from the config when set, no SDK retries, our timeout.
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>, request_timeout: Duration) -> anyhow::Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(request_timeout.min(Duration::from_secs(10)))
                .operation_attempt_timeout(request_timeout)
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        anyhow::bail!("no AWS region: set sink.region, or AWS_REGION in the environment");
    }
    Ok(config)
}

/// What a failed call means for the data in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Over the quota: back off and slow down (AIMD).
    Throttled,
    /// 5xx, timeouts, resets: retry with backoff.
    Transient,
    /// Needs a person (credentials, permissions, a missing stream, bad parameters):
    /// keep the data, retry slowly, say so in `/readyz` and the logs.
    Permanent,
}

/// A classified failure, with a message that says what to check.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    /// The service's error code, when it gave one.
    pub code: Option<String>,
    pub message: String,
}

impl Failure {
    /// The SDK refused to build a request (a required field missing): a bug here.
    pub fn unbuildable(e: impl std::fmt::Display) -> Self {
        Failure { kind: FailureKind::Permanent, code: None, message: format!("building the request failed: {e}") }
    }
}

/// Error codes that mean "slow down" across AWS JSON APIs (Firehose says
/// `ServiceUnavailableException` when over its quota; CloudWatch Logs
/// `ThrottlingException`).
const THROTTLING_CODES: &[&str] = &[
    "ServiceUnavailableException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "LimitExceededException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// Codes that a retry will not fix, with the likely fix.
const PERMANENT_CODES: &[(&str, &str)] = &[
    ("ResourceNotFoundException", "the destination does not exist in this account and region: check its name and sink.region"),
    ("AccessDeniedException", "the role lacks permission: see manifests/iam/ for the policy logferry needs"),
    ("UnrecognizedClientException", "the credentials are not valid: check IRSA / Pod Identity or AWS_ACCESS_KEY_ID"),
    ("InvalidSignatureException", "the request signature was refused: check the credentials and the node's clock"),
    ("ExpiredTokenException", "the credentials expired and were not refreshed: check IRSA / Pod Identity"),
    ("InvalidClientTokenId", "the credentials are not valid: check IRSA / Pod Identity or AWS_ACCESS_KEY_ID"),
    ("InvalidArgumentException", "AWS refused the request's parameters: check the sink's settings"),
    ("InvalidParameterException", "AWS refused the request's parameters: check the sink's settings"),
    ("InvalidKMSResourceException", "the stream's KMS key cannot be used: check the key and its policy"),
    ("KMSAccessDeniedException", "the stream's KMS key cannot be used: check the key and its policy"),
    ("NoSuchBucket", "the bucket does not exist: check sink.bucket and sink.region"),
    ("AccessDenied", "the role lacks permission: see manifests/iam/ for the policy logferry needs"),
    ("InvalidAccessKeyId", "the credentials are not valid: check IRSA / Pod Identity or AWS_ACCESS_KEY_ID"),
    ("SignatureDoesNotMatch", "the request signature was refused: check the credentials and the node's clock"),
];

/// Classifies a failed SDK call.
pub fn classify<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let detail = DisplayErrorContext(err).to_string();
    let (kind, hint) = match err {
        SdkError::ConstructionFailure(_) => (
            FailureKind::Permanent,
            "the request could not be built: check the credentials chain (IRSA, Pod Identity, AWS_* variables) and sink.region",
        ),
        SdkError::TimeoutError(_) => (FailureKind::Transient, "no answer within sink.request_timeout"),
        SdkError::DispatchFailure(d) if d.is_user() => (
            FailureKind::Permanent,
            "the request could not be sent: check the credentials chain and sink.endpoint",
        ),
        SdkError::DispatchFailure(_) => (FailureKind::Transient, "could not reach the endpoint (connection refused, reset or DNS)"),
        SdkError::ResponseError(_) => (FailureKind::Transient, "the answer was cut off or unreadable"),
        SdkError::ServiceError(_) => classify_service(err.code(), err.raw_response().map(HasStatus::status)),
        _ => (FailureKind::Transient, "unexpected failure"),
    };
    Failure { kind, code: err.code().map(str::to_owned), message: format!("{hint} ({detail})") }
}

fn classify_service(code: Option<&str>, status: Option<u16>) -> (FailureKind, &'static str) {
    if let Some(code) = code {
        if THROTTLING_CODES.contains(&code) {
            return (FailureKind::Throttled, "throttled: over the quota");
        }
        if let Some((_, hint)) = PERMANENT_CODES.iter().find(|(c, _)| *c == code) {
            return (FailureKind::Permanent, hint);
        }
    }
    match status {
        Some(429) => (FailureKind::Throttled, "throttled: over the quota"),
        Some(s) if s >= 500 => (FailureKind::Transient, "the service failed (5xx)"),
        Some(401 | 403) => (FailureKind::Permanent, "access denied: check the credentials and the IAM policy (manifests/iam/)"),
        _ => (FailureKind::Transient, "the service refused the call"),
    }
}

/// The HTTP status of a raw response, whichever SDK crate it comes from.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_firehose::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_classified() {
        assert_eq!(classify_service(Some("ServiceUnavailableException"), Some(400)).0, FailureKind::Throttled);
        assert_eq!(classify_service(Some("ThrottlingException"), Some(400)).0, FailureKind::Throttled);
        assert_eq!(classify_service(Some("ResourceNotFoundException"), Some(400)).0, FailureKind::Permanent);
        assert_eq!(classify_service(Some("AccessDeniedException"), Some(400)).0, FailureKind::Permanent);
        assert_eq!(classify_service(None, Some(500)).0, FailureKind::Transient);
        assert_eq!(classify_service(Some("InternalFailure"), Some(500)).0, FailureKind::Transient);
        assert_eq!(classify_service(None, Some(429)).0, FailureKind::Throttled);
        assert_eq!(classify_service(None, Some(403)).0, FailureKind::Permanent);
    }
}
