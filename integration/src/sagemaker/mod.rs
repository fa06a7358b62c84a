//! The SageMaker API in the AWS JSON 1.1 protocol: `POST /` with
//! `X-Amz-Target: SageMaker.<Operation>`, shaped so `aws-sdk-sagemaker`
//! parses the answers unchanged. One file per resource kind: `domains`
//! (domains and user profiles), `spaces`, `apps`, `sessions`
//! (`StartSession` on a space), `tags` (a space's tags), `jobs` (training
//! jobs), `endpoints`, `notebooks`, `clusters` (HyperPod).
//!
//! A Studio space's app, while it runs, is an SSM managed instance (the
//! space registers itself through a hybrid activation) whose port 22 leads
//! to the platform's SSH server: an [`EmbeddedSshServer`] in the space's
//! sandbox, started with a new host key each time the app is created.

mod apps;
mod clusters;
mod domains;
mod endpoints;
mod jobs;
mod lists;
mod notebooks;
mod sessions;
mod spaces;
mod tags;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use clusters::{cluster_arn, Cluster, ClusterNode, InstanceGroup};

use crate::sandbox::Sandboxes;
use crate::server::AppState;
use crate::sshd::{EmbeddedSshServer, SshdConfig};
use crate::ssm::{json_response, ApiError};
use crate::world::{Instance, PingStatus, World};

pub use endpoints::{Endpoint, Variant};

/// Everything the SageMaker side of a `Seed` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Seed {
    pub domains: Vec<Domain>,
    pub user_profiles: Vec<UserProfile>,
    pub spaces: Vec<Space>,
    pub training_jobs: Vec<TrainingJob>,
    pub notebook_instances: Vec<NotebookInstance>,
    /// HyperPod clusters (their nodes are seeded as native instances).
    pub clusters: Vec<Cluster>,

    /// Inference endpoints, their configurations and instances.
    pub endpoints: Vec<Endpoint>,

    pub notebook_lifecycle_configs: Vec<NotebookLifecycleConfig>,
    /// Spaces (`<domain id>/<space name>`) on which sagemaker:StartSession is
    /// denied, as a `sagemaker:ResourceTag/…` condition of the caller's
    /// policy would deny someone else's space.
    pub denied_spaces: BTreeSet<String>,
}

/// The SageMaker state of the world: the seed, changed by the API.
pub type State = Seed;

/// A Studio domain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Domain {
    pub id: String,
    pub name: String,
    /// `PublicInternetOnly` or `VpcOnly`.
    pub app_network_access_type: String,
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub execution_role: String,
    pub security_groups: Vec<String>,
    /// Epoch seconds.
    pub creation_time: f64,
}

impl Default for Domain {
    fn default() -> Self {
        Domain {
            id: "d-abc123example".into(),
            name: "studio".into(),
            app_network_access_type: "PublicInternetOnly".into(),
            vpc_id: "vpc-0123456789abcdef0".into(),
            subnet_ids: vec!["subnet-0123456789abcdef0".into()],
            execution_role: "arn:aws:iam::123456789012:role/AmazonSageMaker-ExecutionRole".into(),
            security_groups: Vec::new(),
            creation_time: 1_700_000_000.0,
        }
    }
}

/// A user profile of a domain.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UserProfile {
    pub domain_id: String,
    pub name: String,
    /// Empty: the domain's default.
    pub execution_role: String,
    pub security_groups: Vec<String>,
}

/// A Studio space and its app.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Space {
    pub domain_id: String,
    pub name: String,
    /// `InService`, `Updating`, …
    pub status: String,
    /// `JupyterLab` or `CodeEditor`.
    pub app_type: String,
    /// `SpaceSettings.RemoteAccess = ENABLED`.
    pub remote_access: bool,
    pub instance_type: String,
    /// The SageMaker image (`…:image/sagemaker-distribution-cpu`).
    pub image_arn: String,
    /// The image version (`…:image-version/sagemaker-distribution-cpu/<n>`).
    pub image_version_arn: String,
    /// `SageMakerImageVersionAlias`: the image's release (`3.0.0`).
    pub image_version_alias: String,
    /// The user profile owning a private space.
    pub owner: String,
    /// Tags added by AddTags or seeded, besides Studio's own (see `tags`).
    pub tags: BTreeMap<String, String>,
    /// Epoch seconds.
    pub creation_time: f64,
    /// The space's app; `None` when it has never run.
    pub app: Option<App>,
    /// After each app start, StartSession fails with InternalFailure this
    /// many times (the space registers with SSM asynchronously).
    pub registration_failures: u32,
    /// How many DescribeApp answers a created app stays `Pending`.
    pub pending_polls: u32,
    /// Where the space's SSH server runs commands (a temp folder when empty).
    pub sandbox: Option<PathBuf>,
}

