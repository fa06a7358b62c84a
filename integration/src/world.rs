//! The state of the fake AWS: what is seeded (instances, identity, denials,
//! pacing, faults) and what the APIs create (sessions, commands, activations).
//!
//! The control plane (`ssm_api`, `sts`) and the data plane (`datachannel`) share
//! one `World` behind a mutex; the data plane never holds the lock across I/O.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use crate::auth::{Credential, DataChannelPolicy};

/// The handle every part of the fake shares.
pub type SharedWorld = Arc<Mutex<World>>;

/// A caller identity, as STS `GetCallerIdentity` reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub arn: String,
    /// `aws:userid`: what jobs carry in their `SSHOwner` tag.
    pub user_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            account: "123456789012".into(),
            arn: "arn:aws:sts::123456789012:assumed-role/Developer/alice".into(),
            user_id: "AROAEXAMPLEDEVELOPER:alice".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum PingStatus {
    #[default]
    Online,
    ConnectionLost,
    Inactive,
}

/// One SSM managed instance (`mi-…`), or an AWS-native target
/// (`sagemaker-training-job:…` and the like) when seeded under that id.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    pub id: String,
    pub ping_status: PingStatus,
    pub tags: BTreeMap<String, String>,
    /// `ManagedInstance` for `mi-…`, `EC2Instance` for `i-…`.
    pub resource_type: String,
    /// Epoch seconds.
    pub registration_date: f64,
    /// Epoch seconds.
    pub last_ping: f64,
    pub agent_version: String,
    pub platform_type: String,
    pub ip_address: String,
    pub computer_name: String,
    pub iam_role: String,
    pub activation_id: String,
    /// What `localhost:<port>` on the instance reaches: port → real address.
    pub ports: BTreeMap<u16, SocketAddr>,
    /// What `<host>:<port>` reaches for the ToRemoteHost document: "host:port" → real address.
    pub remote_hosts: BTreeMap<String, SocketAddr>,
    /// Where SendCommand runs scripts: HOME and an `etc/ssh` folder live here.
    /// Created by the fake when left empty.
    pub sandbox: Option<PathBuf>,
    /// The KMS key the agent encrypts this instance's shell sessions with,
    /// overriding the account's session preferences.
    pub session_kms_key: Option<String>,
    /// A target Session Manager resolves itself (`sagemaker-cluster:…`,
    /// `sagemaker-training-job:…`, `sagemaker-endpoint:…`): `id` is that
    /// string. SageMaker registers these nodes in its own account, so they
    /// are not in the caller's DescribeInstanceInformation and SendCommand
    /// cannot address them; only StartSession reaches them.
    pub native: bool,
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            id: String::new(),
            ping_status: PingStatus::Online,
            tags: BTreeMap::new(),
            resource_type: "ManagedInstance".into(),
            registration_date: 1_700_000_000.0,
            last_ping: 1_700_000_000.0,
            agent_version: "3.3.1802.0".into(),
            platform_type: "Linux".into(),
            ip_address: "169.254.0.2".into(),
            computer_name: "algo-1".into(),
            iam_role: "service-role/AmazonSageMaker-ExecutionRole".into(),
            activation_id: String::new(),
            ports: BTreeMap::new(),
            remote_hosts: BTreeMap::new(),
            sandbox: None,
            session_kms_key: None,
            native: false,
        }
    }
}

/// Calls the fake answers with `AccessDeniedException`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Denials {
    /// Whole actions, e.g. `ssm:SendCommand`, `sts:GetCallerIdentity`.
    pub actions: HashSet<String>,
    /// Documents denied to StartSession and SendCommand, e.g. `AWS-StartPortForwardingSession`.
    pub documents: HashSet<String>,
    /// Mimics the client policy's `ssm:resourceTag/SSHOwner = ${aws:userid}` condition:
    /// StartSession and SendCommand on an instance whose SSHOwner differs are denied.
    pub enforce_owner_tag: bool,
}

/// How fast the fake agent moves data.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Pacing {
    /// The agent's 1024-byte reads with a 1 ms pause, under the service's ceiling.
    #[default]
    Realistic,
    /// As fast as possible, to measure the client.
    Unconstrained,
    /// Realistic, with an explicit message-rate ceiling per direction.
    Ceiling { messages_per_second: u32 },
}

