//! DescribeSessions: the sessions StartSession created, `Active` (not over)
//! or `History` (terminated, or ended by the agent), with the filters and
//! paging of the real API (SSM API reference, DescribeSessions and
//! SessionFilter; see docs/fake-aws.md for what the fake chose where the
//! reference is silent).

use aws_smithy_types::date_time::{DateTime, Format as DateTimeFormat};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_token, check_action, input, recorded, ApiError, ApiResult, Event};
use crate::paging::List;
use crate::server::AppState;
use crate::world::{SessionRecord, World};

/// The page size when MaxResults is not given is 20 (the reference gives none).
const LIST: List = List {
    key: "Sessions",
    sizes: 1..=200,
    default: 20,
    bad_token,
};
/// SessionFilter's key enum.
const KEYS: [&str; 7] = [
    "InvokedAfter",
    "InvokedBefore",
    "Target",
    "Owner",
    "Status",
    "SessionId",
    "AccessType",
];
/// The SessionStatus enum.
const STATUSES: [&str; 6] = [
    "Connected",
    "Connecting",
    "Disconnected",
    "Terminated",
    "Terminating",
    "Failed",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInput {
    state: String,
    max_results: Option<i64>,
    next_token: Option<String>,
    filters: Option<Vec<Filter>>,
}

/// SessionFilter members are lower case on the wire.
#[derive(Deserialize)]
struct Filter {
    key: String,
    value: String,
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: DescribeInput = input(body)?;
    let mut world = state.world();
    let result = describe_in(&world, req);
    recorded(&mut world, "ssm:DescribeSessions", Event::default(), result)
}

fn describe_in(world: &World, req: DescribeInput) -> ApiResult {
    check_action(world, "ssm:DescribeSessions", "*")?;
    let history = match req.state.as_str() {
        "Active" => false,
        "History" => true,
        other => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'state' failed to satisfy \
                 constraint: Member must satisfy enum value set: [Active, History]"
            )))
        }
    };
    let filters = req.filters.unwrap_or_default();
    if filters.len() > 6 {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'filters' failed to satisfy constraint: \
             Member must have length less than or equal to 6",
        ));
    }
    let filters: Vec<Match> = filters
        .iter()
        .enumerate()
        .map(|(n, f)| Match::parse(n + 1, f))
        .collect::<Result<_, _>>()?;
    let mut matching: Vec<(&String, &SessionRecord)> = world
        .session_records
        .iter()
        .filter(|(_, r)| r.ended.is_some() == history)
        .filter(|(id, r)| filters.iter().all(|f| f.matches(id, r)))
        .collect();
    // Newest first, as the console lists them.
    matching.sort_by(|a, b| b.1.started.total_cmp(&a.1.started).then(a.0.cmp(b.0)));
    LIST.answer(
        matching,
        req.max_results,
        req.next_token.as_deref(),
        |(id, r)| session(id, r),
    )
}

/// The status DescribeSessions reports. The fake never has a session
/// `Disconnected`, `Terminating` or `Failed` (docs/fake-aws.md).
fn status(record: &SessionRecord) -> &'static str {
    match (record.ended, record.connected) {
        (Some(_), _) => "Terminated",
        (None, true) => "Connected",
        (None, false) => "Connecting",
    }
}

/// The `Session` shape aws-sdk-ssm parses (dates are epoch seconds).
fn session(id: &str, record: &SessionRecord) -> Value {
    let mut out = json!({
        "SessionId": id,
        "Target": record.target,
        "Status": status(record),
        "StartDate": record.started,
        "DocumentName": record.document,
        "Owner": record.owner.arn,
        "OutputUrl": {},
    });
    if let Some(ended) = record.ended {
        out["EndDate"] = json!(ended);
    }
    if let Some(reason) = &record.reason {
        out["Reason"] = json!(reason);
    }
    out
}

/// One filter, checked and ready to apply.
enum Match {
    After(f64),
    Before(f64),
    Target(String),
    Owner(String),
    Status(String),
    SessionId(String),
    AccessType(String),
}

