//! The SSM and STS calls of resolution: who the caller is, which managed
//! instances carry which tags.

use std::collections::BTreeMap;

use aws_sdk_ssm::types::ResourceTypeForTagging;
use aws_sdk_ssm::types::{InstanceInformation, InstanceInformationStringFilter};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::candidate::Candidate;
use crate::error::AwsError;

/// How many ListTagsForResource calls run at once: enough to hide latency,
/// few enough to stay clear of SSM's throttling.
const TAG_CONCURRENCY: usize = 8;

/// The caller's `aws:userid` (what the `SSHOwner` tag holds).
pub async fn caller_user_id(sts: &aws_sdk_sts::Client) -> Result<String, AwsError> {
    let identity = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", &e))?;
    Ok(identity.user_id().unwrap_or_default().to_string())
}

/// A DescribeInstanceInformation string filter (`tag:SSHOwner`, `InstanceIds`, …).
pub fn filter(key: &str, values: &[&str]) -> InstanceInformationStringFilter {
    let mut builder = InstanceInformationStringFilter::builder().key(key);
    for value in values {
        builder = builder.values(*value);
    }
    builder.build().expect("key and values are set")
}

/// Every instance matching all `filters`, following NextToken.
pub async fn describe(
    ssm: &aws_sdk_ssm::Client,
    filters: Vec<InstanceInformationStringFilter>,
) -> Result<Vec<Candidate>, AwsError> {
    let mut found = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = ssm
            .describe_instance_information()
            .set_filters(Some(filters.clone()))
            .max_results(50)
            .set_next_token(next_token.take())
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            // An unknown id in an InstanceIds filter: nothing matches.
            Err(error) if service_code(&error) == Some("InvalidInstanceId") => return Ok(found),
            Err(error) => {
                return Err(AwsError::from_sdk(
                    "ssm:DescribeInstanceInformation",
                    &error,
                ))
            }
        };
        found.extend(page.instance_information_list().iter().map(candidate));
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
            _ => return Ok(found),
        }
    }
}

/// The given instances, each described on its own: AWS refuses a whole
/// InstanceIds filter when one id is gone (deregistered), and tag filters
/// cannot be combined with it.
pub async fn describe_ids(
    ssm: &aws_sdk_ssm::Client,
    ids: &[String],
) -> Result<Vec<Candidate>, AwsError> {
    let found: Vec<Vec<Candidate>> = stream::iter(ids)
        .map(|id| describe(ssm, vec![filter("InstanceIds", &[id.as_str()])]))
        .buffered(TAG_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(found.into_iter().flatten().collect())
}

fn service_code<E, R>(error: &aws_sdk_ssm::error::SdkError<E, R>) -> Option<&str>
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata,
{
    match error {
        aws_sdk_ssm::error::SdkError::ServiceError(context) => context.err().code(),
        _ => None,
    }
}

fn candidate(info: &InstanceInformation) -> Candidate {
    Candidate {
        instance_id: info.instance_id().unwrap_or_default().to_string(),
        ping_status: info
            .ping_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        last_ping: info.last_ping_date_time().map(|t| t.secs()),
        registered: info.registration_date().map(|t| t.secs()),
        computer_name: info.computer_name().unwrap_or_default().to_string(),
        tags: BTreeMap::new(),
    }
}

/// Fills in each candidate's tags, with bounded concurrency.
pub async fn fetch_tags(
    ssm: &aws_sdk_ssm::Client,
    candidates: Vec<Candidate>,
) -> Result<Vec<Candidate>, AwsError> {
    stream::iter(candidates)
        .map(|mut candidate| async move {
            candidate.tags = tags(ssm, &candidate.instance_id).await?;
            Ok::<_, AwsError>(candidate)
        })
        .buffered(TAG_CONCURRENCY)
        .try_collect()
        .await
}

/// One instance's tags (ListTagsForResource).
pub async fn tags(
    ssm: &aws_sdk_ssm::Client,
    instance_id: &str,
) -> Result<BTreeMap<String, String>, AwsError> {
    let output = ssm
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::ManagedInstance)
        .resource_id(instance_id)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ssm:ListTagsForResource", &e))?;
    Ok(output
        .tag_list()
        .iter()
        .map(|tag| (tag.key().to_string(), tag.value().to_string()))
        .collect())
}
