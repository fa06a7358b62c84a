//! EC2 `DescribeVpcEndpoints`, the one EC2 call doctor makes, without
//! `aws-sdk-ec2` (by far the SDK's largest crate: docs/architecture.md,
//! "EC2 without aws-sdk-ec2"). The request goes through the SDK's own
//! orchestrator (`Operation::builder`, as aws-config builds its own calls)
//! with the SdkConfig's HTTP client, endpoint, credentials, retries and
//! timeouts, signed by aws-runtime's SigV4 scheme; only the Query form and
//! the XML answer are written here, with the SDK's Query writer and XML reader.

use aws_config::SdkConfig;
use aws_runtime::auth::sigv4::{SigV4AuthScheme, SCHEME_ID};
use aws_runtime::auth::SigV4OperationSigningConfig;
use aws_runtime::retries::classifiers::AwsErrorCodeClassifier;
use aws_smithy_runtime::client::orchestrator::operation::Operation;
use aws_smithy_runtime::client::retries::classifiers::{
    HttpStatusCodeClassifier, TransientErrorClassifier,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::auth::static_resolver::StaticAuthSchemeOptionResolver;
use aws_smithy_runtime_api::client::auth::AuthSchemeOptionResolverParams;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
use aws_smithy_runtime_api::client::runtime_plugin::StaticRuntimePlugin;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::Layer;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_xml::decode::{try_data, Document, ScopedDecoder, XmlDecodeError};
use aws_types::region::SigningRegion;
use aws_types::service_config::ServiceConfigKey;
use aws_types::SigningName;

/// The API version every EC2 Query request names.
const VERSION: &str = "2016-11-15";
const OPERATION: &str = "DescribeVpcEndpoints";

/// What doctor needs of one VPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcEndpoint {
    pub id: String,
    pub service_name: String,
    /// As EC2 sends it: `available`, `pending`, `rejected`…
    pub state: String,
    pub private_dns_enabled: bool,
}

/// One page of the answer.
#[derive(Debug, Default, PartialEq)]
struct Page {
    endpoints: Vec<VpcEndpoint>,
    next_token: Option<String>,
}

/// One page of the request.
#[derive(Debug)]
struct PageRequest {
    vpc: String,
    token: Option<String>,
}

pub type Error = SdkError<ErrorMetadata, HttpResponse>;

/// Every VPC endpoint of `vpc`, all pages.
pub async fn vpc_endpoints(sdk: &SdkConfig, vpc: &str) -> Result<Vec<VpcEndpoint>, Error> {
    let operation = operation(sdk).map_err(SdkError::construction_failure)?;
    let mut endpoints = Vec::new();
    let mut token = None;
    loop {
        let page = operation
            .invoke(PageRequest {
                vpc: vpc.to_owned(),
                token: token.clone(),
            })
            .await?;
        endpoints.extend(page.endpoints);
        // A token equal to the one sent would loop forever: the SDK's paginators stop there too.
        match page.next_token.filter(|t| !t.is_empty()) {
            Some(next) if Some(&next) != token.as_ref() => token = Some(next),
            _ => return Ok(endpoints),
        }
    }
}

/// The call, configured from `sdk`; what is missing when it cannot be.
fn operation(sdk: &SdkConfig) -> Result<Operation<PageRequest, Page, ErrorMetadata>, &'static str> {
    let region = sdk.region().cloned().ok_or("no region is configured")?;
    let credentials = sdk
        .credentials_provider()
        .ok_or("no credentials are configured")?;
    let mut config = Layer::new("ec2");
    config.store_put(AuthSchemeOptionResolverParams::new(()));
    config.store_put(SigV4OperationSigningConfig {
        region: Some(SigningRegion::from(region.clone())),
        name: Some(SigningName::from_static("ec2")),
        ..Default::default()
    });
    let mut auth = RuntimeComponentsBuilder::new("ec2");
    auth.set_auth_scheme_option_resolver(Some(StaticAuthSchemeOptionResolver::new(vec![
        SCHEME_ID,
    ])));
    auth.push_auth_scheme(SigV4AuthScheme::new());
    auth.set_identity_resolver(SCHEME_ID, credentials);
    if let Some(cache) = sdk.identity_cache() {
        auth.set_identity_cache(Some(cache));
    }
    let mut builder = Operation::builder()
        .service_name("ec2")
        .operation_name(OPERATION)
        .behavior_version(
            sdk.behavior_version()
                .unwrap_or_else(BehaviorVersion::latest),
        )
        .endpoint_url(&endpoint_url(sdk, region.as_ref()))
        .standard_retry(
            &sdk.retry_config()
                .cloned()
                .unwrap_or_else(RetryConfig::standard),
        )
        .retry_classifier(AwsErrorCodeClassifier::<ErrorMetadata>::new())
        .retry_classifier(TransientErrorClassifier::<ErrorMetadata>::new())
        .retry_classifier(HttpStatusCodeClassifier::default())
        .with_connection_poisoning()
        .runtime_plugin(
            StaticRuntimePlugin::new()
                .with_config(config.freeze())
                .with_runtime_components(auth),
        );
    if let Some(client) = sdk.http_client() {
        builder = builder.http_client(client);
    }
    if let Some(timeouts) = sdk.timeout_config() {
        builder = builder.timeout_config(timeouts.clone());
    }
    if let Some(sleep) = sdk.sleep_impl() {
        builder = builder.sleep_impl(sleep);
    }
    if let Some(time) = sdk.time_source() {
        builder = builder.time_source(time);
    }
    Ok(builder
        .serializer(serialize)
        .deserializer(deserialize)
        .build())
}

