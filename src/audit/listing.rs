//! DescribeSessions, every page, and one row per session with its target
//! named (see `names`). The row is also the `sessions --json` shape,
//! documented in docs/user-guide.md.

use std::collections::BTreeSet;

use aws_sdk_ssm::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ssm::types::{Session, SessionFilter, SessionFilterKey, SessionState};
use serde::Serialize;

use super::names;
use crate::error::AwsError;
use crate::target::SageMakerTarget;

/// The largest page DescribeSessions serves.
const PAGE: i32 = 200;

/// What to ask DescribeSessions for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Ended sessions (`History`) rather than active ones.
    pub history: bool,
    /// The `Owner` filter: an IAM principal ARN.
    pub owner: Option<String>,
    /// The `Target` filter: an instance id or native target, as Session Manager names it.
    pub target: Option<String>,
    /// The `SessionId` filter.
    pub session_id: Option<String>,
    /// The `InvokedAfter` filter, epoch seconds.
    pub since: Option<i64>,
}

impl Query {
    fn filters(&self) -> Vec<SessionFilter> {
        let since = self.since.map(rfc3339);
        [
            (SessionFilterKey::Owner, self.owner.as_deref()),
            (SessionFilterKey::TargetId, self.target.as_deref()),
            (SessionFilterKey::SessionId, self.session_id.as_deref()),
            (SessionFilterKey::InvokedAfter, since.as_deref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            let filter = SessionFilter::builder().key(key).value(value?).build();
            Some(filter.expect("key and value are set"))
        })
        .collect()
    }
}

/// One session. Field names and meanings are part of `sessions --json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    pub session_id: String,
    /// `Connected`, `Connecting`, `Disconnected`, `Terminated`, `Terminating` or `Failed`.
    pub status: String,
    /// ARN of the IAM principal that started it.
    pub owner: String,
    /// The target as Session Manager knows it (`mi-…`, `i-…`, native string).
    pub target: String,
    /// The `*.sagemaker` host name of the target, when it can be told.
    pub name: Option<String>,
    pub document: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339, UTC.
    pub start: Option<String>,
    /// RFC 3339, UTC; null while active.
    pub end: Option<String>,
    #[serde(skip)]
    pub resource: Option<SageMakerTarget>,
    #[serde(skip)]
    pub start_secs: Option<i64>,
    #[serde(skip)]
    pub end_secs: Option<i64>,
}

/// Every session matching `query`, following NextToken, newest first, with
/// targets named.
pub async fn fetch(ssm: &aws_sdk_ssm::Client, query: &Query) -> Result<Vec<Row>, AwsError> {
    let state = if query.history {
        SessionState::History
    } else {
        SessionState::Active
    };
    let filters = Some(query.filters()).filter(|f| !f.is_empty());
    let mut sessions: Vec<Session> = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = ssm
            .describe_sessions()
            .state(state.clone())
            .set_filters(filters.clone())
            .max_results(PAGE)
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ssm:DescribeSessions", &e))?;
        sessions.extend(page.sessions().iter().cloned());
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => break,
        }
    }
    // Newest first, to the service's sub-second precision.
    let started = |s: &Session| s.start_date().map(DateTime::as_secs_f64);
    sessions.sort_by(|a, b| {
        started(b)
            .partial_cmp(&started(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.session_id().cmp(&b.session_id()))
    });
    let targets: BTreeSet<String> = sessions
        .iter()
        .filter_map(|s| s.target().map(str::to_owned))
        .collect();
    let tags = names::instance_tags(ssm, &targets).await;
    let rows: Vec<Row> = sessions
        .iter()
        .map(|session| {
            let target = session.target().unwrap_or_default().to_owned();
            let resource = names::name_of(&target, session.reason(), &tags);
            let start_secs = session.start_date().map(DateTime::secs);
            let end_secs = session.end_date().map(DateTime::secs);
            Row {
                session_id: session.session_id().unwrap_or_default().to_owned(),
                status: session
                    .status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                owner: session.owner().unwrap_or_default().to_owned(),
                name: resource.as_ref().map(SageMakerTarget::host_name),
                target,
                document: session.document_name().map(str::to_owned),
                reason: session.reason().map(str::to_owned),
                start: start_secs.map(rfc3339),
                end: end_secs.map(rfc3339),
                resource,
                start_secs,
                end_secs,
            }
        })
        .collect();
    Ok(rows)
}

/// `2026-12-01T09:51:08Z`.
pub fn rfc3339(secs: i64) -> String {
    DateTime::from_secs(secs)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| secs.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_the_query() {
        let query = Query {
            owner: Some("arn:aws:sts::1:assumed-role/R/alice".into()),
            since: Some(1_700_000_000),
            ..Query::default()
        };
        let filters = query.filters();
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0].key(), &SessionFilterKey::Owner);
        assert_eq!(filters[1].key(), &SessionFilterKey::InvokedAfter);
        assert_eq!(filters[1].value(), "2023-11-14T22:13:20Z");
        assert!(Query::default().filters().is_empty());
    }
}
