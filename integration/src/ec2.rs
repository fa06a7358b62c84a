//! EC2 in the AWS Query protocol (`Version=2016-11-15`, XML answers):
//! `DescribeVpcEndpoints` over the seeded VPC endpoints, the read
//! `sm-ssh doctor --space` makes of a VpcOnly domain's VPC. Filters, paging
//! and the error shape follow the EC2 API reference (docs/fake-aws.md, "EC2").

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::iam::xml::{Form, Xml};
use crate::paging::{self, Refusal};
use crate::server::AppState;
use crate::ssm::{record, ApiError, Event};

/// Every EC2 Query request names this version; it is how the fake's one
/// endpoint tells EC2 from IAM and STS.
const VERSION: &str = "2016-11-15";
const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
const ACTION: &str = "ec2:DescribeVpcEndpoints";
/// EC2 returns at most 1,000 items a page (API reference, `MaxResults`).
const MAX_PAGE: usize = 1000;

/// The EC2 side of a seeded account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Seed {
    pub vpc_endpoints: Vec<VpcEndpoint>,
    /// The page size when a request names no `MaxResults` (EC2's own is
    /// not documented; 1,000 when unset).
    pub page_size: Option<usize>,
}

/// One VPC endpoint, as `DescribeVpcEndpoints` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct VpcEndpoint {
    pub id: String,
    pub vpc_id: String,
    /// `com.amazonaws.<region>.<service>`.
    pub service_name: String,
    /// `available`, `pending`, `pendingAcceptance`, `rejected`, `failed`…
    pub state: String,
    pub private_dns_enabled: bool,
    /// `Interface`, `Gateway`, `GatewayLoadBalancer`…
    pub endpoint_type: String,
}

impl Default for VpcEndpoint {
    fn default() -> Self {
        VpcEndpoint {
            id: "vpce-0123456789abcdef0".into(),
            vpc_id: "vpc-0123456789abcdef0".into(),
            service_name: String::new(),
            state: "available".into(),
            private_dns_enabled: true,
            endpoint_type: "Interface".into(),
        }
    }
}

/// Available interface endpoints with private DNS in `vpc` for each of
/// `services` (`ssm`, `ssmmessages`…), with distinct ids.
pub fn interface_endpoints(region: &str, vpc: &str, services: &[&str]) -> Vec<VpcEndpoint> {
    services
        .iter()
        .enumerate()
        .map(|(n, service)| VpcEndpoint {
            id: format!("vpce-{:017x}", n + 1),
            vpc_id: vpc.into(),
            service_name: format!("com.amazonaws.{region}.{service}"),
            ..VpcEndpoint::default()
        })
        .collect()
}

/// True when the body is an EC2 Query request.
pub(crate) fn is_ec2(body: &[u8]) -> bool {
    Form::parse(body).get("Version") == Some(VERSION)
}

pub(crate) fn handle(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = Form::parse(body);
    let action = form.get("Action").unwrap_or_default();
    if action != "DescribeVpcEndpoints" {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            &format!("The action {action} is not valid for this web service."),
        );
    }
    let mut world = state.world();
    if let Some((region, service)) = crate::auth::signing_scope(headers) {
        if service != "ec2" || region != world.region {
            return error(
                StatusCode::FORBIDDEN,
                "SignatureDoesNotMatch",
                &format!(
                    "Credential should be scoped to a valid region and to the correct service: \
                     '{}' and 'ec2' (got {region:?} and {service:?}).",
                    world.region
                ),
            );
        }
    }
    let result = if world.denials.actions.contains(ACTION) {
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "UnauthorizedOperation",
            message: format!(
                "You are not authorized to perform this operation. User: {} is not authorized \
                 to perform: {ACTION} because no identity-based policy allows the {ACTION} action",
                world.identity.arn
            ),
        })
    } else {
        describe(&world.ec2, &form)
    };
    record(
        &mut world,
        ACTION,
        Event {
            error: result.as_ref().err(),
            ..Event::default()
        },
    );
    match result {
        Ok(xml) => xml,
        Err(e) => error(e.status, e.code, &e.message),
    }
}

