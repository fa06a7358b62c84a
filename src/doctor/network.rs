//! Check 6: can the target's SSM agent reach the SSM endpoints? Network
//! isolation makes SSH impossible; a VPC without internet access needs
//! interface endpoints for the services the agent and the helper call. A
//! `VpcOnly` Studio domain's VPC is read and judged as `doctor --space`
//! judges it (`domain_vpc.rs`); a job's or notebook's subnets only warn.

use aws_config::SdkConfig;

use super::domain_vpc::{self, Need};
use super::report::Check;
use super::role::{Network, Target};

/// The interface endpoints a VPC without internet access needs.
const ENDPOINTS: [&str; 5] = ["ssm", "ssmmessages", "ec2messages", "logs", "sts"];

pub async fn check(sdk: &SdkConfig, target: &Target, region: &str) -> Check {
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
        Network::Studio { vpc: None, .. } => Check::pass(
            "network",
            format!("{what}: the domain uses public internet access"),
        ),
        Network::Studio {
            profile,
            vpc: Some(vpc),
        } => {
            let who = format!("the SSM agent in user profile {profile}'s apps");
            let need = Need {
                id: "network",
                who: &who,
                services: &ENDPOINTS,
            };
            domain_vpc::check(sdk, vpc, &need).await
        }
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

    /// The check where it needs no AWS call (a VpcOnly domain's is in tests/doctor.rs).
    fn check(target: &Target, region: &str) -> Check {
        let sdk = SdkConfig::builder().build();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(super::check(&sdk, target, region))
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
    fn public_studio_and_vpc_jobs() {
        let studio = found(Network::Studio {
            profile: "alice".into(),
            vpc: None,
        });
        assert_eq!(check(&studio, "r").status, Status::Pass);
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