/// Where EC2 calls go, as the generated clients choose: an endpoint set in
/// code, else `AWS_ENDPOINT_URL_EC2` / the profile's `ec2` section, else
/// `AWS_ENDPOINT_URL`, else EC2's regional endpoint (FIPS and dual-stack
/// variants included).
fn endpoint_url(sdk: &SdkConfig, region: &str) -> String {
    let configured = if sdk.get_origin("endpoint_url").is_client_config() {
        sdk.endpoint_url().map(str::to_owned)
    } else {
        let key = ServiceConfigKey::builder()
            .service_id("EC2")
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .expect("every field is set");
        sdk.service_config()
            .and_then(|config| config.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
    };
    configured.unwrap_or_else(|| {
        let fips = if sdk.use_fips() == Some(true) {
            "-fips"
        } else {
            ""
        };
        let china = region.starts_with("cn-");
        let suffix = match (sdk.use_dual_stack() == Some(true), china) {
            (true, false) => "api.aws",
            (true, true) => "api.amazonwebservices.com.cn",
            (false, false) => "amazonaws.com",
            (false, true) => "amazonaws.com.cn",
        };
        format!("https://ec2{fips}.{region}.{suffix}")
    })
}

/// The Query form: `Action`, `Version`, the `vpc-id` filter and the page token.
fn serialize(input: PageRequest) -> Result<HttpRequest, BoxError> {
    let mut form = String::new();
    let mut writer = aws_smithy_query::QueryWriter::new(&mut form, OPERATION, VERSION);
    writer.prefix("Filter.1.Name").string("vpc-id");
    writer.prefix("Filter.1.Value.1").string(&input.vpc);
    if let Some(token) = &input.token {
        writer.prefix("NextToken").string(token);
    }
    writer.finish();
    let length = form.len().to_string();
    let mut request = HttpRequest::new(SdkBody::from(form));
    request.set_method("POST")?;
    request.set_uri("/")?;
    let headers = request.headers_mut();
    headers.insert("content-type", "application/x-www-form-urlencoded");
    headers.insert("content-length", length);
    Ok(request)
}

fn deserialize(response: &HttpResponse) -> Result<Page, OrchestratorError<ErrorMetadata>> {
    let body = response.body().bytes().unwrap_or_default();
    let text = std::str::from_utf8(body)
        .map_err(|_| OrchestratorError::other("EC2 answered with a body that is not UTF-8"))?;
    if !response.status().is_success() {
        return Err(OrchestratorError::operation(error(
            text,
            response.status().as_u16(),
        )));
    }
    page(text).map_err(|e| OrchestratorError::other(format!("EC2's answer is not readable: {e}")))
}

/// EC2's error answer, `<Response><Errors><Error><Code>…<Message>…`; a body
/// that is not one (a proxy's page, say) gets the HTTP status as its code.
fn error(text: &str, status: u16) -> ErrorMetadata {
    let (code, message) = error_fields(text).unwrap_or_default();
    let mut builder = ErrorMetadata::builder();
    builder = match code {
        Some(code) => builder.code(code),
        None => builder.code(format!("HTTP {status}")),
    };
    if let Some(message) = message {
        builder = builder.message(message);
    }
    builder.build()
}

type ErrorFields = (Option<String>, Option<String>);

fn error_fields(text: &str) -> Result<ErrorFields, XmlDecodeError> {
    let mut document = Document::new(text);
    let mut root = document.root_element()?;
    let (mut code, mut message) = (None, None);
    while let Some(mut errors) = root.next_tag() {
        if !errors.start_el().matches("Errors") {
            continue;
        }
        while let Some(mut error) = errors.next_tag() {
            if !error.start_el().matches("Error") {
                continue;
            }
            while let Some(mut field) = error.next_tag() {
                if field.start_el().matches("Code") {
                    code = Some(try_data(&mut field)?.into_owned());
                } else if field.start_el().matches("Message") {
                    message = Some(try_data(&mut field)?.into_owned());
                }
            }
            return Ok((code, message));
        }
    }
    Ok((code, message))
}

/// `<DescribeVpcEndpointsResponse><vpcEndpointSet><item>…</item></vpcEndpointSet><nextToken>`.
fn page(text: &str) -> Result<Page, XmlDecodeError> {
    let mut document = Document::new(text);
    let mut root = document.root_element()?;
    if !root.start_el().matches("DescribeVpcEndpointsResponse") {
        return Err(XmlDecodeError::custom(format!(
            "expected DescribeVpcEndpointsResponse, found {}",
            root.start_el().local()
        )));
    }
    let mut page = Page::default();
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().matches("vpcEndpointSet") {
            while let Some(mut item) = tag.next_tag() {
                if item.start_el().matches("item") {
                    page.endpoints.push(endpoint(&mut item)?);
                }
            }
        } else if tag.start_el().matches("nextToken") {
            page.next_token = Some(try_data(&mut tag)?.into_owned());
        }
    }
    Ok(page)
}

