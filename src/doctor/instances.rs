//! Check 7: the caller's managed instances (tagged `SSHOwner=<aws:userid>`):
//! how many are online, and which offline ones still cost advanced-tier fees.

use aws_config::{Region, SdkConfig};
use aws_sdk_ssm::types::{InstanceInformation, InstanceInformationStringFilter, PingStatus};

use super::identity::Me;
use super::report::Check;
use super::Failure;
use crate::policy::documents::OWNER_TAG;

pub async fn check(sdk: &SdkConfig, me: &Me, region: &str) -> Check {
    let config = aws_sdk_ssm::config::Builder::from(sdk)
        .region(Region::new(region.to_owned()))
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(config);
    let instances = match owned(&ssm, &me.user_id).await {
        Ok(instances) => instances,
        Err(failure) => return failure.skip("managed-instances").in_region(region),
    };
    let online = instances
        .iter()
        .filter(|i| i.ping_status == Some(PingStatus::Online))
        .count();
    let stale: Vec<&str> = instances
        .iter()
        .filter(|i| i.ping_status != Some(PingStatus::Online))
        .filter_map(|i| i.instance_id.as_deref())
        .collect();
    let summary = format!(
        "{} of your managed instances ({OWNER_TAG}={}): {online} online, {} offline",
        instances.len(),
        me.user_id,
        stale.len()
    );
    if stale.is_empty() {
        return Check::pass("managed-instances", summary).in_region(region);
    }
    let fix = stale
        .iter()
        .map(|id| {
            format!("aws ssm deregister-managed-instance --region {region} --instance-id {id}")
        })
        .collect::<Vec<_>>()
        .join("\n");
    Check::warn(
        "managed-instances",
        format!(
            "{summary}; offline registrations ({}) keep costing advanced-tier fees until deregistered",
            stale.join(", ")
        ),
        fix,
    )
    .in_region(region)
}

async fn owned(
    ssm: &aws_sdk_ssm::Client,
    user_id: &str,
) -> Result<Vec<InstanceInformation>, Failure> {
    let filter = |key: &str, value: &str| {
        InstanceInformationStringFilter::builder()
            .key(key)
            .values(value)
            .build()
            .expect("key and values are set")
    };
    ssm.describe_instance_information()
        .filters(filter("ResourceType", "ManagedInstance"))
        .filters(filter(&format!("tag:{OWNER_TAG}"), user_id))
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| Failure::from_sdk("ssm:DescribeInstanceInformation", e))
}
