//! The SSM path: instances that sagemaker-ssh-helper registered with SSM,
//! found by their tags (the internals live in `resolve/`), and `mi-…`/`i-…`
//! ids. Sessions start with ssm:StartSession and an SSM document; keys go in
//! with SendCommand; host keys are pinned per instance id.

use aws_config::SdkConfig;
use sm_ssh_proxy::StreamTarget;

use super::{Detail, KeyInstall, Liveness, Path, Pin, Purpose, Reach};
use crate::keypush::{self, PushKey};
use crate::resolve::{self, ResolveOptions, Resolved};
use crate::session::{Sessions, StartError};
use crate::target::Target;

/// The document of an SSH session.
pub const SSH_DOCUMENT: &str = "AWS-StartSSHSession";

pub async fn resolve(
    sdk: &SdkConfig,
    target: &Target,
    opts: &ResolveOptions,
) -> anyhow::Result<Reach> {
    Ok(reach_from(resolve::resolve(sdk, target, opts).await?))
}

/// The reach of a resolved instance (resolution fails unless it is Online).
pub fn reach_from(resolved: Resolved) -> Reach {
    Reach {
        path: Path::Ssm,
        session_target: resolved.instance_id.clone(),
        name: resolved.name,
        default_user: resolved.default_user,
        key: KeyInstall::SendCommand,
        pin: Pin {
            alias: resolved.instance_id.clone(),
            binding: resolved.instance_id,
        },
        liveness: Liveness::Online,
        detail: Detail::Ssm(resolved.instance),
        sshd: true,
    }
}

/// StartSession with the document and parameters `purpose` maps to.
pub async fn start(
    sessions: &Sessions,
    reach: &Reach,
    purpose: &Purpose<'_>,
    label: &str,
) -> Result<StreamTarget, StartError> {
    let (document, parameters) = document(purpose);
    sessions
        .start(&reach.session_target, label, document, &parameters)
        .await
}

/// The SSM document and its parameters for `purpose`.
pub fn document<'a>(purpose: &Purpose<'a>) -> (&'a str, Vec<(&'static str, String)>) {
    match *purpose {
        Purpose::Ssh { port } => (SSH_DOCUMENT, vec![("portNumber", port.to_string())]),
        Purpose::Forward {
            document,
            host,
            port,
            local_port,
        } => {
            let mut parameters = vec![
                ("portNumber", port.to_string()),
                ("localPortNumber", local_port.to_string()),
            ];
            if let Some(host) = host {
                parameters.push(("host", host.to_string()));
            }
            (document, parameters)
        }
    }
}

/// SendCommand our key into the instance, unless the state file says it is there.
pub async fn push_key(
    sdk: &SdkConfig,
    reach: &Reach,
    user: &str,
    mode: PushKey,
) -> anyhow::Result<()> {
    let ssm = aws_sdk_ssm::Client::new(sdk);
    let identity = crate::keys::Identity::ensure()?;
    let state = keypush::default_state_file(&crate::keys::data_dir()?);
    let outcome = keypush::ensure(
        &ssm,
        &reach.session_target,
        user,
        &identity.public_key_line(),
        mode,
        &state,
    )
    .await?;
    tracing::debug!(?outcome, instance_id = %reach.session_target, "key push");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_map_to_documents() {
        assert_eq!(
            document(&Purpose::Ssh { port: 22 }),
            (SSH_DOCUMENT, vec![("portNumber", "22".to_string())])
        );
        let (name, parameters) = document(&Purpose::Forward {
            document: "AWS-StartPortForwardingSessionToRemoteHost",
            host: Some("db"),
            port: 5432,
            local_port: 0,
        });
        assert_eq!(name, "AWS-StartPortForwardingSessionToRemoteHost");
        assert_eq!(
            parameters,
            vec![
                ("portNumber", "5432".to_string()),
                ("localPortNumber", "0".to_string()),
                ("host", "db".to_string())
            ]
        );
    }

    #[test]
    fn instances_pin_under_their_id_and_take_keys_by_sendcommand() {
        let reach = reach_from(Resolved {
            instance_id: "mi-0123456789abcdef0".into(),
            ping_status: "Online".into(),
            kind: None,
            default_user: "root",
            name: "job.training.sagemaker".into(),
            computer_name: "algo-1".into(),
            instance: Default::default(),
        });
        assert_eq!(reach.session_target, "mi-0123456789abcdef0");
        assert_eq!(reach.pin.alias, "mi-0123456789abcdef0");
        assert_eq!(reach.key, KeyInstall::SendCommand);
        assert_eq!(reach.default_user, "root");
    }
}
