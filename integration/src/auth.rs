//! Credentials as the fake's AWS knows them, and the checks made with them:
//! the access key and session token of every API call (unknown, wrong or
//! expired credentials are refused with the service's error), and the SigV4
//! signature of the data channel's websocket upgrade, recomputed with the
//! SDK's own signer (`aws-sigv4`), or of a presigned StreamUrl.
//!
//! Tests get temporary credentials that expire from [`World::mint`], also
//! served as `credential_process` JSON on `POST /sm-ssh-fake/credentials`.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_types::date_time::{DateTime, Format};
use axum::http::{HeaderMap, StatusCode};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use sm_ssh_proxy::driver::PRESIGN_PARAMETERS;

use crate::world::World;

/// The signing name of the data channel.
pub const SERVICE: &str = "ssmmessages";
/// The static key pair every world knows (what `FakeAws::env` hands out).
pub const STATIC_KEY: (&str, &str) = ("testing", "testing");
/// How far a signature's time may be from the fake's clock (AWS: 5 minutes).
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// How long a presigned StreamUrl the fake hands out stays valid.
const PRESIGN_EXPIRY: Duration = Duration::from_secs(60);

/// One access key the fake accepts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Set for temporary credentials: the call must carry it.
    pub session_token: Option<String>,
    /// When temporary credentials stop working.
    pub expires: Option<SystemTime>,
}

impl Credential {
    /// The `credential_process` output for these credentials (Version 1).
    pub fn process_json(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "Version": 1,
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
        });
        if let Some(token) = &self.session_token {
            out["SessionToken"] = token.clone().into();
        }
        if let Some(expires) = self.expires {
            out["Expiration"] = iso8601(expires).into();
        }
        out
    }

    fn sdk(&self) -> Credentials {
        Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            self.session_token.clone(),
            self.expires,
            "sm-ssh-fake",
        )
    }
}

/// What the data channel demands of a websocket before its OpenDataChannel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DataChannelPolicy {
    /// Refuse upgrades without a valid SigV4 signature (header or presigned URL).
    pub verify_signature: bool,
    /// StartSession and ResumeSession hand out presigned StreamUrls.
    pub presign_urls: bool,
    /// Refuse OpenDataChannel from clients reporting a lower ClientVersion
    /// (`None`: any version).
    pub min_client_version: Option<String>,
}

impl Default for DataChannelPolicy {
    fn default() -> Self {
        DataChannelPolicy {
            verify_signature: true,
            presign_urls: false,
            min_client_version: Some("1.2.764.0".into()),
        }
    }
}

/// A refused request: the HTTP status, the error code and AWS's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    fn forbidden(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, code, message)
    }
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, PartialEq, Eq)]
struct Authorization<'a> {
    access_key_id: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

/// The region and service a signed request's credential is scoped to.
pub(crate) fn signing_scope(headers: &HeaderMap) -> Option<(String, String)> {
    let auth = parse_authorization(header(headers, "authorization")?)?;
    Some((auth.region.to_owned(), auth.service.to_owned()))
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
    };
    let mut scope = field("Credential")?.split('/');
    let access_key_id = scope.next()?;
    let _date = scope.next()?;
    let region = scope.next()?;
    let service = scope.next()?;
    Some(Authorization {
        access_key_id,
        region,
        service,
        signed_headers: field("SignedHeaders")?,
        signature: field("Signature")?,
    })
}

impl World {
    /// Mints temporary credentials valid for `ttl` from now, as STS would.
    pub fn mint(&mut self, ttl: Duration) -> Credential {
        let key = format!(
            "ASIA{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 16)
                .to_uppercase()
        );
        let credential = Credential {
            access_key_id: key.clone(),
            secret_access_key: Alphanumeric.sample_string(&mut rand::rng(), 40),
            session_token: Some(Alphanumeric.sample_string(&mut rand::rng(), 96)),
            expires: Some(SystemTime::now() + ttl),
        };
        self.credentials.insert(key, credential.clone());
        credential
    }