impl Default for Space {
    fn default() -> Self {
        Space {
            domain_id: "d-abc123example".into(),
            name: String::new(),
            status: "InService".into(),
            app_type: "JupyterLab".into(),
            remote_access: true,
            instance_type: "ml.t3.large".into(),
            image_arn: "arn:aws:sagemaker:us-east-1:885854791233:image/sagemaker-distribution-cpu"
                .into(),
            image_version_arn: String::new(),
            image_version_alias: "3.0.0".into(),
            owner: "alice".into(),
            tags: BTreeMap::new(),
            creation_time: 1_700_000_000.0,
            app: Some(App::default()),
            registration_failures: 0,
            pending_polls: 1,
            sandbox: None,
        }
    }
}

impl Space {
    /// Whether a list call's `DomainIdEquals` (if any) keeps this space.
    pub(crate) fn in_domain(&self, domain: Option<&str>) -> bool {
        domain.is_none_or(|d| d == self.domain_id)
    }
}

/// A space's app (the one named `default`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct App {
    pub name: String,
    /// `Pending`, `InService`, `Deleting`, `Deleted`, `Failed`.
    pub status: String,
    /// Epoch seconds.
    pub creation_time: f64,
    /// The space's RemoteAccess when the app started: a running app picks a
    /// change up only when restarted.
    pub remote_access: bool,
    /// DescribeApp answers left before `Pending` becomes `InService`.
    pub polls_left: u32,
    /// StartSession calls left that fail with InternalFailure.
    pub failures_left: u32,
}

impl Default for App {
    fn default() -> Self {
        App {
            name: "default".into(),
            status: "InService".into(),
            creation_time: 1_700_000_100.0,
            remote_access: true,
            polls_left: 0,
            failures_left: 0,
        }
    }
}

/// A training job, for doctor and the remote-debugging path.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingJob {
    pub name: String,
    pub status: String,
    pub secondary_status: String,
    pub role_arn: String,
    pub instance_type: String,
    pub instance_count: i32,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub network_isolation: bool,
    pub remote_debug: bool,
    pub creation_time: f64,
}

impl Default for TrainingJob {
    fn default() -> Self {
        TrainingJob {
            name: String::new(),
            status: "InProgress".into(),
            secondary_status: "Training".into(),
            role_arn: "arn:aws:iam::123456789012:role/AmazonSageMaker-ExecutionRole".into(),
            instance_type: "ml.m5.large".into(),
            instance_count: 1,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            network_isolation: false,
            remote_debug: false,
            creation_time: 1_700_000_000.0,
        }
    }
}

impl TrainingJob {
    /// The Session Manager targets of its hosts while remote debugging is on:
    /// `sagemaker-training-job:<job>_algo-<n>` for n in 1..=InstanceCount.
    pub fn native_targets(&self) -> Vec<String> {
        (1..=self.instance_count.max(1))
            .map(|n| format!("sagemaker-training-job:{}_algo-{n}", self.name))
            .collect()
    }
}

/// A notebook instance, for doctor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct NotebookInstance {
    pub name: String,
    pub status: String,
    pub role_arn: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub security_groups: Vec<String>,
    /// `Enabled` or `Disabled`.
    pub direct_internet_access: String,
    /// The name of its lifecycle configuration; empty for none.
    pub lifecycle_config: String,
    pub creation_time: f64,
}

/// A notebook instance lifecycle configuration: its scripts as text (the
/// API carries them base64-encoded).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NotebookLifecycleConfig {
    pub name: String,
    pub on_start: String,
    pub on_create: String,
    pub creation_time: f64,
}

impl Default for NotebookInstance {
    fn default() -> Self {
        NotebookInstance {
            name: String::new(),
            status: "InService".into(),
            role_arn: "arn:aws:iam::123456789012:role/AmazonSageMaker-ExecutionRole".into(),
            instance_type: "ml.t3.medium".into(),
            subnet_id: String::new(),
            security_groups: Vec::new(),
            direct_internet_access: "Enabled".into(),
            lifecycle_config: String::new(),
            creation_time: 1_700_000_000.0,
        }
    }
}

/// The SSH servers of the spaces' running apps, by space ARN. Replacing or
/// removing one stops it.
#[derive(Default)]
pub struct Servers {
    running: Mutex<HashMap<String, EmbeddedSshServer>>,
}

