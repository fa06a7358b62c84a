//! `FakeAws`: one HTTP server on 127.0.0.1 answering the SSM, SageMaker and
//! CloudWatch Logs JSON APIs, STS and the Session Manager data channel, around one `World`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::{Listener, ListenerExt};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::sandbox::Sandboxes;
use crate::ssm::ApiError;
use crate::world::{ApiEvent, Faults, Instance, Pacing, PingStatus, Seed, SharedWorld, World};

/// What every handler sees.
#[derive(Clone)]
pub(crate) struct AppState {
    pub world: SharedWorld,
    pub port: u16,
    /// For instances put straight into the world without a sandbox.
    pub sandboxes: Arc<Sandboxes>,
    /// The SSH servers of the Studio spaces' running apps.
    pub spaces: Arc<crate::sagemaker::Servers>,
    /// The access key id this request was signed with (see `caller`).
    pub access_key: Option<String>,
}

impl AppState {
    /// The world, locked, as this request's caller sees it.
    pub(crate) fn world(&self) -> crate::caller::CallerWorld<'_> {
        crate::caller::CallerWorld::lock(&self.world, self.access_key.as_deref())
    }
}

/// A running fake AWS. Stops when dropped.
pub struct FakeAws {
    addr: SocketAddr,
    world: SharedWorld,
    sandboxes: Arc<Sandboxes>,
    spaces: Arc<crate::sagemaker::Servers>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeAws {
    /// Starts the fake on a free port of 127.0.0.1 with the seeded state.
    /// Instances without a sandbox get a temporary one.
    pub async fn start(seed: Seed) -> anyhow::Result<FakeAws> {
        let sandboxes = Arc::new(Sandboxes::default());
        let mut world = World::from_seed(seed);
        for instance in world.instances.values_mut() {
            sandboxes.provision(instance)?;
        }
        let world: SharedWorld = Arc::new(Mutex::new(world));
        let spaces = Arc::new(crate::sagemaker::Servers::default());
        crate::sagemaker::start_seeded(&world, &sandboxes, &spaces).await?;
        // Small writes go out at once, as from Go servers (Go's TCP default is
        // no delay, `net.TCPConn.SetNoDelay`): without it Nagle held each
        // reply behind the previous one's delayed ACK, about 40 ms.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await?
            .tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
        let addr = listener.local_addr()?;
        let state = AppState {
            world: world.clone(),
            port: addr.port(),
            sandboxes: sandboxes.clone(),
            spaces: spaces.clone(),
            access_key: None,
        };
        let app = Router::new()
            .route("/", post(api))
            .route(MINT_PATH, post(mint))
            .with_state(state)
            .merge(crate::datachannel::router(world.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("fake AWS server failed: {e}");
            }
        });
        Ok(FakeAws {
            addr,
            world,
            sandboxes,
            spaces,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn world(&self) -> SharedWorld {
        self.world.clone()
    }

    pub fn region(&self) -> String {
        self.world.lock().unwrap().region.clone()
    }

    /// The environment that points the AWS SDK (and the AWS CLI) at the fake
    /// and keeps it off the network: endpoints, region, dummy credentials,
    /// no instance metadata service.
    pub fn env(&self) -> Vec<(String, String)> {
        let endpoint = self.endpoint();
        let region = self.region();
        [
            ("AWS_ENDPOINT_URL_SSM", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_STS", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_SAGEMAKER", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_IAM", endpoint.as_str()),
            // Every other service too: nothing the fake does not serve may reach AWS.
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ENDPOINT_URL_KMS", endpoint.as_str()),
            ("AWS_REGION", region.as_str()),
            ("AWS_DEFAULT_REGION", region.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Adds (or replaces) an instance, giving it a sandbox when it has none.
    /// Returns the sandbox path.
    pub fn add_instance(&self, mut instance: Instance) -> anyhow::Result<std::path::PathBuf> {
        let path = self.sandboxes.provision(&mut instance)?;
        self.world
            .lock()
            .unwrap()
            .instances
            .insert(instance.id.clone(), instance);
        Ok(path)
    }

    /// The instance's sandbox folder, if the instance exists.
    pub fn sandbox(&self, instance_id: &str) -> Option<std::path::PathBuf> {
        let world = self.world.lock().unwrap();
        world.instances.get(instance_id)?.sandbox.clone()
    }

    pub fn set_ping_status(&self, instance_id: &str, status: PingStatus) {
        self.with_instance(instance_id, |i| i.ping_status = status);
    }

    pub fn set_tag(&self, instance_id: &str, key: &str, value: &str) {
        self.with_instance(instance_id, |i| {
            i.tags.insert(key.into(), value.into());
        });
    }

    /// Makes `localhost:<port>` on the instance reach `target`.
    pub fn map_port(&self, instance_id: &str, port: u16, target: SocketAddr) {
        self.with_instance(instance_id, |i| {
            i.ports.insert(port, target);
        });
    }

    /// Makes `<host:port>` seen from the instance reach `target`.
    pub fn map_remote_host(&self, instance_id: &str, host_port: &str, target: SocketAddr) {
        self.with_instance(instance_id, |i| {
            i.remote_hosts.insert(host_port.into(), target);
        });
    }

    fn with_instance(&self, id: &str, f: impl FnOnce(&mut Instance)) {
        let mut world = self.world.lock().unwrap();
        let instance = world
            .instances
            .get_mut(id)
            .unwrap_or_else(|| panic!("the fake has no instance {id}"));
        f(instance);
    }

    /// Denies (or allows again) a whole action such as `ssm:StartSession`.
    pub fn deny_action(&self, action: &str, denied: bool) {
        let mut world = self.world.lock().unwrap();
        if denied {
            world.denials.actions.insert(action.into());
        } else {
            world.denials.actions.remove(action);
        }
    }

    /// Denies (or allows again) a document to StartSession and SendCommand.
    pub fn deny_document(&self, document: &str, denied: bool) {
        let mut world = self.world.lock().unwrap();
        if denied {
            world.denials.documents.insert(document.into());
        } else {
            world.denials.documents.remove(document);
        }
    }

    /// Switches the `SSHOwner = aws:userid` condition on or off.
    pub fn enforce_owner_tag(&self, on: bool) {
        self.world.lock().unwrap().denials.enforce_owner_tag = on;
    }

    pub fn set_identity(&self, identity: crate::world::Identity) {
        self.world.lock().unwrap().identity = identity;
    }

    /// The `host:port` later StartSession and ResumeSession StreamUrls name
    /// (`None`: this server's own 127.0.0.1 port).
    pub fn set_stream_endpoint(&self, endpoint: Option<String>) {
        self.world.lock().unwrap().stream_endpoint = endpoint;
    }

    /// Makes later StreamUrls say `wss://` (a TLS front stands at the stream endpoint).
    pub fn set_stream_tls(&self, tls: bool) {
        self.world.lock().unwrap().stream_tls = tls;
    }

    /// Makes requests signed with `access_key_id` come from `identity`.
    pub fn add_identity(&self, access_key_id: &str, identity: crate::world::Identity) {
        self.world
            .lock()
            .unwrap()
            .identities
            .insert(access_key_id.into(), identity);
    }

    /// Applies to sessions whose token is redeemed from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.world.lock().unwrap().faults = faults;
    }

    /// Temporary credentials that expire `ttl` from now.
    pub fn mint_credentials(&self, ttl: Duration) -> crate::auth::Credential {
        self.world.lock().unwrap().mint(ttl)
    }

    /// What the data channel demands of websockets dialled from now on.
    pub fn set_data_channel_policy(&self, policy: crate::auth::DataChannelPolicy) {
        self.world.lock().unwrap().data_channel = policy;
    }

    /// Applies to sessions whose token is redeemed from now on.
    pub fn set_pacing(&self, pacing: Pacing) {
        self.world.lock().unwrap().pacing = pacing;
    }

    /// The known_hosts line for `host` with the host key the space's SSH
    /// server shows now (`None` when its app is not running).
    pub fn space_known_hosts_line(
        &self,
        domain_id: &str,
        space: &str,
        host: &str,
    ) -> Option<String> {
        let arn = crate::sagemaker::space_arn(&self.world.lock().unwrap(), domain_id, space);
        self.spaces.known_hosts_line(&arn, host)
    }

    /// Changes a seeded space (its app, settings, failures to come).
    pub fn with_space(
        &self,
        domain_id: &str,
        space: &str,
        f: impl FnOnce(&mut crate::sagemaker::Space),
    ) {
        let mut world = self.world.lock().unwrap();
        let found = world
            .sagemaker
            .spaces
            .iter_mut()
            .find(|s| s.domain_id == domain_id && s.name == space)
            .unwrap_or_else(|| panic!("the fake has no space {domain_id}/{space}"));
        f(found);
    }

    /// The CloudTrail-style record of the calls answered so far.
    pub fn events(&self) -> Vec<ApiEvent> {
        self.world.lock().unwrap().events.clone()
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Where tests get temporary credentials: `POST /sm-ssh-fake/credentials?seconds=N`
/// answers `credential_process` JSON for a key expiring in N seconds (default 900).
pub const MINT_PATH: &str = "/sm-ssh-fake/credentials";

async fn mint(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let seconds = query
        .get("seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let credential = state
        .world
        .lock()
        .unwrap()
        .mint(Duration::from_secs(seconds));
    axum::Json(credential.process_json()).into_response()
}

/// `POST /`: SSM or SageMaker when `X-Amz-Target` names it, IAM, EC2 or
/// STS when the body is a Query-protocol form (told apart by its `Version`).
/// Credentials are checked first, as IAM does.
async fn api(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let state = AppState {
        access_key: crate::caller::access_key_id(&headers),
        ..state
    };
    let latency = state.world.lock().unwrap().faults.latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json = !target.is_empty();
    let checked = state.world.lock().unwrap().check_api_call(&headers, json);
    if let Err(refusal) = checked {
        return if json {
            ApiError {
                status: refusal.status,
                code: refusal.code,
                message: refusal.message,
            }
            .into_response()
        } else if crate::ec2::is_ec2(&body) {
            crate::ec2::error(refusal.status, refusal.code, &refusal.message)
        } else {
            crate::sts::refusal(refusal)
        };
    }
    if let Some(op) = target.strip_prefix("AmazonSSM.") {
        crate::ssm::handle(&state, op, &body).await
    } else if let Some(op) = target.strip_prefix("SageMaker.") {
        crate::sagemaker::handle(&state, op, &body).await
    } else if let Some(op) = target.strip_prefix("Logs_20140328.") {
        match crate::logs::handle(&state, op, &body) {
            Ok(v) => crate::ssm::json_response(axum::http::StatusCode::OK, &v),
            Err(e) => e.into_response(),
        }
    } else if target.is_empty() && crate::iam::is_iam(&body) {
        crate::iam::handle(&state, &body)
    } else if let Some(op) = target.strip_prefix("TrentService.") {
        match crate::kms::handle(&state, op, &body) {
            Ok(v) => crate::ssm::json_response(axum::http::StatusCode::OK, &v),
            Err(e) => e.into_response(),
        }
    } else if target.is_empty() && crate::ec2::is_ec2(&body) {
        crate::ec2::handle(&state, &headers, &body)
    } else if target.is_empty() && crate::sts::is_query(&body) {
        crate::sts::handle(&state, &body)
    } else {
        ApiError::new(
            "UnknownOperationException",
            format!("the fake AWS does not serve X-Amz-Target {target:?}"),
        )
        .into_response()
    }
}
