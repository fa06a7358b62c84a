//! `doctor --space`'s network check. A space of a `VpcOnly` domain reaches
//! AWS only through its VPC: remote access needs interface endpoints for
//! `ssm` (the space registers as a managed instance) and `ssmmessages` (the
//! session's data channel), and Studio itself those for the SageMaker API
//! and runtime (developer guide: "VPC only communication with the
//! internet"). EC2 DescribeVpcEndpoints on the domain's VPC shows which
//! exist; a NAT gateway can stand in for them, which this check cannot see.

use aws_config::SdkConfig;
use aws_sdk_ec2::types::{Filter, VpcEndpoint};

use super::report::Check;
use super::Failure;
use crate::path::space::SpaceInfo;

const ID: &str = "space-network";

/// The endpoint services a VpcOnly space needs, after `com.amazonaws.<region>.`.
pub const SERVICES: [&str; 4] = ["ssm", "ssmmessages", "sagemaker.api", "sagemaker.runtime"];

pub async fn check(sdk: &SdkConfig, sagemaker: &aws_sdk_sagemaker::Client, info: &SpaceInfo) -> Check {
    let domain = match sagemaker.describe_domain().domain_id(&info.domain).send().await {
        Ok(domain) => domain,
        Err(error) => return Failure::from_sdk("sagemaker:DescribeDomain", error).skip(ID),
    };
    let access = domain
        .app_network_access_type()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    if access != "VpcOnly" {
        return Check::pass(
            ID,
            format!("domain {} reaches SSM over the internet ({access})", info.domain),
        );
    }
    let vpc = domain.vpc_id().unwrap_or_default();
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let endpoints = match vpc_endpoints(sdk, vpc).await {
        Ok(endpoints) => endpoints,
        Err(failure) => return failure.skip(ID),
    };
    let verdicts: Vec<(String, Option<String>)> = SERVICES
        .iter()
        .map(|service| {
            let name = format!("com.amazonaws.{region}.{service}");
            let problem = problem(&endpoints, &name);
            (name, problem)
        })
        .collect();
    let missing: Vec<&(String, Option<String>)> =
        verdicts.iter().filter(|(_, p)| p.is_some()).collect();
    if missing.is_empty() {
        let names: Vec<&str> = verdicts.iter().map(|(n, _)| n.as_str()).collect();
        return Check::pass(
            ID,
            format!(
                "domain {} is VpcOnly; VPC {vpc} has available endpoints with private DNS for {}",
                info.domain,
                names.join(", ")
            ),
        );
    }
    let detail: Vec<String> = missing
        .iter()
        .map(|(name, problem)| format!("{name}: {}", problem.as_deref().unwrap_or_default()))
        .collect();
    let subnets = domain.subnet_ids().join(" ");
    let fixes: Vec<String> = missing
        .iter()
        .map(|(name, _)| {
            format!(
                "aws ec2 create-vpc-endpoint --region {region} --vpc-endpoint-type Interface --vpc-id {vpc} \
                 --service-name {name} --subnet-ids {subnets} --private-dns-enabled"
            )
        })
        .collect();
    Check::fail(
        ID,
        format!(
            "domain {} is VpcOnly and VPC {vpc} lacks what the space needs to reach AWS: {} \
             (unless its subnets reach the internet through a NAT gateway)",
            info.domain,
            detail.join("; ")
        ),
        format!(
            "{}\n(the endpoints' security groups must let the domain's security groups in on HTTPS)",
            fixes.join("\n")
        ),
    )
}

/// Every VPC endpoint of `vpc`, all pages.
async fn vpc_endpoints(sdk: &SdkConfig, vpc: &str) -> Result<Vec<VpcEndpoint>, Failure> {
    let ec2 = aws_sdk_ec2::Client::new(sdk);
    let mut pages = ec2
        .describe_vpc_endpoints()
        .filters(Filter::builder().name("vpc-id").values(vpc).build())
        .into_paginator()
        .send();
    let mut endpoints = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Failure::from_sdk("ec2:DescribeVpcEndpoints", e))?;
        endpoints.extend(page.vpc_endpoints().iter().cloned());
    }
    Ok(endpoints)
}

/// Why the endpoints do not serve `service`; `None` when one does.
fn problem(endpoints: &[VpcEndpoint], service: &str) -> Option<String> {
    let found: Vec<&VpcEndpoint> = endpoints
        .iter()
        .filter(|e| e.service_name() == Some(service))
        .collect();
    if found.is_empty() {
        return Some("no endpoint".into());
    }
    let usable = |e: &&VpcEndpoint| {
        e.state().is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"))
            && e.private_dns_enabled() == Some(true)
    };
    if found.iter().any(usable) {
        return None;
    }
    let endpoint = found[0];
    Some(format!(
        "endpoint {} is {}{}",
        endpoint.vpc_endpoint_id().unwrap_or("-"),
        endpoint.state().map(|s| s.as_str()).unwrap_or("in an unknown state"),
        if endpoint.private_dns_enabled() == Some(true) {
            ""
        } else {
            " with private DNS off (the space's agent uses the default host names)"
        }
    ))
}