impl Servers {
    /// Starts the SSH server a freshly started app of `space` runs: a new
    /// host key, no-key login for `sagemaker-user`, a Go-style banner, and no
    /// HOME for exec requests. Replaces (stops) the previous one.
    pub(crate) async fn start(
        &self,
        arn: &str,
        sandbox: &std::path::Path,
    ) -> std::io::Result<std::net::SocketAddr> {
        let mut config = SshdConfig::new(Vec::new(), sandbox.join("home"));
        config.none_auth_users = vec![SPACE_USER.to_string()];
        config.banner = Some(SPACE_BANNER.to_string());
        config.exec_home = false;
        let server = EmbeddedSshServer::start(config).await?;
        let addr = server.addr();
        self.running.lock().unwrap().insert(arn.to_string(), server);
        Ok(addr)
    }

    pub(crate) fn stop(&self, arn: &str) {
        self.running.lock().unwrap().remove(arn);
    }

    /// The host key the space's server shows now, as a known_hosts line for `host`.
    pub fn known_hosts_line(&self, arn: &str, host: &str) -> Option<String> {
        let running = self.running.lock().unwrap();
        running.get(arn).map(|s| s.known_hosts_line(host))
    }
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arns: Vec<String> = self.running.lock().unwrap().keys().cloned().collect();
        f.debug_struct("Servers").field("running", &arns).finish()
    }
}

/// The user the platform's server lets in without a key.
pub const SPACE_USER: &str = "sagemaker-user";
/// The server's identification (a Go `x/crypto/ssh` server).
pub const SPACE_BANNER: &str = "SSH-2.0-Go";

/// `arn:aws:sagemaker:<region>:<account>:space/<domain>/<space>`.
pub fn space_arn(world: &World, domain_id: &str, name: &str) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:space/{domain_id}/{name}",
        world.region, world.identity.account
    )
}