fn endpoint(item: &mut ScopedDecoder) -> Result<VpcEndpoint, XmlDecodeError> {
    let mut endpoint = VpcEndpoint {
        id: String::new(),
        service_name: String::new(),
        state: String::new(),
        private_dns_enabled: false,
    };
    while let Some(mut field) = item.next_tag() {
        let slot = match field.start_el().local() {
            "vpcEndpointId" => &mut endpoint.id,
            "serviceName" => &mut endpoint.service_name,
            "state" => &mut endpoint.state,
            "privateDnsEnabled" => {
                endpoint.private_dns_enabled = try_data(&mut field)?.trim() == "true";
                continue;
            }
            _ => continue,
        };
        *slot = try_data(&mut field)?.into_owned();
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_page_as_the_api_reference_shows_it() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeVpcEndpointsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>19a9ff46-7df6-49b8-9726-3df27527089d</requestId>
    <vpcEndpointSet>
        <item>
            <vpcEndpointId>vpce-0aabbccddeeff0011</vpcEndpointId>
            <vpcEndpointType>Interface</vpcEndpointType>
            <vpcId>vpc-1a2b3c4d</vpcId>
            <serviceName>com.amazonaws.us-east-1.ssmmessages</serviceName>
            <state>available</state>
            <routeTableIdSet/>
            <subnetIdSet><item>subnet-1</item></subnetIdSet>
            <privateDnsEnabled>true</privateDnsEnabled>
        </item>
        <item>
            <vpcEndpointId>vpce-2</vpcEndpointId>
            <serviceName>com.amazonaws.us-east-1.ssm</serviceName>
            <state>pending</state>
            <privateDnsEnabled>false</privateDnsEnabled>
        </item>
    </vpcEndpointSet>
    <nextToken>page-2</nextToken>
</DescribeVpcEndpointsResponse>"#;
        let page = page(xml).unwrap();
        assert_eq!(page.next_token.as_deref(), Some("page-2"));
        assert_eq!(
            page.endpoints,
            vec![
                VpcEndpoint {
                    id: "vpce-0aabbccddeeff0011".into(),
                    service_name: "com.amazonaws.us-east-1.ssmmessages".into(),
                    state: "available".into(),
                    private_dns_enabled: true,
                },
                VpcEndpoint {
                    id: "vpce-2".into(),
                    service_name: "com.amazonaws.us-east-1.ssm".into(),
                    state: "pending".into(),
                    private_dns_enabled: false,
                },
            ]
        );
    }

    #[test]
    fn reads_ec2_errors_and_falls_back_to_the_status() {
        let xml = "<Response><Errors><Error><Code>UnauthorizedOperation</Code>\
                   <Message>You are not authorized to perform this operation.</Message>\
                   </Error></Errors><RequestID>abc</RequestID></Response>";
        let error = error(xml, 403);
        assert_eq!(error.code(), Some("UnauthorizedOperation"));
        assert_eq!(
            error.message(),
            Some("You are not authorized to perform this operation.")
        );
        let error = super::error("<html>Bad gateway</html>", 502);
        assert_eq!(error.code(), Some("HTTP 502"));
        assert_eq!(error.message(), None);
    }

    #[test]
    fn writes_the_query_form() {
        let request = serialize(PageRequest {
            vpc: "vpc-1".into(),
            token: Some("a b/c".into()),
        })
        .unwrap();
        assert_eq!(
            request.body().bytes().unwrap(),
            b"Action=DescribeVpcEndpoints&Version=2016-11-15&Filter.1.Name=vpc-id\
              &Filter.1.Value.1=vpc-1&NextToken=a%20b%2Fc"
        );
    }
}
