//! SigV4 for the data channel's websocket upgrade, as plugin 1.2.764.0 and
//! later sign it: `GET <StreamUrl>`, empty body, service `ssmmessages`, the
//! session's region, with the credentials the SDK resolves (so rotated or
//! refreshed credentials are used on every dial and redial).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_types::SdkConfig;
use sm_ssh_proxy::ControlError;

use crate::error::{AwsError, AwsProblem};

/// The signing name of the data channel's service.
const SERVICE: &str = "ssmmessages";
/// The IAM action the upgrade is authorised as (for messages).
const ACTION: &str = "ssmmessages:OpenDataChannel";
/// Credentials expiring sooner than this are resolved afresh before signing,
/// so a signature is never made with credentials about to lapse.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);

/// Signs upgrades with one SDK configuration's credentials and region.
pub struct UpgradeSigner {
    provider: Option<SharedCredentialsProvider>,
    region: Option<String>,
    /// The last credentials resolved, reused while they are not near expiry
    /// (a `credential_process` or SSO call per redial would be wasteful).
    cached: Mutex<Option<Credentials>>,
}

impl std::fmt::Debug for UpgradeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradeSigner")
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl UpgradeSigner {
    pub fn new(sdk: &SdkConfig) -> UpgradeSigner {
        UpgradeSigner {
            provider: sdk.credentials_provider(),
            region: sdk.region().map(|r| r.to_string()),
            cached: Mutex::default(),
        }
    }

    /// The `Authorization`, `X-Amz-Date` and (temporary credentials only)
    /// `X-Amz-Security-Token` headers for `GET stream_url`.
    pub async fn headers(&self, stream_url: &str) -> Result<Vec<(String, String)>, ControlError> {
        let region = self
            .region
            .as_deref()
            .ok_or_else(|| fatal(AwsProblem::Region, String::new()))?;
        let credentials = self.credentials().await?;
        let identity: aws_smithy_runtime_api::client::identity::Identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| ControlError::fatal(format!("cannot sign the data channel: {e}")))?
            .into();
        let request = SignableRequest::new(
            "GET",
            stream_url,
            std::iter::empty(),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| ControlError::fatal(format!("cannot sign the StreamUrl: {e}")))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| ControlError::fatal(format!("cannot sign the StreamUrl: {e}")))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }

    /// Fresh enough credentials: the cached ones, or newly resolved.
    pub(crate) async fn credentials(&self) -> Result<Credentials, ControlError> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE_EXPIRY)
        };
        if let Some(cached) = self.lock().as_ref().filter(|c| fresh(c)) {
            return Ok(cached.clone());
        }
        let provider = self.provider.as_ref().ok_or_else(|| {
            fatal(
                AwsProblem::Credentials,
                "no credentials are configured".into(),
            )
        })?;
        let credentials = match provider.provide_credentials().await {
            Ok(credentials) => credentials,
            Err(error) => {
                // Credentials that still work are better than none.
                let cached = self.lock().clone();
                if let Some(cached) =
                    cached.filter(|c| c.expiry().is_some_and(|at| at > SystemTime::now()))
                {
                    tracing::debug!(error = %crate::error::chain_line(&error), "refreshing credentials failed; signing with the current ones");
                    return Ok(cached);
                }
                return Err(fatal(
                    AwsProblem::Credentials,
                    crate::error::chain_line(&error),
                ));
            }
        };
        if credentials
            .expiry()
            .is_some_and(|at| at <= SystemTime::now())
        {
            return Err(fatal(
                AwsProblem::Credentials,
                "the credentials resolved have already expired".into(),
            ));
        }
        *self.lock() = Some(credentials.clone());
        Ok(credentials)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Credentials>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A signing failure no retry can cure, in the words of an AWS call failure
/// (with the `aws sso login` hint for credentials).
fn fatal(problem: AwsProblem, detail: String) -> ControlError {
    let error = AwsError {
        action: ACTION,
        problem,
        detail,
    };
    ControlError::fatal(error.message(crate::session::profile().as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::Region;

    fn signer(credentials: Credentials) -> UpgradeSigner {
        let sdk = SdkConfig::builder()
            .region(Region::new("eu-west-1"))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        UpgradeSigner::new(&sdk)
    }

    #[tokio::test]
    async fn temporary_credentials_sign_with_a_session_token() {
        let signer = signer(Credentials::new(
            "AKIDTEMP",
            "secret",
            Some("tok".into()),
            None,
            "t",
        ));
        let headers = signer
            .headers("wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/s-1?role=publish_subscribe")
            .await
            .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"authorization"), "{names:?}");
        assert!(names.contains(&"x-amz-date"), "{names:?}");
        assert!(names.contains(&"x-amz-security-token"), "{names:?}");
        let auth = &headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEMP/"),
            "{auth}"
        );
        assert!(
            auth.contains("/eu-west-1/ssmmessages/aws4_request"),
            "{auth}"
        );
        assert!(!auth.contains("secret"));
    }

    #[tokio::test]
    async fn expired_credentials_are_a_final_error_naming_the_login() {
        let past = SystemTime::now() - Duration::from_secs(60);
        let signer = signer(Credentials::new(
            "AKID",
            "s",
            Some("t".into()),
            Some(past),
            "t",
        ));
        let error = signer
            .headers("wss://h/v1/data-channel/s-1")
            .await
            .unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("aws sso login"), "{}", error.message);
        assert!(
            error.message.contains("ssmmessages:OpenDataChannel"),
            "{}",
            error.message
        );
    }
}