impl Match {
    fn parse(n: usize, filter: &Filter) -> Result<Match, ApiError> {
        let value = filter.value.clone();
        if value.is_empty() || value.len() > 400 {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value at 'filters.{n}.member.value' failed to \
                 satisfy constraint: Member must have length between 1 and 400"
            )));
        }
        let time = |value: &str| {
            DateTime::from_str(value, DateTimeFormat::DateTime)
                .map(|t| t.as_secs_f64())
                .map_err(|_| {
                    ApiError::new(
                        "InvalidFilterValue",
                        format!("The filter value {value} is not a valid timestamp."),
                    )
                })
        };
        Ok(match filter.key.as_str() {
            "InvokedAfter" => Match::After(time(&value)?),
            "InvokedBefore" => Match::Before(time(&value)?),
            "Target" => Match::Target(value),
            "Owner" => Match::Owner(value),
            "Status" if STATUSES.contains(&value.as_str()) => Match::Status(value),
            "Status" => {
                return Err(ApiError::new(
                    "InvalidFilterValue",
                    format!("The filter value {value} is not a valid session status."),
                ))
            }
            "SessionId" => Match::SessionId(value),
            "AccessType" => Match::AccessType(value),
            other => {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'filters.{n}.member.key' \
                     failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                    KEYS.join(", ")
                )))
            }
        })
    }

    fn matches(&self, id: &str, record: &SessionRecord) -> bool {
        match self {
            Match::After(t) => record.started >= *t,
            Match::Before(t) => record.started < *t,
            Match::Target(target) => record.target == *target,
            Match::Owner(owner) => record.owner.arn == *owner,
            Match::Status(wanted) => status(record) == wanted,
            Match::SessionId(wanted) => id == wanted,
            // Every session the fake starts is a standard one.
            Match::AccessType(kind) => kind == "Standard",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::Identity;

    fn record(owner: &str, started: f64, ended: Option<f64>) -> SessionRecord {
        SessionRecord {
            target: "mi-0123456789abcdef0".into(),
            document: "AWS-StartSSHSession".into(),
            owner: Identity {
                arn: owner.into(),
                ..Identity::default()
            },
            reason: Some("sm-ssh 0.1.0: job.training.sagemaker".into()),
            started,
            ended,
            connected: true,
        }
    }

    fn world() -> World {
        let mut world = World::default();
        for (id, owner, started, ended) in [
            ("alice-1", "arn:alice", 100.0, None),
            ("alice-2", "arn:alice", 200.0, Some(250.0)),
            ("bob-1", "arn:bob", 300.0, None),
        ] {
            world
                .session_records
                .insert(id.into(), record(owner, started, ended));
        }
        world
    }

    fn ids(body: Value) -> Vec<String> {
        let req: DescribeInput = serde_json::from_value(body).unwrap();
        let out = describe_in(&world(), req).unwrap();
        out["Sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["SessionId"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn states_filters_and_order() {
        assert_eq!(ids(json!({"State": "Active"})), ["bob-1", "alice-1"]);
        assert_eq!(ids(json!({"State": "History"})), ["alice-2"]);
        let owner = json!({"State": "Active", "Filters": [{"key": "Owner", "value": "arn:alice"}]});
        assert_eq!(ids(owner), ["alice-1"]);
        let after = json!({"State": "Active", "Filters": [
            {"key": "InvokedAfter", "value": "1970-01-01T00:02:30Z"}]});
        assert_eq!(ids(after), ["bob-1"]);
        let before = json!({"State": "Active", "Filters": [
            {"key": "InvokedBefore", "value": "1970-01-01T00:02:30Z"}]});
        assert_eq!(ids(before), ["alice-1"]);
        let status =
            json!({"State": "History", "Filters": [{"key": "Status", "value": "Terminated"}]});
        assert_eq!(ids(status), ["alice-2"]);
    }

    #[test]
    fn bad_requests_are_refused() {
        let world = world();
        for (body, code) in [
            (json!({"State": "Old"}), "ValidationException"),
            (
                json!({"State": "Active", "MaxResults": 0}),
                "ValidationException",
            ),
            (
                json!({"State": "Active", "MaxResults": 201}),
                "ValidationException",
            ),
            (
                json!({"State": "Active", "NextToken": "x"}),
                "InvalidNextToken",
            ),
            (
                json!({"State": "Active", "Filters": [{"key": "Nope", "value": "x"}]}),
                "ValidationException",
            ),
            (
                json!({"State": "Active", "Filters": [{"key": "Status", "value": "Gone"}]}),
                "InvalidFilterValue",
            ),
            (
                json!({"State": "Active", "Filters": [{"key": "InvokedAfter", "value": "today"}]}),
                "InvalidFilterValue",
            ),
        ] {
            let req: DescribeInput = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(describe_in(&world, req).unwrap_err().code, code, "{body}");
        }
    }

    #[test]
    fn pages_follow_the_token() {
        let req: DescribeInput =
            serde_json::from_value(json!({"State": "Active", "MaxResults": 1})).unwrap();
        let first = describe_in(&world(), req).unwrap();
        assert_eq!(first["Sessions"][0]["SessionId"], "bob-1");
        let token = first["NextToken"].as_str().unwrap();
        let req: DescribeInput =
            serde_json::from_value(json!({"State": "Active", "MaxResults": 1, "NextToken": token}))
                .unwrap();
        let second = describe_in(&world(), req).unwrap();
        assert_eq!(second["Sessions"][0]["SessionId"], "alice-1");
        assert!(second.get("NextToken").is_none());
        assert_eq!(second["Sessions"][0]["Status"], "Connected");
        assert!(second["Sessions"][0].get("EndDate").is_none());
    }
}
