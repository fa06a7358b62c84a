//! The activation-tier service setting and CreateActivation: what `sm-ssh
//! doctor` checks and what registering a SageMaker container needs.

use std::collections::BTreeMap;

use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_action, input, now, recorded, ApiError, ApiResult, Event};
use crate::server::AppState;
use crate::world::{Activation, World};

const TIER: &str = "/ssm/managed-instance/activation-tier";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SettingInput {
    setting_id: String,
    setting_value: Option<String>,
}

/// Accepts the path form and the ARN form
/// (`arn:aws:ssm:REGION:ACCOUNT:servicesetting/ssm/…`).
fn setting_path(world: &World, id: &str) -> Result<(), ApiError> {
    let path = match id.split_once(":servicesetting") {
        Some((_, p)) if id.starts_with("arn:") => p,
        _ => id,
    };
    if path == TIER {
        Ok(())
    } else {
        Err(ApiError::new(
            "ServiceSettingNotFound",
            format!(
                "The service setting {id} was not found in {} for account {}.",
                world.region, world.identity.account
            ),
        ))
    }
}

fn setting_arn(world: &World) -> String {
    format!(
        "arn:aws:ssm:{}:{}:servicesetting{TIER}",
        world.region, world.identity.account
    )
}

pub(super) fn get(state: &AppState, body: &[u8]) -> ApiResult {
    let req: SettingInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "ssm:GetServiceSetting", &setting_arn(&world))?;
        setting_path(&world, &req.setting_id)?;
        let status = if world.activation_tier == "standard" {
            "Default"
        } else {
            "Customized"
        };
        Ok(json!({ "ServiceSetting": {
            "SettingId": TIER,
            "SettingValue": world.activation_tier,
            "LastModifiedDate": now(),
            "LastModifiedUser": "System",
            "ARN": setting_arn(&world),
            "Status": status,
        }}))
    })();
    recorded(
        &mut world,
        "ssm:GetServiceSetting",
        Event::on(&req.setting_id),
        result,
    )
}

pub(super) fn update(state: &AppState, body: &[u8]) -> ApiResult {
    let req: SettingInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "ssm:UpdateServiceSetting", &setting_arn(&world))?;
        setting_path(&world, &req.setting_id)?;
        match req.setting_value.as_deref() {
            Some(v @ ("standard" | "advanced")) => {
                world.activation_tier = v.to_string();
                Ok(json!({}))
            }
            other => Err(ApiError::validation(format!(
                "The value {} is not valid for {TIER}; use standard or advanced.",
                other.unwrap_or("(none)")
            ))),
        }
    })();
    recorded(
        &mut world,
        "ssm:UpdateServiceSetting",
        Event::on(&req.setting_id),
        result,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ActivationInput {
    iam_role: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    default_instance_name: String,
    registration_limit: Option<i32>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

pub(super) fn create_activation(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ActivationInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "ssm:CreateActivation", "*")?;
        check_action(&world, "iam:PassRole", &req.iam_role)?;
        let limit = req.registration_limit.unwrap_or(1);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::validation(
                "1 validation error detected: Value at 'registrationLimit' failed to satisfy \
                 constraint: Member must have value between 1 and 1000",
            ));
        }
        let activation = Activation {
            id: uuid::Uuid::new_v4().to_string(),
            code: Alphanumeric.sample_string(&mut rand::rng(), 20),
            iam_role: req.iam_role.clone(),
            description: req.description.clone(),
            default_instance_name: req.default_instance_name.clone(),
            registration_limit: limit,
            tags: req
                .tags
                .iter()
                .map(|t| (t.key.clone(), t.value.clone()))
                .collect::<BTreeMap<_, _>>(),
        };
        let reply: Value = json!({
            "ActivationId": activation.id,
            "ActivationCode": activation.code,
        });
        world.activations.insert(activation.id.clone(), activation);
        Ok(reply)
    })();
    recorded(
        &mut world,
        "ssm:CreateActivation",
        Event::on(&req.iam_role),
        result,
    )
}
