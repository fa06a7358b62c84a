//! The fast path of `proxy` and `connect`: resolution through the warm-path
//! cache (`cache`), a session start that resolves afresh once when a cached
//! instance turns out gone, and the key push run while the session is set up.
//!
//! Only SSM-path names and instance ids are cached; native targets need no
//! resolution, spaces take their own API.

use std::sync::Arc;

use aws_config::SdkConfig;
use sm_ssh_proxy::OpenSession;

use crate::cache::{self, Cache};
use crate::cli::Global;
use crate::error::AwsError;
use crate::keypush::PushKey;
use crate::path::{self, ssm, Control, Path, Purpose, Reach};
use crate::resolve::{self, ResolveArgs, ResolveOptions, Resolved};
use crate::target::Target;

/// StartSession codes that say the instance is gone or not connected, and
/// SendCommand's for an instance SSM no longer knows.
const STALE_CODES: [&str; 3] = ["TargetNotConnected", "InvalidTarget", "InvalidInstanceId"];

/// One target's resolution, cached or not.
pub struct Warm<'a> {
    sdk: &'a SdkConfig,
    target: &'a Target,
    path: Path,
    opts: ResolveOptions,
    cache: Option<Cache>,
}

impl<'a> Warm<'a> {
    /// Opens the cache of this invocation's scope unless bypassed, the path
    /// takes none, or no credentials are to be had (the API call then says why).
    pub async fn open(
        sdk: &'a SdkConfig,
        global: &Global,
        target: &'a Target,
        args: &ResolveArgs,
        control: &Control,
    ) -> Warm<'a> {
        let path = path::select(target);
        let cacheable = path.tries_helper() && !args.no_cache && !cache::bypassed_by_env();
        let cache = match (cacheable, control, cache::dir()) {
            (true, Control::Ssm(sessions), Some(dir)) => {
                sessions.credentials_id().await.map(|credentials| {
                    let region = resolve::region_name(sdk);
                    let profile = global.profile.clone().unwrap_or_default();
                    let ssm = crate::error::endpoint_of("ssm:StartSession");
                    let sts = crate::error::endpoint_of("sts:GetCallerIdentity");
                    let file = cache::file_for(&dir, &[&profile, &region, &ssm, &sts]);
                    Cache::load(file, credentials)
                })
            }
            _ => None,
        };
        Warm {
            sdk,
            target,
            path,
            opts: args.options(),
            cache,
        }
    }

    /// Where `target` is: from the cache unless `fresh`, else resolved (and
    /// then cached under the name and the instance id). True when cached.
    pub async fn reach(&self, fresh: bool) -> anyhow::Result<(Reach, bool)> {
        let Some(cache) = &self.cache else {
            let reach = self.path.resolve(self.sdk, self.target, &self.opts).await?;
            return Ok((reach, false));
        };
        let key = self.key();
        if !fresh {
            if let Some(instance) = cache.reach(&key) {
                tracing::debug!(target = %self.target, instance_id = %instance.instance_id, "resolution from the cache");
                return Ok((self.reach_of(instance), true));
            }
        }
        if self.path == Path::Ssm {
            let resolved =
                resolve::resolve_with(self.sdk, self.target, &self.opts, Some(cache)).await?;
            cache.set_reach(&[key, resolved.instance_id.clone()], &resolved.instance);
            return Ok((ssm::reach_from(resolved), false));
        }
        // A job or endpoint: the helper's instance is cached, SageMaker's own
        // target is looked up afresh.
        let once = path::sagemaker_native::helper_options(&self.opts);
        let helper = resolve::resolve_with(self.sdk, self.target, &once, Some(cache)).await;
        if let Ok(resolved) = &helper {
            cache.set_reach(&[key, resolved.instance_id.clone()], &resolved.instance);
        }
        let reach = self
            .path
            .after_helper(self.sdk, self.target, &self.opts, helper)
            .await?;
        Ok((reach, false))
    }

    /// Drops what the cache says about the instance behind `reach`.
    pub fn forget(&self, reach: &Reach) {
        if let Some(cache) = &self.cache {
            tracing::info!(target = %self.target, instance_id = %reach.session_target, "the cached instance is gone; resolving again");
            cache.forget_instance(&reach.session_target);
        }
    }

    /// Whether the cache file still resolves this target as cached before
    /// (another process, the ProxyCommand, may have found it stale).
    pub fn still_cached(&self, reach: &Reach) -> bool {
        self.cache
            .as_ref()
            .and_then(|c| c.reloaded().reach(&self.key()))
            .is_some_and(|c| c.instance_id == reach.session_target)
    }

    /// The cache key: the name with the options that pick among instances,
    /// or an instance id as it is.
    fn key(&self) -> String {
        match self.target {
            Target::Instance(id) => id.clone(),
            other => format!(
                "{}|owner={:?}|node={:?}",
                other.to_string().to_ascii_lowercase(),
                self.opts.owner,
                self.opts.node
            ),
        }
    }

    fn reach_of(&self, instance: resolve::candidate::Candidate) -> Reach {
        ssm::reach_from(Resolved {
            instance_id: instance.instance_id.clone(),
            ping_status: instance.ping_status.clone(),
            kind: self.target.kind(),
            default_user: self.target.default_user(),
            name: self.target.to_string(),
            computer_name: instance.computer_name.clone(),
            instance,
        })
    }

    /// Starts and opens a session on `reach` for `purpose` while the key is
    /// pushed; returns once both are done, so that nothing reaches sshd
    /// (ssh cannot authenticate) before the key is in place. A failed push
    /// abandons the session; a failed start drops the push.
    pub async fn open_session(
        &self,
        control: &Arc<Control>,
        reach: &Reach,
        purpose: &Purpose<'_>,
        label: &str,
        key: (&str, PushKey),
    ) -> anyhow::Result<OpenSession<Control>> {
        let (user, mode) = key;
        let push = path::install_key(self.sdk, reach, user, mode);
        let learned = self.cache.as_ref().and_then(Cache::stream_origin);
        let predial = crate::session::predial(self.sdk, learned);
        let session = async {
            let stream = control.start(reach, purpose, label).await?;
            tracing::info!(session_id = %stream.session_id, target = %reach.session_target, "session started");
            if let Some(cache) = &self.cache {
                cache.set_stream_origin(&stream.stream_url);
            }
            let options = crate::session::data_channel_options()?;
            let open = sm_ssh_proxy::open(stream, control.clone(), options, predial);
            Ok::<_, anyhow::Error>(open.await?)
        };
        tokio::pin!(push, session);
        let mut pushed = None;
        let opened = loop {
            tokio::select! {
                result = &mut push, if pushed.is_none() => pushed = Some(result),
                opened = &mut session => match opened {
                    Ok(opened) => break opened,
                    // Both failing: the push's error, the step that comes
                    // first when run in order, names what to change.
                    Err(error) => {
                        let pushed = match pushed {
                            Some(result) => result,
                            None => push.await,
                        };
                        return Err(pushed.err().unwrap_or(error));
                    }
                },
            }
        };
        let pushed = match pushed {
            Some(result) => result,
            None => push.await,
        };
        if let Err(error) = pushed {
            opened.abandon().await;
            return Err(error);
        }
        Ok(opened)
    }
}

/// Whether `error` says the instance a cached resolution named is gone.
pub fn is_stale(error: &anyhow::Error) -> bool {
    error.downcast_ref::<AwsError>().is_some_and(|e| {
        STALE_CODES
            .iter()
            .any(|code| e.detail.starts_with(&format!("{code}:")))
    })
}