    /// The credential of `access_key_id`, if the account has it.
    fn credential(&self, access_key_id: &str) -> Option<Credential> {
        if access_key_id == STATIC_KEY.0 {
            return Some(Credential {
                access_key_id: STATIC_KEY.0.into(),
                secret_access_key: STATIC_KEY.1.into(),
                session_token: None,
                expires: None,
            });
        }
        // Seeded callers (`identities`) sign with the static pair's secret.
        if self.identities.contains_key(access_key_id) {
            return Some(Credential {
                access_key_id: access_key_id.into(),
                secret_access_key: STATIC_KEY.1.into(),
                session_token: None,
                expires: None,
            });
        }
        let service = self.service_credential();
        if access_key_id == service.access_key_id {
            return Some(service);
        }
        self.credentials.get(access_key_id).cloned()
    }

    /// The checks IAM makes of a call's credentials before anything else:
    /// known key, matching session token, not expired. `json` picks the
    /// JSON services' error codes over STS's Query ones.
    fn check_credential(
        &self,
        access_key_id: &str,
        token: Option<&str>,
        json: bool,
    ) -> Result<Credential, Refusal> {
        let invalid = || {
            let code = if json {
                "UnrecognizedClientException"
            } else {
                "InvalidClientTokenId"
            };
            Refusal::forbidden(
                code,
                "The security token included in the request is invalid.",
            )
        };
        let credential = self.credential(access_key_id).ok_or_else(invalid)?;
        if credential.session_token.as_deref() != token {
            return Err(invalid());
        }
        if credential.expires.is_some_and(|at| at <= SystemTime::now()) {
            let code = if json {
                "ExpiredTokenException"
            } else {
                "ExpiredToken"
            };
            return Err(Refusal::forbidden(
                code,
                "The security token included in the request is expired",
            ));
        }
        Ok(credential)
    }

