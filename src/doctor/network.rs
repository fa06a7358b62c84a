//! Check 6: can the target's SSM agent reach the SSM endpoints? Network
//! isolation makes SSH impossible; a VPC without internet access needs
//! interface endpoints for the services the agent and the helper call.

use super::report::Check;
use super::role::{Network, Target};

/// The interface endpoints a VPC without internet access needs.
const ENDPOINTS: [&str; 5] = ["ssm", "ssmmessages", "ec2messages", "logs", "sts"];

pub fn check(target: &Target, region: &str) -> Check {
    let (what, network) = match target {
        Target::Found {
            what,
            network: Some(network),
            ..
        } => (what, network),
        Target::Unknown(_) => {
            return Check::skip(
                "network",
                "the target could not be described (see role-trust)",
            )
        }
        _ => {
            return Check::skip(
                "network",
                "give --job, --notebook or --domain/--user-profile to check a target's network",
            )
        }
    };
    match network {
        Network::Public => Check::pass("network", format!("{what} runs with SageMaker-managed internet access")),
        Network::Job { isolated: true, .. } => Check::fail(
            "network",
            format!("{what} runs with network isolation: its SSM agent can reach nothing, so SSH is impossible"),
            "start the job again without network isolation (EnableNetworkIsolation=false, \
             enable_network_isolation=False in the SageMaker Python SDK)",
        ),
        Network::Job {
            subnets,
            security_groups,
            ..
        } => Check::warn(
            "network",
            format!(
                "{what} runs in subnets {} with no direct internet access: SSH works only through a NAT gateway or VPC interface endpoints",
                subnets.join(", ")
            ),
            endpoints_fix(region, subnets, security_groups),
        ),
        Network::Notebook {
            subnet,
            direct_internet: true,
            ..
        } => Check::pass(
            "network",
            format!("{what} runs in subnet {subnet} with direct internet access"),
        ),
        Network::Notebook {
            subnet,
            security_groups,
            ..
        } => Check::warn(
            "network",
            format!("{what} runs in subnet {subnet} with direct internet access disabled: SSH works only through a NAT gateway or VPC interface endpoints"),
            endpoints_fix(region, std::slice::from_ref(subnet), security_groups),
        ),
        Network::Studio { vpc_only: false, .. } => Check::pass(
            "network",
            format!("{what}: the domain uses public internet access"),
        ),
        Network::Studio {
            subnets,
            security_groups,
            ..
        } => Check::warn(
            "network",
            format!("{what}: the domain is VPC-only (subnets {}): SSH works only through a NAT gateway or VPC interface endpoints", subnets.join(", ")),
            endpoints_fix(region, subnets, security_groups),
        ),
    }
}

/// The commands creating every endpoint the agent needs, unless a NAT
/// gateway already routes the subnets to the internet.
fn endpoints_fix(region: &str, subnets: &[String], security_groups: &[String]) -> String {
    let first = subnets.first().map(String::as_str).unwrap_or("<subnet-id>");
    let subnets = if subnets.is_empty() {
        "<subnet-id>".to_string()
    } else {
        subnets.join(" ")
    };
    let groups = if security_groups.is_empty() {
        "<security-group-allowing-https-from-the-subnets>".to_string()
    } else {
        security_groups.join(" ")
    };
    let mut fix = format!(
        "unless a NAT gateway routes these subnets to the internet, create interface endpoints (private DNS on, HTTPS allowed from the subnets):\n\
         VPC=$(aws ec2 describe-subnets --region {region} --subnet-ids {first} --query 'Subnets[0].VpcId' --output text)"
    );
    for service in ENDPOINTS {
        fix.push_str(&format!(
            "\naws ec2 create-vpc-endpoint --region {region} --vpc-id \"$VPC\" --vpc-endpoint-type Interface \
             --service-name com.amazonaws.{region}.{service} --subnet-ids {subnets} --security-group-ids {groups} --private-dns-enabled"
        ));
    }
    fix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    fn found(network: Network) -> Target {
        Target::Found {
            what: "x".into(),
            role_arn: "arn".into(),
            network: Some(network),
        }
    }

    #[test]
    fn outcomes() {
        assert_eq!(check(&found(Network::Public), "r").status, Status::Pass);
        let isolated = Network::Job {
            subnets: vec![],
            security_groups: vec![],
            isolated: true,
        };
        assert_eq!(check(&found(isolated), "r").status, Status::Fail);
        let private = check(
            &found(Network::Notebook {
                subnet: "subnet-1".into(),
                security_groups: vec!["sg-1".into()],
                direct_internet: false,
            }),
            "eu-west-1",
        );
        assert_eq!(private.status, Status::Warn);
        let fix = private.fix.unwrap();
        for service in ENDPOINTS {
            assert!(fix.contains(&format!(
                "com.amazonaws.eu-west-1.{service} --subnet-ids subnet-1 --security-group-ids sg-1"
            )));
        }
        assert_eq!(check(&Target::None, "r").status, Status::Skip);
    }

    #[test]
    fn studio_and_vpc_jobs() {
        let studio = |vpc_only| {
            found(Network::Studio {
                subnets: vec!["subnet-1".into(), "subnet-2".into()],
                security_groups: vec!["sg-1".into()],
                vpc_only,
            })
        };
        assert_eq!(check(&studio(false), "r").status, Status::Pass);
        let vpc_only = check(&studio(true), "eu-west-1");
        assert_eq!(vpc_only.status, Status::Warn);
        assert!(vpc_only
            .detail
            .contains("VPC-only (subnets subnet-1, subnet-2)"));
        assert!(vpc_only.fix.unwrap().contains(
            "com.amazonaws.eu-west-1.ssm --subnet-ids subnet-1 subnet-2 --security-group-ids sg-1"
        ));
        let job = check(
            &found(Network::Job {
                subnets: vec!["subnet-9".into()],
                security_groups: vec![],
                isolated: false,
            }),
            "eu-west-1",
        );
        assert_eq!(job.status, Status::Warn);
        // No security group known: the fix says what kind to pass.
        assert!(job
            .fix
            .unwrap()
            .contains("--security-group-ids <security-group-allowing-https-from-the-subnets>"));
    }
}
