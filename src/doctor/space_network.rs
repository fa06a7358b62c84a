//! `doctor --space`'s network check. A space of a `VpcOnly` domain reaches
//! AWS only through its VPC: remote access needs interface endpoints for
//! `ssm` (the space registers as a managed instance) and `ssmmessages` (the
//! session's data channel), and Studio itself those for the SageMaker API
//! and runtime (developer guide: "VPC only communication with the
//! internet"), or a NAT gateway. Reading the endpoints takes EC2
//! DescribeVpcEndpoints, which needs `aws-sdk-ec2`: not built in for its
//! cost (docs/admin-guide.md, "Studio spaces"), so a VpcOnly domain WARNs
//! with the command that lists them and the ones to create.

use aws_config::SdkConfig;

use super::report::Check;
use super::Failure;
use crate::path::space::SpaceInfo;

const ID: &str = "space-network";

/// The endpoint services a VpcOnly space needs, after `com.amazonaws.<region>.`.
pub const SERVICES: [&str; 4] = ["ssm", "ssmmessages", "sagemaker.api", "sagemaker.runtime"];

pub async fn check(
    sdk: &SdkConfig,
    sagemaker: &aws_sdk_sagemaker::Client,
    info: &SpaceInfo,
) -> Check {
    let domain = match sagemaker
        .describe_domain()
        .domain_id(&info.domain)
        .send()
        .await
    {
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
            format!(
                "domain {} reaches SSM over the internet ({access})",
                info.domain
            ),
        );
    }
    let vpc = domain.vpc_id().unwrap_or_default();
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let names: Vec<String> = SERVICES
        .iter()
        .map(|service| format!("com.amazonaws.{region}.{service}"))
        .collect();
    let subnets = domain.subnet_ids().join(" ");
    let mut fix = vec![format!(
        "list what VPC {vpc} has: aws ec2 describe-vpc-endpoints --region {region} --filters Name=vpc-id,Values={vpc} \
         --query 'VpcEndpoints[].[ServiceName,State,PrivateDnsEnabled]'; create each one missing (available, private DNS on):"
    )];
    fix.extend(names.iter().map(|name| {
        format!(
            "aws ec2 create-vpc-endpoint --region {region} --vpc-endpoint-type Interface --vpc-id {vpc} \
             --service-name {name} --subnet-ids {subnets} --private-dns-enabled"
        )
    }));
    fix.push("(or route the subnets through a NAT gateway; the endpoints' security groups must let the domain's in on HTTPS)".into());
    Check::warn(
        ID,
        format!(
            "domain {} is VpcOnly (VPC {vpc}): the space reaches AWS only through it, and needs \
             interface endpoints for {} (not read: doctor does not call EC2)",
            info.domain,
            names.join(", ")
        ),
        fix.join("\n"),
    )
}