    /// The credential check of an API call (SSM JSON when `json`, else STS).
    /// The signature itself is not recomputed here (see docs/fake-aws.md).
    pub(crate) fn check_api_call(&self, headers: &HeaderMap, json: bool) -> Result<(), Refusal> {
        let Some(auth) = header(headers, "authorization") else {
            let code = if json {
                "MissingAuthenticationTokenException"
            } else {
                "MissingAuthenticationToken"
            };
            return Err(Refusal::forbidden(
                code,
                "Request is missing Authentication Token",
            ));
        };
        let auth = parse_authorization(auth).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
            )
        })?;
        self.check_credential(
            auth.access_key_id,
            header(headers, "x-amz-security-token"),
            json,
        )
        .map(drop)
    }

    /// The signing key of the StreamUrls the fake presigns (the service's own).
    fn service_credential(&self) -> Credential {
        Credential {
            access_key_id: "AKIDSSMMESSAGESFAKE".into(),
            secret_access_key: self.service_secret.clone(),
            session_token: None,
            expires: None,
        }
    }

    /// `url`, presigned by the service when the policy says so.
    pub(crate) fn stream_url(&self, url: String) -> String {
        if !self.data_channel.presign_urls {
            return url;
        }
        presign(&url, &self.service_credential(), self.signing_region())
            .expect("the fake's StreamUrl is signable")
    }

    fn signing_region(&self) -> &str {
        if self.region.is_empty() {
            "us-east-1"
        } else {
            &self.region
        }
    }

    /// The data channel's check of a websocket upgrade `GET url` (scheme,
    /// host, path and raw query as the client sent them) with `headers`.
    pub(crate) fn check_upgrade(&self, url: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.data_channel.verify_signature {
            return Ok(());
        }
        let presigned = sm_ssh_proxy::is_presigned(url);
        match (presigned, header(headers, "authorization")) {
            (true, Some(_)) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter \
                 or the Authorization header should be specified",
            )),
            (true, None) => self.check_presigned(url),
            (false, None) => Err(Refusal::forbidden(
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            )),
            (false, Some(auth)) => self.check_signed(url, headers, auth),
        }
    }

    fn check_signed(&self, url: &str, headers: &HeaderMap, auth: &str) -> Result<(), Refusal> {
        let auth = parse_authorization(auth).ok_or_else(|| {
            Refusal::forbidden(
                "IncompleteSignatureException",
                "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
            )
        })?;
        self.check_scope(auth.region, auth.service)?;
        let date = header(headers, "x-amz-date").ok_or_else(|| {
            Refusal::forbidden(
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        })?;
        let time = parse_amz_date(date)?;
        check_clock(time, date)?;
        let credential = self.check_credential(
            auth.access_key_id,
            header(headers, "x-amz-security-token"),
            true,
        )?;
        // Sign the same request again: the headers it signed, less the ones
        // the signer adds itself.
        let signed: Vec<(&str, &str)> = auth
            .signed_headers
            .split(';')
            .filter(|name| !matches!(*name, "x-amz-date" | "x-amz-security-token"))
            .filter_map(|name| Some((name, header(headers, name)?)))
            .collect();
        let expected = sign_headers(url, &signed, &credential, self.signing_region(), time)
            .map_err(|e| Refusal::forbidden("IncompleteSignatureException", e))?;
        let expected_auth = expected
            .iter()
            .find(|(n, _)| n == "authorization")
            .and_then(|(_, v)| parse_authorization(v).map(|a| a.signature.to_owned()));
        if expected_auth.as_deref() != Some(auth.signature) {
            return Err(signature_mismatch());
        }
        Ok(())
    }

    fn check_presigned(&self, url: &str) -> Result<(), Refusal> {
        let (base, params) = split_presign(url);
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let missing = || {
            Refusal::forbidden(
                "AuthorizationQueryParametersError",
                "Query-string authentication version 4 requires the X-Amz-Algorithm, \
                 X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
                 X-Amz-Expires parameters.",
            )
        };
        let credential = get("X-Amz-Credential").ok_or_else(missing)?;
        let date = get("X-Amz-Date").ok_or_else(missing)?;
        let expires: u64 = get("X-Amz-Expires")
            .and_then(|e| e.parse().ok())
            .ok_or_else(missing)?;
        let signature = get("X-Amz-Signature").ok_or_else(missing)?;
        let mut scope = credential.split('/');
        let access_key_id = scope.next().unwrap_or_default();
        let (region, service) = (
            scope.nth(1).unwrap_or_default(),
            scope.next().unwrap_or_default(),
        );
        self.check_scope(region, service)?;
        let time = parse_amz_date(date)?;
        if SystemTime::now() > time + Duration::from_secs(expires) {
            return Err(Refusal::forbidden("AccessDenied", "Request has expired"));
        }
        let credential = self.check_credential(access_key_id, get("X-Amz-Security-Token"), true)?;
        let expected = presign_at(
            &base,
            &credential,
            self.signing_region(),
            time,
            Duration::from_secs(expires),
        )
        .map_err(|e| Refusal::forbidden("AuthorizationQueryParametersError", e))?;
        let (_, expected) = split_presign(&expected);
        let expected = expected
            .iter()
            .find(|(n, _)| n == "X-Amz-Signature")
            .map(|(_, v)| v.as_str());
        if expected != Some(signature) {
            return Err(signature_mismatch());
        }
        Ok(())
    }

    fn check_scope(&self, region: &str, service: &str) -> Result<(), Refusal> {
        if region != self.signing_region() {
            return Err(Refusal::forbidden(
                "SignatureDoesNotMatch",
                format!(
                    "Credential should be scoped to a valid region. (got {region:?}, expected {:?})",
                    self.signing_region()
                ),
            ));
        }
        if service != SERVICE {
            return Err(Refusal::forbidden(
                "SignatureDoesNotMatch",
                format!("Credential should be scoped to correct service: '{SERVICE}'."),
            ));
        }
        Ok(())
    }
}