/// Seeded, reproducible faults, applied per direction of the data channel.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    pub seed: u64,
    /// Faults on frames travelling client → agent.
    pub to_agent: DirectionFaults,
    /// Faults on frames travelling agent → client.
    pub to_client: DirectionFaults,
    /// Close the client websocket after this many frames relayed (each connection).
    pub cut_after_messages: Option<u64>,
    /// Close the client websocket every this many milliseconds (with `1000 Bye`).
    pub cut_every_ms: Option<u64>,
    /// Refuse every OpenDataChannel token.
    pub refuse_token: bool,
    /// The agent fails to dial the target port.
    pub fail_target_dial: bool,
    /// The agent never acknowledges client messages.
    pub withhold_acks: bool,
    /// Send `channel_closed` with the 112-byte header and NUL-padded type.
    pub short_channel_closed: bool,
    /// Extra latency added to each API call and each websocket frame, in milliseconds.
    pub latency_ms: u64,
    /// The agent encrypts with a key other than the one KMS gave it, so the
    /// client's decryption fails (a wrong key).
    pub kms_wrong_key: bool,
    /// Answer this many StartSession calls with ThrottlingException, then serve again.
    pub throttle_start_session: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DirectionFaults {
    /// Probability in [0, 1] that a stream frame is dropped.
    pub drop: f64,
    /// Probability that a stream frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a stream frame is held back and delivered after the next one.
    pub reorder: f64,
    /// Fixed delay in milliseconds on every frame.
    pub delay_ms: u64,
    /// Probability that a frame's digest is corrupted.
    pub corrupt_digest: f64,
}

/// The smux keep-alive of agents that run it (3.0.222.0 to 3.1.1445, and
/// later ones for clients up to 1.2.331.0): xtaci/smux `DefaultConfig`, a NOP
/// every `interval_ms` and the session closed after `timeout_ms` without a
/// frame from the client. Shorter values make tests fast.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct SmuxKeepAlive {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Default for SmuxKeepAlive {
    fn default() -> Self {
        SmuxKeepAlive {
            interval_ms: 10_000,
            timeout_ms: 30_000,
        }
    }
}

/// Everything a test or the config file seeds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Seed {
    pub region: String,
    pub identity: Identity,
    /// Further callers, by the access key id their requests are signed with
    /// (`Credential=<key>/…` in SigV4's Authorization header). Requests with
    /// any other key are `identity`'s.
    pub identities: BTreeMap<String, Identity>,
    pub instances: Vec<Instance>,
    pub denials: Denials,
    pub pacing: Pacing,
    pub faults: Faults,
    /// `/ssm/managed-instance/activation-tier`: `standard` or `advanced`.
    pub activation_tier: String,
    /// Roles, users, groups and managed policies IAM answers with.
    pub iam: crate::iam::Account,
    /// Domains, spaces and their apps, jobs and notebook instances.
    pub sagemaker: crate::sagemaker::Seed,
    /// The VPC endpoints EC2 DescribeVpcEndpoints answers with.
    pub ec2: crate::ec2::Seed,
    /// Access keys known besides the static `testing` pair (see `auth`).
    pub credentials: Vec<Credential>,
    /// What the data channel demands of a websocket (on by default).
    pub data_channel: DataChannelPolicy,
    pub smux_keepalive: SmuxKeepAlive,
    /// The Session Manager preferences (SSM-SessionManagerRunShell's inputs).
    pub session_preferences: SessionPreferences,
    /// The fake KMS's customer managed keys: key ids or `alias/…` names.
    pub kms_keys: Vec<String>,
    /// The account's own session documents, by name.
    pub documents: BTreeMap<String, SessionDocument>,
}

/// A customer's Session document: its `sessionType` and fixed `properties`
/// (parameters are not modelled for these).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionDocument {
    pub session_type: String,
    pub properties: serde_json::Value,
}

/// The account's Session Manager preferences that shape shell sessions.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionPreferences {
    /// `kmsKeyId`: when set, shell sessions are KMS-encrypted.
    pub kms_key_id: String,
    /// `shellProfile.linux`: written into every new shell.
    pub shell_profile: String,
}

/// A session created by StartSession.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub target: String,
    pub document: String,
    /// The document's `properties` after parameter substitution, keys sorted,
    /// as the agent echoes them in the HandshakeRequest.
    pub properties: serde_json::Value,
    /// Tokens issued and not yet redeemed (single use).
    pub unused_tokens: HashSet<String>,
    /// Set to true by TerminateSession; the data plane ends the session.
    pub terminated: watch::Sender<bool>,
    /// When StartSession created it: the agent's 15 s handshake clock starts here.
    pub started: std::time::Instant,
}

