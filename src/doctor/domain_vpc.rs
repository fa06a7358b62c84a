//! The verdict on a `VpcOnly` Studio domain's VPC endpoints, one for
//! `doctor --space` (`space-network`) and `doctor --domain/--user-profile`
//! (`network`). Such a domain reaches AWS only through its VPC: what runs in
//! it needs an interface endpoint for each service it calls, available and
//! with private DNS on, since its clients use the services' default host
//! names, which only private DNS points into the VPC (developer guide, "VPC
//! only communication with the internet"). EC2 DescribeVpcEndpoints on the
//! VPC (`ec2.rs`) shows which exist; a NAT gateway can stand in for them,
//! which doctor cannot see.

use aws_config::SdkConfig;

use super::ec2::{self, VpcEndpoint};
use super::report::Check;
use super::Failure;

/// A `VpcOnly` domain's network, as DescribeDomain (and the user profile) show it.
#[derive(Debug, Clone)]
pub struct DomainVpc {
    pub domain: String,
    pub vpc: String,
    pub subnets: Vec<String>,
    /// The security groups the fix gives the endpoints it creates; none
    /// known, EC2 gives them the VPC's default one.
    pub security_groups: Vec<String>,
}

/// What needs the endpoints: the check's id, who (for the messages: `the
/// space`) and the services, after `com.amazonaws.<region>.`.
pub struct Need<'a> {
    pub id: &'static str,
    pub who: &'a str,
    pub services: &'a [&'a str],
}

/// PASS when the VPC has a usable endpoint for every service `need` names,
/// FAIL naming each one it lacks with its fix, WARN when the endpoints
/// cannot be read.
pub async fn check(sdk: &SdkConfig, domain: &DomainVpc, need: &Need<'_>) -> Check {
    let DomainVpc {
        domain: id,
        vpc,
        subnets,
        security_groups,
    } = domain;
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let subnets = subnets.join(" ");
    let groups = if security_groups.is_empty() {
        String::new()
    } else {
        format!(" --security-group-ids {}", security_groups.join(" "))
    };
    let create = |name: &str| {
        format!(
            "aws ec2 create-vpc-endpoint --region {region} --vpc-endpoint-type Interface --vpc-id {vpc} \
             --service-name {name} --subnet-ids {subnets}{groups} --private-dns-enabled"
        )
    };
    let names: Vec<String> = need
        .services
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
                need.id,
                format!(
                    "domain {id} is VpcOnly (VPC {vpc}): {} needs interface endpoints for {}; \
                     doctor could not read them: {why}",
                    need.who,
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
            need.id,
            format!(
                "domain {id} is VpcOnly; VPC {vpc} has available endpoints with private DNS for {}",
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
            Some(endpoint) => format!(
                "aws ec2 modify-vpc-endpoint --region {region} --vpc-endpoint-id {endpoint} --private-dns-enabled"
            ),
            None => create(name),
        })
        .collect();
    Check::fail(
        need.id,
        format!(
            "domain {id} is VpcOnly and VPC {vpc} lacks what {} needs to reach AWS: {} \
             (unless its subnets reach the internet through a NAT gateway)",
            need.who,
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
/// (available, with private DNS).
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
