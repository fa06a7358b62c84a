//! `doctor --space`'s network check. A space of a `VpcOnly` domain needs
//! interface endpoints for `ssm` (the space registers as a managed instance)
//! and `ssmmessages` (the session's data channel), and Studio itself those
//! for the SageMaker API and runtime (developer guide: "VPC only
//! communication with the internet"); `domain_vpc.rs` judges the VPC's.

use aws_config::SdkConfig;

use super::domain_vpc::{self, DomainVpc, Need};
use super::report::Check;
use super::Failure;
use crate::path::space::SpaceInfo;

const ID: &str = "space-network";

/// The endpoint services a VpcOnly space needs, after `com.amazonaws.<region>.`.
const SERVICES: [&str; 4] = ["ssm", "ssmmessages", "sagemaker.api", "sagemaker.runtime"];

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
    let vpc = DomainVpc {
        domain: info.domain.clone(),
        vpc: domain.vpc_id().unwrap_or_default().to_owned(),
        subnets: domain.subnet_ids().to_vec(),
        security_groups: Vec::new(),
    };
    let need = Need {
        id: ID,
        who: "the space",
        services: &SERVICES,
    };
    domain_vpc::check(sdk, &vpc, &need).await
}