fn describe(seed: &Seed, form: &Form) -> Result<Response, ApiError> {
    let invalid = |message: String| ApiError::new("InvalidParameterValue", message);
    let filters = filters(form);
    for (name, _) in &filters {
        if field(&VpcEndpoint::default(), name).is_none() {
            return Err(invalid(format!("The filter '{name}' is invalid")));
        }
    }
    let ids = form.numbered("VpcEndpointId");
    let mut matching: Vec<&VpcEndpoint> = seed
        .vpc_endpoints
        .iter()
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .filter(|e| {
            filters.iter().all(|(name, values)| {
                let value = field(e, name).unwrap_or_default();
                values.contains(&value)
            })
        })
        .collect();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    // Above the maximum EC2 answers a full page rather than an error.
    let size = form
        .get("MaxResults")
        .map(|text| {
            text.parse::<i64>()
                .map(|n| n.min(MAX_PAGE as i64))
                .map_err(|_| {
                    invalid(format!(
                        "Value ({text}) for parameter maxResults is invalid."
                    ))
                })
        })
        .transpose()?;
    let default = seed.page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let token = form.get("NextToken");
    let (page, next) =
        paging::page(matching, size, 1..=MAX_PAGE as i64, default, token).map_err(|refusal| {
            match refusal {
                Refusal::Size { value, .. } => invalid(format!(
                    "Value ({value}) for parameter maxResults is invalid."
                )),
                Refusal::Token => invalid(format!(
                    "Invalid value '{}' for NextToken",
                    token.unwrap_or_default()
                )),
            }
        })?;
    let mut xml = Xml::default();
    xml.leaf("requestId", &uuid::Uuid::new_v4().to_string());
    xml.open("vpcEndpointSet");
    for endpoint in &page {
        xml.open("item");
        xml.leaf("vpcEndpointId", &endpoint.id);
        xml.leaf("vpcEndpointType", &endpoint.endpoint_type);
        xml.leaf("vpcId", &endpoint.vpc_id);
        xml.leaf("serviceName", &endpoint.service_name);
        xml.leaf("state", &endpoint.state);
        xml.leaf(
            "privateDnsEnabled",
            if endpoint.private_dns_enabled {
                "true"
            } else {
                "false"
            },
        );
        xml.close("item");
    }
    xml.close("vpcEndpointSet");
    if let Some(next) = &next {
        xml.leaf("nextToken", next);
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeVpcEndpointsResponse xmlns=\"{NAMESPACE}\">{}</DescribeVpcEndpointsResponse>\n",
        xml.as_str()
    );
    Ok((
        StatusCode::OK,
        [("content-type", "text/xml;charset=UTF-8")],
        body,
    )
        .into_response())
}

/// `Filter.N.Name` with its `Filter.N.Value.M`, in order.
fn filters(form: &Form) -> Vec<(String, Vec<String>)> {
    (1..)
        .map_while(|n| {
            let name = form.get(&format!("Filter.{n}.Name"))?;
            Some((name.to_owned(), form.numbered(&format!("Filter.{n}.Value"))))
        })
        .collect()
}

/// The value a filter named `name` compares; `None` for a filter EC2 does
/// not have (of those this fake knows).
fn field(endpoint: &VpcEndpoint, name: &str) -> Option<String> {
    Some(match name {
        "vpc-id" => endpoint.vpc_id.clone(),
        "service-name" => endpoint.service_name.clone(),
        "vpc-endpoint-id" => endpoint.id.clone(),
        "vpc-endpoint-state" => endpoint.state.clone(),
        "vpc-endpoint-type" => endpoint.endpoint_type.clone(),
        _ => return None,
    })
}

/// EC2's error answer: `<Response><Errors><Error>` with `RequestID`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut xml = Xml::default();
    xml.open("Errors");
    xml.open("Error");
    xml.leaf("Code", code);
    xml.leaf("Message", message);
    xml.close("Error");
    xml.close("Errors");
    xml.leaf("RequestID", &uuid::Uuid::new_v4().to_string());
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response>{}</Response>\n",
        xml.as_str()
    );
    (status, [("content-type", "text/xml;charset=UTF-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(seed: &Seed, form: &str) -> String {
        let response = describe(seed, &Form::parse(form.as_bytes())).expect("answered");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn seed() -> Seed {
        let mut endpoints = interface_endpoints("us-east-1", "vpc-a", &["ssm", "ssmmessages"]);
        endpoints.push(VpcEndpoint {
            id: "vpce-other".into(),
            vpc_id: "vpc-b".into(),
            service_name: "com.amazonaws.us-east-1.ssm".into(),
            ..VpcEndpoint::default()
        });
        Seed {
            vpc_endpoints: endpoints,
            page_size: None,
        }
    }

    #[test]
    fn filters_on_vpc_and_service_name() {
        let xml = page(&seed(), "Filter.1.Name=vpc-id&Filter.1.Value.1=vpc-a");
        assert_eq!(xml.matches("<item>").count(), 2, "{xml}");
        assert!(!xml.contains("vpce-other"));
        let xml = page(
            &seed(),
            "Filter.1.Name=service-name&Filter.1.Value.1=com.amazonaws.us-east-1.ssm",
        );
        assert_eq!(xml.matches("<item>").count(), 2, "{xml}");
        assert!(xml.contains("vpce-other") && !xml.contains("ssmmessages"));
    }

    #[test]
    fn pages_with_max_results_and_next_token() {
        let xml = page(&seed(), "MaxResults=2");
        assert!(xml.contains("<nextToken>fake-page-2</nextToken>"), "{xml}");
        let xml = page(&seed(), "MaxResults=2&NextToken=fake-page-2");
        assert_eq!(xml.matches("<item>").count(), 1, "{xml}");
        assert!(!xml.contains("nextToken"));
        let form = Form::parse(b"NextToken=bogus");
        assert_eq!(
            describe(&seed(), &form).err().map(|e| e.code),
            Some("InvalidParameterValue")
        );
        let form = Form::parse(b"Filter.1.Name=colour&Filter.1.Value.1=red");
        assert_eq!(
            describe(&seed(), &form).err().map(|e| e.code),
            Some("InvalidParameterValue")
        );
    }
}