/// What Session Manager remembers of a session for DescribeSessions: who
/// started it, why, and when it started and ended. Kept apart from
/// [`Session`], which the data plane owns.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub target: String,
    pub document: String,
    /// The identity that called StartSession.
    pub owner: Identity,
    /// StartSession's `Reason`.
    pub reason: Option<String>,
    /// Epoch seconds.
    pub started: f64,
    /// Epoch seconds; set when the session is terminated or ends on its own.
    pub ended: Option<f64>,
    /// Whether a client redeemed a token (opened the data channel).
    pub connected: bool,
}

/// Everything the data plane needs to run a session, handed out once per
/// redeemed token.
#[derive(Clone, Debug)]
pub struct Grant {
    pub session_id: String,
    pub target: String,
    pub properties: serde_json::Value,
    pub ports: BTreeMap<u16, SocketAddr>,
    pub remote_hosts: BTreeMap<String, SocketAddr>,
    pub terminated: watch::Receiver<bool>,
    pub pacing: Pacing,
    pub faults: Faults,
    pub session_type: String,
    /// The key the agent encrypts a shell session with, if any.
    pub kms_key: Option<String>,
    pub shell_profile: String,
    pub sandbox: Option<PathBuf>,
    pub smux_keepalive: SmuxKeepAlive,
    /// `Session::started`.
    pub started: std::time::Instant,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no such session")]
    UnknownSession,
    #[error("token is not valid for this session")]
    BadToken,
    #[error("session is terminated")]
    Terminated,
}

/// The whole fake account.
#[derive(Debug, Default)]
pub struct World {
    pub region: String,
    /// The caller of requests signed with an access key not in `identities`.
    /// While an API call is answered, this is that call's caller.
    pub identity: Identity,
    /// Seeded callers by access key id (see [`Seed::identities`]).
    pub identities: BTreeMap<String, Identity>,
    pub instances: BTreeMap<String, Instance>,
    pub denials: Denials,
    pub pacing: Pacing,
    pub faults: Faults,
    pub activation_tier: String,
    pub iam: crate::iam::Account,
    /// Access keys known besides the static `testing` pair, by key id.
    pub credentials: BTreeMap<String, Credential>,
    pub data_channel: DataChannelPolicy,
    /// The secret of the key the service presigns StreamUrls with.
    pub service_secret: String,
    pub session_preferences: SessionPreferences,
    /// The fake KMS's keys.
    pub kms: crate::kms::Keys,
    pub documents: BTreeMap<String, SessionDocument>,
    pub smux_keepalive: SmuxKeepAlive,
    pub sessions: HashMap<String, Session>,
    /// Every session StartSession created, by SessionId, for DescribeSessions.
    pub session_records: HashMap<String, SessionRecord>,
    /// The data channel's live sessions and counters (see `datachannel::DataPlane`).
    pub data_plane: crate::datachannel::DataPlane,
    /// Commands sent with SendCommand, by CommandId.
    pub commands: HashMap<String, Command>,
    /// Activations created with CreateActivation, by ActivationId.
    pub activations: BTreeMap<String, Activation>,
    /// CloudTrail-style record of every API call the control plane answered.
    pub events: Vec<ApiEvent>,
    /// `host:port` the StreamUrls name instead of the fake's own 127.0.0.1
    /// port: a host name a test resolves itself, or a listener in a network
    /// namespace (tests/netns.rs).
    pub stream_endpoint: Option<String>,
    /// StreamUrls say `wss://`: a TLS front the test runs itself stands at
    /// `stream_endpoint` (the benchmark's realistic network).
    pub stream_tls: bool,
    /// The SageMaker resources, as seeded and changed by the API.
    pub sagemaker: crate::sagemaker::State,
    /// The VPC endpoints EC2 answers with (seeded, never changed).
    pub ec2: crate::ec2::Seed,
}

/// One SendCommand: its request and one invocation per instance.
#[derive(Debug, Clone)]
pub struct Command {
    pub id: String,
    pub document: String,
    pub comment: String,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub timeout_seconds: u64,
    /// Epoch seconds.
    pub requested: f64,
    pub requested_at: std::time::Instant,
    pub invocations: BTreeMap<String, Invocation>,
}

