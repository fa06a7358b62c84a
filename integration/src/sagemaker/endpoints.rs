//! Inference endpoints: DescribeEndpoint, DescribeEndpointConfig (where a
//! production variant's `EnableSSMAccess` lives, as in the API reference's
//! `ProductionVariant`) and ListEndpoints (paged, `StatusEquals`,
//! `NameContains`). Which instances serve a variant is not in any
//! SageMaker answer: the endpoint's CloudWatch log streams tell (`logs.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::lists::NewestFirst;
use crate::server::AppState;
use crate::ssm::{check_action, input, recorded, ApiError, ApiResult, Event};
use crate::world::World;

/// An endpoint and its endpoint configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    pub name: String,
    /// `InService`, `Creating`, `Updating`, `Failed`, …
    pub status: String,
    /// Empty: `<name>-config`.
    pub config_name: String,
    pub variants: Vec<Variant>,
    pub creation_time: f64,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint {
            name: String::new(),
            status: "InService".into(),
            config_name: String::new(),
            variants: vec![Variant::default()],
            creation_time: 1_700_000_000.0,
        }
    }
}

/// A production variant and the instances serving it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Variant {
    pub name: String,
    pub instance_type: String,
    /// The EC2 instance ids serving the variant (`i-…`).
    pub instance_ids: Vec<String>,
    /// Container names of a multi-container variant; empty for one container.
    pub containers: Vec<String>,
    /// `EnableSSMAccess`.
    pub ssm_access: bool,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            name: "AllTraffic".into(),
            instance_type: "ml.m5.large".into(),
            instance_ids: Vec::new(),
            containers: Vec::new(),
            ssm_access: true,
        }
    }
}

impl Endpoint {
    pub fn config(&self) -> String {
        if self.config_name.is_empty() {
            format!("{}-config", self.name)
        } else {
            self.config_name.clone()
        }
    }

    /// The Session Manager targets of its SSM-enabled variants:
    /// `sagemaker-endpoint:<endpoint>_<variant>_<instance-id>[_<container>]`
    /// (SageMaker developer guide, "Access containers through SSM").
    pub fn native_targets(&self) -> Vec<String> {
        let mut targets = Vec::new();
        for variant in self.variants.iter().filter(|v| v.ssm_access) {
            for id in &variant.instance_ids {
                let base = format!("sagemaker-endpoint:{}_{}_{id}", self.name, variant.name);
                if variant.containers.is_empty() {
                    targets.push(base);
                } else {
                    targets.extend(variant.containers.iter().map(|c| format!("{base}_{c}")));
                }
            }
        }
        targets
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointInput {
    endpoint_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigInput {
    endpoint_config_name: String,
}

fn arn(world: &World, kind: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:{kind}/{}",
        world.region,
        world.identity.account,
        name.to_ascii_lowercase()
    )
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: EndpointInput = input(body)?;
    let mut world = state.world();
    let endpoint_arn = arn(&world, "endpoint", &req.endpoint_name);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeEndpoint", &endpoint_arn)?;
        let endpoint = world
            .sagemaker
            .endpoints
            .iter()
            .find(|e| e.name == req.endpoint_name)
            .ok_or_else(|| {
                ApiError::validation(format!("Could not find endpoint \"{endpoint_arn}\"."))
            })?;
        let variants: Vec<Value> = endpoint
            .variants
            .iter()
            .map(|v| {
                json!({
                    "VariantName": v.name,
                    "CurrentWeight": 1.0,
                    "DesiredWeight": 1.0,
                    "CurrentInstanceCount": v.instance_ids.len(),
                    "DesiredInstanceCount": v.instance_ids.len(),
                })
            })
            .collect();
        Ok(json!({
            "EndpointName": endpoint.name,
            "EndpointArn": endpoint_arn,
            "EndpointConfigName": endpoint.config(),
            "ProductionVariants": variants,
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.creation_time,
            "LastModifiedTime": endpoint.creation_time,
        }))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeEndpoint",
        Event::on(&endpoint_arn),
        result,
    )
}

pub(super) fn describe_config(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ConfigInput = input(body)?;
    let mut world = state.world();
    let config_arn = arn(&world, "endpoint-config", &req.endpoint_config_name);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeEndpointConfig", &config_arn)?;
        let endpoint = world
            .sagemaker
            .endpoints
            .iter()
            .find(|e| e.config() == req.endpoint_config_name)
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "Could not find endpoint configuration \"{config_arn}\"."
                ))
            })?;
        let variants: Vec<Value> = endpoint
            .variants
            .iter()
            .map(|v| {
                json!({
                    "VariantName": v.name,
                    "ModelName": format!("{}-model", endpoint.name),
                    "InitialInstanceCount": v.instance_ids.len().max(1),
                    "InstanceType": v.instance_type,
                    "InitialVariantWeight": 1.0,
                    "EnableSSMAccess": v.ssm_access,
                })
            })
            .collect();
        Ok(json!({
            "EndpointConfigName": endpoint.config(),
            "EndpointConfigArn": config_arn,
            "ProductionVariants": variants,
            "CreationTime": endpoint.creation_time,
        }))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeEndpointConfig",
        Event::on(&config_arn),
        result,
    )
}

pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: NewestFirst = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListEndpoints", "*")?;
        req.answer("Endpoints", &world.sagemaker.endpoints, |e| {
            json!({
                "EndpointName": e.name,
                "EndpointArn": arn(&world, "endpoint", &e.name),
                "CreationTime": e.creation_time,
                "LastModifiedTime": e.creation_time,
                "EndpointStatus": e.status,
            })
        })
    })();
    recorded(
        &mut world,
        "sagemaker:ListEndpoints",
        Event::default(),
        result,
    )
}
