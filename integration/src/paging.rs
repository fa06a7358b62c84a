//! Offset paging, the one way every list call of the fake pages (SSM,
//! SageMaker, CloudWatch Logs, EC2): a page is up to `MaxResults` items from
//! an offset, and the next page's token is `fake-page-<its offset>`, absent
//! on the last page. Real tokens are opaque and clients hand them back
//! unread, so the fake's own form serves (docs/fake-aws.md, "Paging").

use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use crate::ssm::{ApiError, ApiResult};

const PREFIX: &str = "fake-page-";

/// Why a page was refused; each service answers in its own words.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `MaxResults` outside the operation's range.
    Size {
        value: i64,
        range: RangeInclusive<i64>,
    },
    /// A token the fake did not issue (or one past the end of the list).
    Token,
}

/// How an AWS JSON list operation (SSM, SageMaker) pages: where its items
/// go in the answer, `MaxResults`'s range and default, and its service's
/// answer to a bad token. Out of range, `MaxResults` is the Smithy range
/// check's ValidationException, as both services answer.
pub(crate) struct List {
    /// `TrainingJobSummaries`, `Sessions`…
    pub key: &'static str,
    pub sizes: RangeInclusive<i64>,
    pub default: usize,
    pub bad_token: fn() -> ApiError,
}

impl List {
    /// The answer: the page of `items` the request asks for, each shown by
    /// `show`, with the `NextToken` of the next page.
    pub(crate) fn answer<T>(
        &self,
        items: Vec<T>,
        max_results: Option<i64>,
        token: Option<&str>,
        show: impl FnMut(T) -> Value,
    ) -> ApiResult {
        let (items, next) = page(items, max_results, self.sizes.clone(), self.default, token)
            .map_err(|refusal| match refusal {
                Refusal::Size { value, range } => ApiError::validation(format!(
                    "1 validation error detected: Value '{value}' at 'maxResults' failed to \
                     satisfy constraint: Member must have value between {} and {}",
                    range.start(),
                    range.end()
                )),
                Refusal::Token => (self.bad_token)(),
            })?;
        let mut answer = Map::new();
        answer.insert(self.key.into(), items.into_iter().map(show).collect());
        if let Some(next) = next {
            answer.insert("NextToken".into(), next.into());
        }
        Ok(answer.into())
    }
}

/// The page of `items` that `token` starts (the first without one, or with
/// an empty one), `max_results` long (within `sizes`, `default` when
/// absent), and the token of the page after it.
pub(crate) fn page<T>(
    items: Vec<T>,
    max_results: Option<i64>,
    sizes: RangeInclusive<i64>,
    default: usize,
    token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), Refusal> {
    let size = match max_results {
        None => default,
        Some(value) if sizes.contains(&value) => value as usize,
        Some(value) => {
            return Err(Refusal::Size {
                value,
                range: sizes,
            })
        }
    };
    let start = match token {
        None | Some("") => 0,
        Some(token) => token
            .strip_prefix(PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or(Refusal::Token)?,
    };
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| format!("{PREFIX}{end}"));
    Ok((
        items.into_iter().skip(start).take(end - start).collect(),
        next,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pages_follow_their_tokens_to_the_end() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = page(items.clone(), Some(2), 1..=100, 10, None).unwrap();
        assert_eq!((first, next.as_deref()), (vec![0, 1], Some("fake-page-2")));
        let (last, next) = page(items.clone(), Some(4), 1..=100, 10, next.as_deref()).unwrap();
        assert_eq!((last, next), (vec![2, 3, 4], None));
        let (all, next) = page(items.clone(), None, 1..=100, 10, Some("")).unwrap();
        assert_eq!((all.len(), next), (5, None));
    }

    #[test]
    fn refuses_sizes_out_of_range_and_tokens_it_did_not_issue() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(
            page(items.clone(), Some(0), 1..=100, 10, None),
            Err(Refusal::Size {
                value: 0,
                range: 1..=100
            })
        );
        for token in ["bogus", "fake-page-x", "fake-page-6", "page-2"] {
            assert_eq!(
                page(items.clone(), None, 1..=100, 10, Some(token)),
                Err(Refusal::Token),
                "{token}"
            );
        }
        let list = List {
            key: "Items",
            sizes: 5..=50,
            default: 10,
            bad_token: || ApiError::new("InvalidNextToken", "x"),
        };
        let error = list
            .answer(items.clone(), Some(51), None, |n| json!(n))
            .unwrap_err();
        assert_eq!(error.code, "ValidationException");
        assert!(
            error
                .message
                .ends_with("Member must have value between 5 and 50"),
            "{}",
            error.message
        );
        let error = list
            .answer(items.clone(), None, Some("x"), |n| json!(n))
            .unwrap_err();
        assert_eq!(error.code, "InvalidNextToken");
        let answer = list
            .answer(items, Some(5), Some("fake-page-0"), |n| json!(n * 10))
            .unwrap();
        assert_eq!(answer, json!({"Items": [0, 10, 20, 30, 40]}));
    }
}