fn signature_mismatch() -> Refusal {
    Refusal::forbidden(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service \
         documentation for details.",
    )
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`)
/// for `GET url` with `headers`, at `time`: how the fake recomputes a
/// signature, and how tests that drive the library directly sign their dials.
pub fn sign_headers(
    url: &str,
    headers: &[(&str, &str)],
    credential: &Credential,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity: aws_smithy_runtime_api::client::identity::Identity = credential.sdk().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        "GET",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect())
}

/// `url` with a SigV4 query signature valid for a minute from now.
pub fn presign(url: &str, credential: &Credential, region: &str) -> Result<String, String> {
    presign_at(url, credential, region, SystemTime::now(), PRESIGN_EXPIRY)
}

fn presign_at(
    url: &str,
    credential: &Credential,
    region: &str,
    time: SystemTime,
    expires: Duration,
) -> Result<String, String> {
    let identity: aws_smithy_runtime_api::client::identity::Identity = credential.sdk().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut request = http::Request::builder()
        .uri(url)
        .body(())
        .map_err(|e| e.to_string())?;
    instructions.apply_to_request_http1x(&mut request);
    Ok(request.uri().to_string())
}

/// `url` without its presign parameters, and those parameters decoded.
fn split_presign(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
        if PRESIGN_PARAMETERS.contains(&name) {
            let decoded: Vec<(Cow<str>, Cow<str>)> =
                form_urlencoded::parse(pair.as_bytes()).collect();
            if let Some((n, v)) = decoded.into_iter().next() {
                params.push((n.into_owned(), v.into_owned()));
            }
        } else {
            kept.push(pair);
        }
    }
    let base = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (base, params)
}

/// `20261201T093000Z` as a time; refused as AWS would when malformed.
fn parse_amz_date(date: &str) -> Result<SystemTime, Refusal> {
    let bad = || {
        Refusal::forbidden(
            "IncompleteSignatureException",
            format!("Date must be in ISO-8601 'basic format'. Got '{date}'."),
        )
    };
    let b = date.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return Err(bad());
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &date[0..4],
        &date[4..6],
        &date[6..8],
        &date[9..11],
        &date[11..13],
        &date[13..15]
    );
    let time = DateTime::from_str(&iso, Format::DateTime).map_err(|_| bad())?;
    SystemTime::try_from(time).map_err(|_| bad())
}

/// Refuses a signature made more than five minutes from now, in AWS's words.
fn check_clock(time: SystemTime, date: &str) -> Result<(), Refusal> {
    let now = SystemTime::now();
    if time + CLOCK_SKEW < now {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!(
                "Signature expired: {date} is now earlier than {} ({} - 5 min.)",
                amz_date(now - CLOCK_SKEW),
                amz_date(now)
            ),
        ));
    }
    if time > now + CLOCK_SKEW {
        return Err(Refusal::forbidden(
            "InvalidSignatureException",
            format!(
                "Signature not yet current: {date} is still later than {} ({} + 5 min.)",
                amz_date(now + CLOCK_SKEW),
                amz_date(now)
            ),
        ));
    }
    Ok(())
}

fn iso8601(time: SystemTime) -> String {
    DateTime::from(time)
        .fmt(Format::DateTime)
        .unwrap_or_default()
}

fn amz_date(time: SystemTime) -> String {
    let iso = iso8601(time);
    let iso = iso.split('.').next().unwrap_or(&iso).trim_end_matches('Z');
    format!("{}Z", iso.replace(['-', ':'], ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_parse() {
        let value =
            "AWS4-HMAC-SHA256 Credential=AKID/20261201/eu-west-1/ssmmessages/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature=abc123";
        assert_eq!(
            parse_authorization(value),
            Some(Authorization {
                access_key_id: "AKID",
                region: "eu-west-1",
                service: "ssmmessages",
                signed_headers: "host;x-amz-date",
                signature: "abc123",
            })
        );
        assert_eq!(parse_authorization("Bearer x"), None);
    }

    #[test]
    fn amz_dates_round_trip() {
        let time = parse_amz_date("20261201T093005Z").unwrap();
        assert_eq!(amz_date(time), "20261201T093005Z");
        assert!(parse_amz_date("2026-12-01").is_err());
    }

    #[test]
    fn presigned_urls_keep_their_own_query_and_split_back() {
        let credential = World::default().service_credential();
        let url = presign(
            "ws://127.0.0.1:9/v1/data-channel/s-1?role=publish_subscribe",
            &credential,
            "us-east-1",
        )
        .unwrap();
        assert!(sm_ssh_proxy::is_presigned(&url), "{url}");
        let (base, params) = split_presign(&url);
        assert_eq!(
            base,
            "ws://127.0.0.1:9/v1/data-channel/s-1?role=publish_subscribe"
        );
        assert!(params.iter().any(|(n, _)| n == "X-Amz-Signature"));
    }
}
