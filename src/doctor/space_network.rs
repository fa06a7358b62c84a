//! `doctor --space`'s network check. A space of a `VpcOnly` domain reaches
//! AWS only through its VPC: remote access needs interface endpoints for
//! `ssm` (the space registers as a managed instance) and `ssmmessages` (the
//! session's data channel), and Studio itself those for the SageMaker API
//! and runtime (developer guide: "VPC only communication with the
//! internet"). EC2 DescribeVpcEndpoints on the domain's VPC (`ec2.rs`) shows
//! which exist; a NAT gateway can stand in for them, which this check cannot see.

use aws_config::SdkConfig;

use super::ec2::{self, VpcEndpoint};
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
    let subnets = domain.subnet_ids().join(" ");
    let create = |name: &str| {
        format!(
            "aws ec2 create-vpc-endpoint --region {region} --vpc-endpoint-type Interface --vpc-id {vpc} \
             --service-name {name} --subnet-ids {subnets} --private-dns-enabled"
        )
    };
    let names: Vec<String> = SERVICES
        .iter()
        .map(|service| format!("com.amazonaws.{region}.{service}"))
        .collect();
    let endpoints = match ec2::vpc_endpoints(sdk, vpc).await {
        Ok(endpoints) => endpoints,
        Err(error) => {
            // Unread, the need is still real: say what to look for.
            let (why, grant) = match Failure::from_sdk("ec2:DescribeVpcEndpoints", error) {
                Failure::Denied(action) => (
                    format!("not allowed to call {action}"),
                    format!("grant {action} to run this check, or "),
                ),
                Failure::NotFound(message) | Failure::Other(message) => (message, String::new()),
            };
            let mut fix = vec![format!(
                "{grant}list what VPC {vpc} has: aws ec2 describe-vpc-endpoints --region {region} \
                 --filters Name=vpc-id,Values={vpc} --query 'VpcEndpoints[].[ServiceName,State,PrivateDnsEnabled]'; \
                 create each one missing (available, private DNS on):"
            )];
            fix.extend(names.iter().map(|name| create(name)));
            return Check::warn(
                ID,
                format!(
                    "domain {} is VpcOnly (VPC {vpc}): the space needs interface endpoints for {}; \
                     doctor could not read them: {why}",
                    info.domain,
                    names.join(", ")
                ),
                fix.join("\n"),
            );
        }
    };
    let problems: Vec<(&String, Problem)> = names
        .iter()
        .filter_map(|name| problem(&endpoints, name).map(|p| (name, p)))
        .collect();
    if problems.is_empty() {
        return Check::pass(
            ID,
            format!(
                "domain {} is VpcOnly; VPC {vpc} has available endpoints with private DNS for {}",
                info.domain,
                names.join(", ")
            ),
        );
    }
    let detail: Vec<String> = problems
        .iter()
        .map(|(name, problem)| format!("{name}: {}", problem.what))
        .collect();
    let fixes: Vec<String> = problems
        .iter()
        .map(|(name, problem)| match &problem.dns_off {
            Some(id) => format!(
                "aws ec2 modify-vpc-endpoint --region {region} --vpc-endpoint-id {id} --private-dns-enabled"
            ),
            None => create(name),
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

/// Why no endpoint of the VPC serves a service.
struct Problem {
    what: String,
    /// The endpoint to turn private DNS on for, when that is all it lacks.
    dns_off: Option<String>,
}

/// Why the endpoints do not serve `service`; `None` when one does
/// (available, with private DNS: the space's agent uses the default host names).
fn problem(endpoints: &[VpcEndpoint], service: &str) -> Option<Problem> {
    let found: Vec<&VpcEndpoint> = endpoints
        .iter()
        .filter(|e| e.service_name == service)
        .collect();
    let available = |e: &VpcEndpoint| e.state.eq_ignore_ascii_case("available");
    if found.iter().any(|e| available(e) && e.private_dns_enabled) {
        return None;
    }
    // An available one first: it needs only private DNS.
    let Some(endpoint) = found.iter().find(|e| available(e)).or(found.first()) else {
        return Some(Problem {
            what: "no endpoint".into(),
            dns_off: None,
        });
    };
    if available(endpoint) {
        return Some(Problem {
            what: format!("endpoint {} has private DNS off", endpoint.id),
            dns_off: Some(endpoint.id.clone()),
        });
    }
    Some(Problem {
        what: format!("endpoint {} is {}", endpoint.id, endpoint.state),
        dns_off: None,
    })
}
