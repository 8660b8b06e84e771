//! CloudWatch Logs: `PutLogEvents` for one stream, and creating a missing log group
//! (with its retention) and stream.
//!
//! No sequence tokens (ignored by AWS since 2023). Events AWS refuses one by one for
//! their time come back in `rejectedLogEventsInfo` as index ranges; the rest of the
//! batch was accepted.

use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use super::client::{self, Failure};
use crate::batch::cloudwatch::{LogEvent, StreamKey};
use crate::config::CloudWatchConfig;

/// Which events of a batch AWS refused for their time (indexes into the batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Events from this index on were more than 2 h ahead.
    pub too_new_from: Option<usize>,
    /// Events up to and including this index were older than 14 days.
    pub too_old_through: Option<usize>,
    /// Events up to and including this index were older than the group's retention.
    pub expired_through: Option<usize>,
}

impl Rejected {
    /// Why event `i` was refused, if it was.
    pub fn reason(&self, i: usize) -> Option<&'static str> {
        if self.too_new_from.is_some_and(|from| i >= from) {
            Some("too_new")
        } else if self.too_old_through.is_some_and(|t| i <= t) || self.expired_through.is_some_and(|t| i <= t) {
            Some("too_old")
        } else {
            None
        }
    }
}

/// A CloudWatch Logs client.
#[derive(Clone)]
pub struct CloudWatchLogs {
    client: aws_sdk_cloudwatchlogs::Client,
}

impl CloudWatchLogs {
    pub async fn connect(config: &CloudWatchConfig) -> anyhow::Result<Self> {
        let sdk = client::sdk_config(config.region.as_deref(), config.endpoint.as_deref(), config.request_timeout).await?;
        Ok(Self { client: aws_sdk_cloudwatchlogs::Client::new(&sdk) })
    }

    /// Sends one batch (sorted, within every limit) to `key`'s stream.
    pub async fn put(&self, key: &StreamKey, events: &[LogEvent]) -> Result<Rejected, Failure> {
        let events = events
            .iter()
            .map(|e| InputLogEvent::builder().timestamp(e.timestamp).message(e.message.clone()).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::unbuildable)?;
        let answer = self
            .client
            .put_log_events()
            .log_group_name(&key.group)
            .log_stream_name(&key.stream)
            .set_log_events(Some(events))
            .send()
            .await
            .map_err(|e| client::classify(&e))?;
        let index = |i: Option<i32>| i.and_then(|i| usize::try_from(i).ok());
        Ok(answer.rejected_log_events_info().map_or_else(Rejected::default, |r| Rejected {
            too_new_from: index(r.too_new_log_event_start_index()),
            too_old_through: index(r.too_old_log_event_end_index()),
            expired_through: index(r.expired_log_event_end_index()),
        }))
    }

    /// Creates the log group, with `retention_days` (0: none); one that exists is fine.
    pub async fn create_group(&self, group: &str, retention_days: u32) -> Result<(), Failure> {
        let created = self.client.create_log_group().log_group_name(group).send().await;
        if let Err(e) = created {
            let f = client::classify(&e);
            if f.code.as_deref() != Some("ResourceAlreadyExistsException") {
                return Err(f);
            }
        }
        if retention_days > 0 {
            let days = i32::try_from(retention_days).unwrap_or(i32::MAX);
            self.client
                .put_retention_policy()
                .log_group_name(group)
                .retention_in_days(days)
                .send()
                .await
                .map_err(|e| client::classify(&e))?;
        }
        Ok(())
    }

    /// Creates the log stream; one that exists is fine.
    pub async fn create_stream(&self, key: &StreamKey) -> Result<(), Failure> {
        let created = self.client.create_log_stream().log_group_name(&key.group).log_stream_name(&key.stream).send().await;
        match created {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = client::classify(&e);
                match f.code.as_deref() {
                    Some("ResourceAlreadyExistsException") => Ok(()),
                    _ => Err(f),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rejected;

    #[test]
    fn rejected_ranges_name_each_refused_event() {
        let r = Rejected { too_new_from: Some(8), too_old_through: Some(1), expired_through: Some(2) };
        let reasons: Vec<_> = (0..10).map(|i| r.reason(i)).collect();
        assert_eq!(reasons[..3], [Some("too_old"); 3]);
        assert_eq!(reasons[3..8], [None; 5]);
        assert_eq!(reasons[8..], [Some("too_new"); 2]);
    }
}
