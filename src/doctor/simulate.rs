//! IAM's policy simulator (`iam:SimulatePrincipalPolicy`): it also applies
//! service control policies and permission boundaries, which the local
//! evaluation of the identity policies cannot see, so doctor compares the two.

use aws_config::retry::RetryConfig;
use aws_config::SdkConfig;
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum, PolicyEvaluationDecisionType};

use crate::policy::documents::Requirement;
use crate::policy::eval::{Decision, Request};

pub const PERMISSION: &str = "iam:SimulatePrincipalPolicy";

/// What the simulator said about a principal's requirements.
pub struct Simulation {
    /// The IAM user or role the simulation is for.
    pub principal: String,
    /// One decision per requirement, in order, or why the simulation was skipped.
    pub decisions: Result<Vec<Decision>, String>,
}

/// Simulates every requirement for `principal` (an IAM user or role ARN).
pub async fn run(sdk: &SdkConfig, principal: &str, requirements: &[Requirement]) -> Simulation {
    // One attempt: the simulation is optional, and an endpoint without it
    // (moto answers 500) should not cost retries with backoff.
    let config = aws_sdk_iam::config::Builder::from(sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    let client = aws_sdk_iam::Client::from_conf(config);
    let mut decisions = Vec::with_capacity(requirements.len());
    for requirement in requirements {
        match decide(&client, principal, &requirement.request).await {
            Ok(decision) => decisions.push(decision),
            Err(reason) => {
                return Simulation {
                    principal: principal.to_owned(),
                    decisions: Err(reason),
                }
            }
        }
    }
    Simulation {
        principal: principal.to_owned(),
        decisions: Ok(decisions),
    }
}

async fn decide(
    client: &aws_sdk_iam::Client,
    principal: &str,
    request: &Request,
) -> Result<Decision, String> {
    let mut call = client
        .simulate_principal_policy()
        .policy_source_arn(principal)
        .action_names(&request.action)
        .resource_arns(&request.resource);
    for (key, values) in request.context() {
        call = call.context_entries(
            ContextEntry::builder()
                .context_key_name(key)
                .set_context_key_values(Some(values.to_vec()))
                .context_key_type(ContextKeyTypeEnum::String)
                .build(),
        );
    }
    let output = call.send().await.map_err(|error| match error.code() {
        Some(code) if super::is_denied(code) => {
            format!("not allowed to call {PERMISSION} ({code})")
        }
        Some(code) => format!("IAM answered {code}"),
        None => match error.raw_response() {
            Some(response) => format!("IAM answered HTTP {}", response.status().as_u16()),
            None => "the call to IAM failed".to_owned(),
        },
    })?;
    let result = output
        .evaluation_results
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.eval_action_name.eq_ignore_ascii_case(&request.action))
        .ok_or_else(|| format!("IAM answered no decision for {}", request.action))?;
    match result.eval_decision {
        PolicyEvaluationDecisionType::Allowed => Ok(Decision::Allow),
        PolicyEvaluationDecisionType::ExplicitDeny => Ok(Decision::ExplicitDeny),
        PolicyEvaluationDecisionType::ImplicitDeny => Ok(Decision::ImplicitDeny),
        other => Err(format!(
            "IAM answered an unknown decision {}",
            other.as_str()
        )),
    }
}

/// A decision as IAM names it.
pub fn verdict(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allowed",
        Decision::ExplicitDeny => "explicitDeny",
        Decision::ImplicitDeny => "implicitDeny",
    }
}
