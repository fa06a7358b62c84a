//! What the SageMaker list operations share: the answer to a bad page
//! token, the `NameContains` filters, and the request of the two lists that
//! filter by name and status and answer newest first (ListTrainingJobs,
//! ListEndpoints). Paging itself is `paging.rs`.

use serde::Deserialize;
use serde_json::Value;

use crate::paging::List;
use crate::ssm::{ApiError, ApiResult};

/// SageMaker's answer to a page token it did not issue: its list
/// operations model no token error, so a ValidationException (wording chosen).
pub(crate) fn bad_token() -> ApiError {
    ApiError::validation("Invalid pagination token")
}

/// The `NameContains` filters of the list operations: the name holds the
/// string as given, case and all (docs/fake-aws.md, "NameContains").
pub(crate) fn name_contains(name: &str, filter: Option<&str>) -> bool {
    filter.is_none_or(|part| name.contains(part))
}

/// A resource ListTrainingJobs or ListEndpoints lists.
pub(crate) trait Listed {
    fn name(&self) -> &str;
    fn status(&self) -> &str;
    /// Epoch seconds.
    fn creation_time(&self) -> f64;
}

/// Both keep these in fields of the same names.
macro_rules! listed {
    ($($kind:ty),*) => {$(
        impl Listed for $kind {
            fn name(&self) -> &str {
                &self.name
            }
            fn status(&self) -> &str {
                &self.status
            }
            fn creation_time(&self) -> f64 {
                self.creation_time
            }
        }
    )*};
}

listed!(super::TrainingJob, super::Endpoint);

/// The request of those lists: `StatusEquals`, `NameContains` and paging.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct NewestFirst {
    max_results: Option<i64>,
    next_token: Option<String>,
    status_equals: Option<String>,
    name_contains: Option<String>,
}

impl NewestFirst {
    /// The page of `items` that pass the filters under `key`, newest first
    /// (both sort by CreationTime, Descending, by default), each shown by
    /// `show`; both page 1 to 100 items, 10 by default (API reference).
    pub(crate) fn answer<'a, T: Listed>(
        &self,
        key: &'static str,
        items: &'a [T],
        show: impl FnMut(&'a T) -> Value,
    ) -> ApiResult {
        let mut matching: Vec<&T> = items
            .iter()
            .filter(|i| {
                self.status_equals
                    .as_deref()
                    .is_none_or(|s| i.status() == s)
            })
            .filter(|i| name_contains(i.name(), self.name_contains.as_deref()))
            .collect();
        matching.sort_by(|a, b| b.creation_time().total_cmp(&a.creation_time()));
        let list = List {
            key,
            sizes: 1..=100,
            default: 10,
            bad_token,
        };
        list.answer(matching, self.max_results, self.next_token.as_deref(), show)
    }
}