/// The SSM managed instance a space's app registers as: stable per space.
pub fn space_instance_id(arn: &str) -> String {
    let digest = Sha256::digest(arn.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("mi-{}", &hex[..17])
}

/// Makes the app of the space at `arn` reachable (its instance Online, port
/// 22 to `ssh`), or unreachable when `ssh` is `None`.
pub(crate) fn register_instance(
    world: &mut World,
    sandboxes: &Sandboxes,
    arn: &str,
    ssh: Option<std::net::SocketAddr>,
) -> std::io::Result<()> {
    let id = space_instance_id(arn);
    let instance = world
        .instances
        .entry(id.clone())
        .or_insert_with(|| Instance {
            id: id.clone(),
            computer_name: "default".into(),
            activation_id: uuid::Uuid::new_v4().to_string(),
            ..Instance::default()
        });
    match ssh {
        Some(addr) => {
            instance.ping_status = PingStatus::Online;
            instance.ports.insert(22, addr);
        }
        None => {
            instance.ping_status = PingStatus::ConnectionLost;
            instance.ports.clear();
        }
    }
    if instance.sandbox.is_none() {
        sandboxes.provision(instance)?;
    }
    Ok(())
}

/// Starts the SSH servers of the seeded running apps (when the fake starts).
pub(crate) async fn start_seeded(
    world: &crate::world::SharedWorld,
    sandboxes: &Sandboxes,
    servers: &Servers,
) -> std::io::Result<()> {
    let running: Vec<(String, Option<PathBuf>)> = {
        let world = world.lock().unwrap();
        world
            .sagemaker
            .spaces
            .iter()
            .filter(|s| s.app.as_ref().is_some_and(|a| a.status == "InService"))
            .map(|s| (space_arn(&world, &s.domain_id, &s.name), s.sandbox.clone()))
            .collect()
    };
    for (arn, sandbox) in running {
        let sandbox = space_sandbox(world, sandboxes, &arn, sandbox)?;
        let addr = servers.start(&arn, &sandbox).await?;
        register_instance(&mut world.lock().unwrap(), sandboxes, &arn, Some(addr))?;
    }
    Ok(())
}

/// The space's sandbox: the seeded folder, else its instance's.
pub(crate) fn space_sandbox(
    world: &crate::world::SharedWorld,
    sandboxes: &Sandboxes,
    arn: &str,
    seeded: Option<PathBuf>,
) -> std::io::Result<PathBuf> {
    let mut world = world.lock().unwrap();
    register_instance(&mut world, sandboxes, arn, None)?;
    let instance = world
        .instances
        .get_mut(&space_instance_id(arn))
        .expect("just registered");
    if let Some(path) = seeded {
        instance.sandbox = Some(path);
        sandboxes.provision(instance)?;
    }
    Ok(instance.sandbox.clone().expect("provisioned"))
}

/// Whether SageMaker lets Session Manager reach a native target now: a
/// training job's hosts only while remote debugging is on and the job is
/// Training, an endpoint's only while its variant has SSM access (developer
/// guide, remote debugging and "Access containers through SSM"). Targets of
/// resources that are not seeded are left to their instance.
pub(crate) fn native_reachable(world: &World, instance: &Instance) -> bool {
    if !instance.native {
        return true;
    }
    let id = instance.id.as_str();
    if let Some(rest) = id.strip_prefix("sagemaker-training-job:") {
        let job = rest
            .rsplit_once("_algo-")
            .map(|(job, _)| job)
            .unwrap_or(rest);
        return world
            .sagemaker
            .training_jobs
            .iter()
            .find(|j| j.name == job)
            .is_none_or(|j| j.remote_debug && j.secondary_status == "Training");
    }
    if id.starts_with("sagemaker-endpoint:") {
        let known: Vec<&Endpoint> = world.sagemaker.endpoints.iter().collect();
        let owner = known
            .iter()
            .find(|e| id.starts_with(&format!("sagemaker-endpoint:{}_", e.name)));
        return owner.is_none_or(|e| e.native_targets().iter().any(|t| t == id));
    }
    true
}

/// A space's `ResourceSpec` (DescribeSpace's default, DescribeApp's): the
/// version ARN wins over the image ARN, the alias is the release (SemVer),
/// and fields without a value are left out, as the API does.
pub(crate) fn resource_spec(space: &Space) -> serde_json::Value {
    let mut spec = serde_json::json!({ "InstanceType": space.instance_type });
    for (key, value) in [
        ("SageMakerImageArn", &space.image_arn),
        ("SageMakerImageVersionArn", &space.image_version_arn),
        ("SageMakerImageVersionAlias", &space.image_version_alias),
    ] {
        if !value.is_empty() {
            spec[key] = serde_json::json!(value);
        }
    }
    spec
}

/// Answers one SageMaker call.
pub(crate) async fn handle(state: &AppState, operation: &str, body: &[u8]) -> Response {
    let result = match operation {
        "DescribeDomain" => domains::describe(state, body),
        "ListDomains" => domains::list(state, body),
        "DescribeUserProfile" => domains::describe_user_profile(state, body),
        "DescribeSpace" => spaces::describe(state, body),
        "ListSpaces" => spaces::list(state, body),
        "UpdateSpace" => spaces::update(state, body),
        "DescribeApp" => apps::describe(state, body),
        "ListApps" => apps::list(state, body),
        "CreateApp" => apps::create(state, body).await,
        "DeleteApp" => apps::delete(state, body),
        "StartSession" => sessions::start(state, body),
        "ListTags" => tags::list(state, body),
        "AddTags" => tags::add(state, body),
        "DescribeTrainingJob" => jobs::describe(state, body),
        "ListTrainingJobs" => jobs::list(state, body),
        "UpdateTrainingJob" => jobs::update(state, body),
        "DescribeEndpoint" => endpoints::describe(state, body),
        "DescribeEndpointConfig" => endpoints::describe_config(state, body),
        "ListEndpoints" => endpoints::list(state, body),
        "DescribeNotebookInstance" => notebooks::describe(state, body),
        "DescribeCluster" => clusters::describe(state, body),
        "ListClusters" => clusters::list(state, body),
        "ListClusterNodes" => clusters::list_nodes(state, body),
        "ListNotebookInstances" => notebooks::list(state, body),
        "DescribeNotebookInstanceLifecycleConfig" => {
            notebooks::describe_lifecycle_config(state, body)
        }
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("the fake SageMaker does not implement {other}"),
        )),
    };
    match result {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

/// SageMaker's not-found error (`ResourceNotFound`).
pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new("ResourceNotFound", message)
}

/// The space `domain_id/name`, or SageMaker's not-found error.
pub(crate) fn find_space<'w>(
    world: &'w mut World,
    domain_id: &str,
    name: &str,
) -> Result<&'w mut Space, ApiError> {
    let arn = space_arn(world, domain_id, name);
    world
        .sagemaker
        .spaces
        .iter_mut()
        .find(|s| s.domain_id == domain_id && s.name == name)
        .ok_or_else(|| not_found(format!("Space '{arn}' does not exist.")))
}