/// What a command did on one instance. `status` follows the real service's
/// walk: Pending → InProgress → Success | Failed | TimedOut.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub status: CommandStatus,
    /// How many GetCommandInvocation calls were answered for it.
    pub polls: u32,
    pub stdout: String,
    pub stderr: String,
    /// The script's exit code; -1 until it ends.
    pub response_code: i32,
    /// Epoch seconds.
    pub started: Option<f64>,
    pub ended: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandStatus {
    Pending,
    InProgress,
    Success,
    Failed,
    TimedOut,
}

/// One CreateActivation.
#[derive(Debug, Clone)]
pub struct Activation {
    pub id: String,
    pub code: String,
    pub iam_role: String,
    pub description: String,
    pub default_instance_name: String,
    pub registration_limit: i32,
    pub tags: BTreeMap<String, String>,
}

/// One API call, as CloudTrail would attribute it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEvent {
    /// e.g. `ssm:StartSession`.
    pub action: String,
    /// The caller's ARN.
    pub caller: String,
    /// Instance or session the call was about, when there is one.
    pub resource: Option<String>,
    pub document: Option<String>,
    /// StartSession's `Reason`.
    pub reason: Option<String>,
    /// The error code when the call was refused.
    pub error: Option<String>,
}

impl World {
    /// A world holding what the seed describes; empty region and tier get
    /// the fake's defaults (`us-east-1`, `standard`).
    pub fn from_seed(seed: Seed) -> World {
        let region = if seed.region.is_empty() {
            "us-east-1".to_string()
        } else {
            seed.region
        };
        let activation_tier = if seed.activation_tier.is_empty() {
            "standard".to_string()
        } else {
            seed.activation_tier
        };
        World {
            region,
            identity: seed.identity,
            identities: seed.identities,
            instances: seed
                .instances
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect(),
            denials: seed.denials,
            pacing: seed.pacing,
            faults: seed.faults,
            activation_tier,
            iam: seed.iam,
            sagemaker: seed.sagemaker,
            ec2: seed.ec2,
            credentials: seed
                .credentials
                .into_iter()
                .map(|c| (c.access_key_id.clone(), c))
                .collect(),
            data_channel: seed.data_channel,
            service_secret: uuid::Uuid::new_v4().simple().to_string(),
            session_preferences: seed.session_preferences,
            kms: crate::kms::Keys::new(&seed.kms_keys),
            documents: seed.documents,
            smux_keepalive: seed.smux_keepalive,
            ..World::default()
        }
    }

    /// Redeems a single-use token: the data plane's check of OpenDataChannel.
    pub fn redeem_token(&mut self, session_id: &str, token: &str) -> Result<Grant, TokenError> {
        let refuse = self.faults.refuse_token;
        let session = self
            .sessions
            .get_mut(session_id)
            .ok_or(TokenError::UnknownSession)?;
        if *session.terminated.borrow() {
            return Err(TokenError::Terminated);
        }
        if refuse || !session.unused_tokens.remove(token) {
            return Err(TokenError::BadToken);
        }
        if let Some(record) = self.session_records.get_mut(session_id) {
            record.connected = true;
        }
        let instance = self.instances.get(&session.target);
        Ok(Grant {
            session_id: session.id.clone(),
            target: session.target.clone(),
            properties: session.properties.clone(),
            ports: instance.map(|i| i.ports.clone()).unwrap_or_default(),
            remote_hosts: instance.map(|i| i.remote_hosts.clone()).unwrap_or_default(),
            terminated: session.terminated.subscribe(),
            pacing: self.pacing,
            faults: self.faults.clone(),
            session_type: crate::ssm::session_type(&self.documents, &session.document).to_owned(),
            // Port sessions are never encrypted (agent `sessionplugin.go` `isEncryptionEnabled`).
            kms_key: (crate::ssm::session_type(&self.documents, &session.document) != "Port")
                .then(|| {
                    instance
                        .and_then(|i| i.session_kms_key.clone())
                        .unwrap_or_else(|| self.session_preferences.kms_key_id.clone())
                })
                .filter(|k| !k.is_empty()),
            shell_profile: self.session_preferences.shell_profile.clone(),
            sandbox: instance.and_then(|i| i.sandbox.clone()),
            smux_keepalive: self.smux_keepalive,
            started: session.started,
        })
    }
}
