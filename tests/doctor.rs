//! `sm-ssh doctor` end to end: the real binary with SSM and STS on the fake,
//! IAM and SageMaker on moto, and each prerequisite taken away in turn.
//!
//! The tests running at the same time share one moto (see [`moto`]); each
//! names its IAM roles, jobs and notebooks after itself so they never meet.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use aws_sdk_iam::config::{BehaviorVersion, Credentials, Region};
use common::*;
use serde_json::Value;
use sm_ssh_integration::moto::MotoServer;
use sm_ssh_integration::world::{Identity, Seed};

const USER_ID: &str = "AROAEXAMPLEDEVELOPER:alice";

/// One moto for the tests that run at once, stopped when the last one ends.
fn moto() -> Arc<MotoServer> {
    static SHARED: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(moto) = shared.upgrade() {
        return moto;
    }
    let moto = Arc::new(MotoServer::start().expect("moto starts"));
    *shared = Arc::downgrade(&moto);
    moto
}

/// One test's AWS account: SSM and STS on the fake (caller = the assumed
/// role `<prefix>-Developer`), IAM, SageMaker and Logs on moto.
struct Account {
    env: Env,
    _moto: Arc<MotoServer>,
    iam: aws_sdk_iam::Client,
    sagemaker: aws_sdk_sagemaker::Client,
    prefix: String,
}

impl Account {
    /// An account with nothing set up yet, with the SSM tier `tier`.
    fn empty(prefix: &str, tier: &str) -> Account {
        Account::empty_in(prefix, tier, REGION)
    }

    /// The same in `region`, for tests whose SageMaker resources other
    /// tests (sharing moto, in REGION) must not see.
    fn empty_in(prefix: &str, tier: &str, region: &str) -> Account {
        let moto = moto();
        let seed = Seed {
            region: region.into(),
            identity: Identity {
                account: ACCOUNT.into(),
                arn: format!("arn:aws:sts::{ACCOUNT}:assumed-role/{prefix}-Developer/alice"),
                user_id: USER_ID.into(),
            },
            activation_tier: tier.into(),
            ..Seed::default()
        };
        let mut env = Env::start(seed);
        for service in ["IAM", "SAGEMAKER", "CLOUDWATCH_LOGS"] {
            env.extra_env
                .push((format!("AWS_ENDPOINT_URL_{service}"), moto.endpoint()));
        }
        let credentials = Credentials::new("testing", "testing", None, None, "doctor-tests");
        let iam = aws_sdk_iam::Client::from_conf(
            aws_sdk_iam::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(region.to_owned()))
                .endpoint_url(moto.endpoint())
                .credentials_provider(credentials.clone())
                .build(),
        );
        let sagemaker = aws_sdk_sagemaker::Client::from_conf(
            aws_sdk_sagemaker::config::Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(region.to_owned()))
                .endpoint_url(moto.endpoint())
                .credentials_provider(credentials)
                .build(),
        );
        Account {
            env,
            _moto: moto,
            iam,
            sagemaker,
            prefix: prefix.into(),
        }
    }

    /// The account the setup guide describes, built from `sm-ssh policy`'s
    /// own documents: trust and server policy on the execution role, client
    /// policy on the caller's role, advanced tier.
    fn well_configured(prefix: &str) -> Account {
        Account::well_configured_in(prefix, REGION)
    }

    fn well_configured_in(prefix: &str, region: &str) -> Account {
        let account = Account::empty_in(prefix, "advanced", region);
        let trust = account.policy(&["trust"]);
        account.create_role(&account.exec_role_name(), "/service-role/", &trust);
        account.put_role_policy(
            &account.exec_role_name(),
            "SSHSageMakerServerPolicy",
            &account.policy(&["server", "--role", &account.exec_role_arn()]),
        );
        account.create_role(&account.caller_role_name(), "/", &caller_trust());
        account.put_role_policy(
            &account.caller_role_name(),
            "SSHSageMakerClientPolicy",
            &account.policy(&["client", "--account", ACCOUNT]),
        );
        account
    }

    fn exec_role_name(&self) -> String {
        format!("{}-Exec", self.prefix)
    }

    fn exec_role_arn(&self) -> String {
        format!(
            "arn:aws:iam::{ACCOUNT}:role/service-role/{}",
            self.exec_role_name()
        )
    }

    fn caller_role_name(&self) -> String {
        format!("{}-Developer", self.prefix)
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.env.runtime().block_on(future)
    }

    /// `sm-ssh policy <args>`'s JSON document.
    fn policy(&self, args: &[&str]) -> String {
        let output = self.env.run(["policy"].iter().chain(args));
        let (stdout, _) = assert_exit(&output, 0);
        serde_json::from_str::<Value>(&stdout).expect("policy prints JSON");
        stdout
    }

    fn create_role(&self, name: &str, path: &str, trust: &str) {
        self.block_on(
            self.iam
                .create_role()
                .role_name(name)
                .path(path)
                .assume_role_policy_document(trust)
                .send(),
        )
        .expect("CreateRole on moto");
    }

    fn put_role_policy(&self, role: &str, name: &str, document: &str) {
        self.block_on(
            self.iam
                .put_role_policy()
                .role_name(role)
                .policy_name(name)
                .policy_document(document)
                .send(),
        )
        .expect("PutRolePolicy on moto");
    }

    /// Replaces the execution role's trust policy.
    fn update_exec_trust(&self, document: &str) {
        self.block_on(
            self.iam
                .update_assume_role_policy()
                .role_name(self.exec_role_name())
                .policy_document(document)
                .send(),
        )
        .expect("UpdateAssumeRolePolicy on moto");
    }

    fn delete_role_policy(&self, role: &str, name: &str) {
        self.block_on(
            self.iam
                .delete_role_policy()
                .role_name(role)
                .policy_name(name)
                .send(),
        )
        .expect("DeleteRolePolicy on moto");
    }

    /// `sm-ssh doctor <args>`.
    fn doctor(&self, args: &[&str]) -> Output {
        self.env.run(["doctor"].iter().chain(args))
    }

    /// `sm-ssh doctor --json <args>`, checking the exit code against the
    /// report's own `exit_code`.
    fn doctor_json(&self, args: &[&str], code: i32) -> Value {
        let output = self.doctor(&[&["--json"], args].concat());
        let (stdout, _) = assert_exit(&output, code);
        let report: Value = serde_json::from_str(&stdout).expect("--json prints JSON");
        assert_eq!(report["exit_code"], code, "{stdout}");
        report
    }
}

/// Any trust policy: doctor never reads the caller role's.
fn caller_trust() -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:root"}},"Action":"sts:AssumeRole"}}]}}"#
    )
}

/// The check with this id.
#[track_caller]
fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// `(id, status)` of every check, in order.
fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .expect("checks is a list")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// What the local checks say on this machine with a fresh HOME: ssh is
/// there (scripts/test installs it), sm-ssh's block is not, no keys.
const LOCAL: [(&str, &str); 3] = [
    ("ssh-client", "pass"),
    ("ssh-config", "warn"),
    ("ssh-keys", "pass"),
];

/// The statuses of a well-configured account with `--role`, with `changes`
/// applied.
fn expected(changes: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(&str, &str)> = vec![
        ("identity", "pass"),
        ("region", "pass"),
        ("ssm-tier", "pass"),
        ("role-trust", "pass"),
        ("role-policy", "pass"),
        ("client-policy", "pass"),
        ("network", "skip"),
        ("managed-instances", "pass"),
        ("attribution", "pass"),
    ];
    all.extend(LOCAL);
    for (id, status) in changes {
        let entry = all
            .iter_mut()
            .find(|(i, _)| i == id)
            .unwrap_or_else(|| panic!("no check {id}"));
        entry.1 = status;
    }
    all.into_iter()
        .map(|(i, s)| (i.to_owned(), s.to_owned()))
        .collect()
}

#[track_caller]
fn assert_statuses(report: &Value, changes: &[(&str, &str)]) {
    assert_eq!(statuses(report), expected(changes), "{report:#}");
}

/// [`assert_statuses`] for `--job`, which adds the `remote-debug` check
/// (remote debugging is off on moto's jobs: a WARN, or SKIP without a job).
#[track_caller]
fn assert_job_statuses(report: &Value, remote_debug: &str, changes: &[(&str, &str)]) {
    let mut want = expected(changes);
    let at = want.iter().position(|(id, _)| id == "network").unwrap();
    want.insert(at, ("remote-debug".into(), remote_debug.into()));
    assert_eq!(statuses(report), want, "{report:#}");
}

fn text_of(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[test]
fn a_well_configured_account_passes_every_check() {
    let account = Account::well_configured("wellconfigured");
    let role = account.exec_role_arn();
    let report = account.doctor_json(&["--role", &role], 0);
    assert_statuses(&report, &[]);
    assert_eq!(report["account"], ACCOUNT);
    assert_eq!(report["region"], REGION);
    let identity = text_of(&check(&report, "identity")["detail"]);
    assert!(
        identity.contains(&format!("SSHOwner={USER_ID}")),
        "{identity}"
    );
    assert!(text_of(&check(&report, "region")["detail"]).contains("eu-west-1 (from AWS_REGION)"));
    let trust = text_of(&check(&report, "role-trust")["detail"]);
    assert!(trust.contains(&role), "{trust}");
    assert_eq!(check(&report, "ssm-tier")["region"], REGION);
    assert_eq!(check(&report, "ssh-config")["fix"], "sm-ssh config install");

    // The text form says the same, one line per check, and ends in the verdict.
    let output = account.doctor(&["--role", &role]);
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(stderr.is_empty(), "{stderr}");
    for line in [
        "PASS  identity: ",
        "PASS  ssm-tier (eu-west-1): advanced-instances tier is on",
        "PASS  role-trust: ",
        "PASS  role-policy: ",
        "PASS  client-policy: ",
        "SKIP  network: ",
        "WARN  ssh-config: ",
        "      fix: sm-ssh config install",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in\n{stdout}"
        );
    }
    assert!(
        stdout.ends_with("10 passed, 1 warnings, 0 failed, 1 skipped: nothing blocks SSH.\n"),
        "{stdout}"
    );
}

#[test]
fn the_standard_tier_fails_with_the_update_command() {
    let account = Account::well_configured("standardtier");
    let world = account.env.fake.world();
    world.lock().unwrap().activation_tier = "standard".into();
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 1);
    assert_statuses(&report, &[("ssm-tier", "fail")]);
    let tier = check(&report, "ssm-tier");
    assert!(text_of(&tier["detail"]).contains("the instance tier is standard"));
    assert_eq!(
        tier["fix"],
        format!(
            "sm-ssh doctor --fix --region {REGION}\nor: aws ssm update-service-setting --region {REGION} \
             --setting-id arn:aws:ssm:{REGION}:{ACCOUNT}:servicesetting/ssm/managed-instance/activation-tier \
             --setting-value advanced"
        )
    );
    // Checking only: nothing changed.
    assert_eq!(world.lock().unwrap().activation_tier, "standard");
}

#[test]
fn a_trust_policy_without_ssm_fails_with_the_trust_document() {
    let account = Account::well_configured("nossmtrust");
    let sagemaker_only = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"sagemaker.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    account.update_exec_trust(sagemaker_only);
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 1);
    assert_statuses(&report, &[("role-trust", "fail")]);
    let trust = check(&report, "role-trust");
    assert!(
        text_of(&trust["detail"]).ends_with("does not trust ssm.amazonaws.com"),
        "{trust}"
    );
    let fix = text_of(&trust["fix"]);
    let expected_document: Value = serde_json::from_str(&account.policy(&["trust"])).unwrap();
    let prefix = format!(
        "aws iam update-assume-role-policy --role-name {} --policy-document '",
        account.exec_role_name()
    );
    let (document, _) = fix
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once("'\n"))
        .unwrap_or_else(|| panic!("unexpected fix {fix}"));
    assert_eq!(
        serde_json::from_str::<Value>(document).unwrap(),
        expected_document
    );
}

#[test]
fn a_missing_server_policy_fails_with_the_filled_in_put_role_policy() {
    let account = Account::well_configured("noserverpolicy");
    account.delete_role_policy(&account.exec_role_name(), "SSHSageMakerServerPolicy");
    let role = account.exec_role_arn();
    let report = account.doctor_json(&["--role", &role], 1);
    assert_statuses(&report, &[("role-policy", "fail")]);
    let policy = check(&report, "role-policy");
    for action in [
        "iam:PassRole",
        "ssm:CreateActivation",
        "ssmmessages:OpenDataChannel",
    ] {
        assert!(text_of(&policy["detail"]).contains(action), "{policy}");
    }
    assert_eq!(
        policy["fix"],
        format!(
            "aws iam put-role-policy --role-name {} --policy-name SSHSageMakerServerPolicy \
             --policy-document \"$(sm-ssh policy server --role {role})\"",
            account.exec_role_name()
        )
    );
}

/// The client policy with `edit` applied to its statements.
fn edited_client_policy(account: &Account, edit: impl Fn(&mut Value)) -> String {
    let mut document: Value =
        serde_json::from_str(&account.policy(&["client", "--account", ACCOUNT])).unwrap();
    for statement in document["Statement"].as_array_mut().unwrap() {
        edit(statement);
    }
    document.to_string()
}

#[test]
fn a_client_policy_without_start_session_fails() {
    let account = Account::well_configured("nostartsession");
    let document = edited_client_policy(&account, |statement| {
        if let Value::Array(actions) = &mut statement["Action"] {
            actions.retain(|a| a != "ssm:StartSession");
        }
        if statement["Action"] == "ssm:StartSession" {
            statement["Action"] = "ssm:DescribeSessions".into();
        }
    });
    assert!(!document.contains("ssm:StartSession"));
    account.put_role_policy(
        &account.caller_role_name(),
        "SSHSageMakerClientPolicy",
        &document,
    );
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 1);
    assert_statuses(&report, &[("client-policy", "fail")]);
    let client = check(&report, "client-policy");
    let detail = text_of(&client["detail"]);
    assert!(
        detail.contains("ssm:StartSession on arn:aws:ssm:eu-west-1:123456789012:managed-instance/"),
        "{detail}"
    );
    assert!(
        detail.contains("ssm:StartSession on arn:aws:ssm:eu-west-1::document/AWS-StartSSHSession"),
        "{detail}"
    );
    assert!(!detail.contains("ssm:SendCommand"), "{detail}");
    assert_eq!(
        client["fix"],
        format!(
            "aws iam put-role-policy --role-name {} --policy-name SSHSageMakerClientPolicy \
             --policy-document \"$(sm-ssh policy client --account {ACCOUNT})\"",
            account.caller_role_name()
        )
    );
}

#[test]
fn a_client_policy_without_the_owner_condition_warns() {
    let account = Account::well_configured("noownercondition");
    let document = edited_client_policy(&account, |statement| {
        if statement["Sid"] == "ReachOwnInstancesOnly" {
            statement.as_object_mut().unwrap().remove("Condition");
        }
    });
    account.put_role_policy(
        &account.caller_role_name(),
        "SSHSageMakerClientPolicy",
        &document,
    );
    // A warning does not fail the run.
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[("client-policy", "warn")]);
    let client = check(&report, "client-policy");
    let detail = text_of(&client["detail"]);
    assert!(
        detail.contains("is allowed more than SSH needs"),
        "{detail}"
    );
    assert!(detail.contains("ssm:StartSession"), "{detail}");
    assert!(detail.contains("ssm:SendCommand"), "{detail}");
    assert!(
        text_of(&client["fix"]).contains("$(sm-ssh policy client --account 123456789012)"),
        "{client}"
    );
}

#[test]
fn a_denied_service_setting_read_skips_the_tier_check_naming_the_permission() {
    let account = Account::well_configured("denytier");
    account.env.fake.deny_action("ssm:GetServiceSetting", true);
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[("ssm-tier", "skip")]);
    let tier = check(&report, "ssm-tier");
    assert_eq!(
        tier["detail"],
        "not allowed to call ssm:GetServiceSetting (AccessDenied); grant it to run this check"
    );
    assert_eq!(tier["fix"], Value::Null);
}

/// An AWS endpoint (IAM, or SageMaker in [`studio`]) on 127.0.0.1 answering each request (one per connection)
/// with what `answer` makes of its head and body; stops when dropped.
struct IamStub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A stub IAM refusing every call the way IAM does.
type DenyingIam = IamStub;

impl IamStub {
    fn start(answer: impl Fn(&str, &[u8]) -> Vec<u8> + Send + 'static) -> IamStub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, &answer);
                }
            }
        });
        IamStub {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl DenyingIam {
    /// AccessDenied (AWS Query `ErrorResponse`, HTTP 403) for every action.
    fn deny_all() -> DenyingIam {
        IamStub::start(|_, body| denied(&query_value(body, "Action").unwrap_or_default()))
    }
}

impl Drop for IamStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request (headers, then Content-Length bytes) and writes back
/// what `answer` makes of it.
fn serve(stream: TcpStream, answer: &impl Fn(&str, &[u8]) -> Vec<u8>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut stream = stream;
    stream.write_all(&answer(&head, &body))?;
    stream.flush()
}

/// The URL-decoded value of `key` in an AWS Query form body.
fn query_value(body: &[u8], key: &str) -> Option<String> {
    let body = String::from_utf8_lossy(body);
    let raw = body
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))?;
    let bytes = raw.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                index += 1;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// An HTTP response closing the connection.
fn http(status: &str, xml: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    )
    .into_bytes()
}

/// IAM's AccessDenied for `action`.
fn denied(action: &str) -> Vec<u8> {
    let xml = format!(
        "<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
         <Error><Type>Sender</Type><Code>AccessDenied</Code>\
         <Message>User: arn:aws:sts::{ACCOUNT}:assumed-role/Developer/alice is not authorized \
         to perform: iam:{action} because no identity-based policy allows the iam:{action} action</Message>\
         </Error><RequestId>4f6c5a9e-0000-4000-8000-000000000000</RequestId></ErrorResponse>"
    );
    http("403 Forbidden", &xml)
}

/// The request sent on to `endpoint` (moto) as it came, its answer returned.
fn forward(endpoint: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let addr = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let mut upstream = TcpStream::connect(addr).expect("moto accepts");
    // One request per connection: moto must close it after answering.
    let head: String = head
        .lines()
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    upstream
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .unwrap();
    upstream.write_all(body).unwrap();
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).unwrap();
    answer
}

/// IAM's SimulatePrincipalPolicy answer: `decide(action, body)` for the one
/// action and resource doctor asks about at a time.
fn simulated(body: &[u8], decide: &impl Fn(&str, &str) -> &'static str) -> Vec<u8> {
    let action = query_value(body, "ActionNames.member.1").unwrap_or_default();
    let resource = query_value(body, "ResourceArns.member.1").unwrap_or_else(|| "*".into());
    let decision = decide(&action, &String::from_utf8_lossy(body));
    let xml = format!(
        "<SimulatePrincipalPolicyResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
         <SimulatePrincipalPolicyResult><IsTruncated>false</IsTruncated><EvaluationResults><member>\
         <EvalActionName>{action}</EvalActionName><EvalResourceName>{resource}</EvalResourceName>\
         <EvalDecision>{decision}</EvalDecision><MatchedStatements/><MissingContextValues/>\
         </member></EvaluationResults></SimulatePrincipalPolicyResult>\
         <ResponseMetadata><RequestId>4f6c5a9e-0000-4000-8000-000000000001</RequestId></ResponseMetadata>\
         </SimulatePrincipalPolicyResponse>"
    );
    http("200 OK", &xml)
}

#[test]
fn denied_iam_reads_skip_the_role_and_client_checks_naming_the_permission() {
    let mut account = Account::well_configured("denyiam");
    let denying = DenyingIam::deny_all();
    account
        .env
        .extra_env
        .push(("AWS_ENDPOINT_URL_IAM".into(), denying.endpoint()));
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(
        &report,
        &[
            ("role-trust", "skip"),
            ("role-policy", "skip"),
            ("client-policy", "skip"),
        ],
    );
    for id in ["role-trust", "role-policy", "client-policy"] {
        assert_eq!(
            check(&report, id)["detail"],
            "not allowed to call iam:GetRole (AccessDenied); grant it to run this check",
            "{id}"
        );
    }
}

#[test]
fn denied_user_policy_reads_name_the_user_permission() {
    let account = Account::empty("denyuser", "advanced");
    account.env.fake.set_identity(Identity {
        account: ACCOUNT.into(),
        arn: format!("arn:aws:iam::{ACCOUNT}:user/denyuser-alice"),
        user_id: "AIDAEXAMPLEALICE".into(),
    });
    let denying = DenyingIam::deny_all();
    let mut command = account.env.sm_ssh(["doctor", "--json"]);
    command.env("AWS_ENDPOINT_URL_IAM", denying.endpoint());
    let output = command.stdin(std::process::Stdio::null()).output().unwrap();
    let (stdout, _) = assert_exit(&output, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        check(&report, "client-policy")["detail"],
        "not allowed to call iam:ListUserPolicies (AccessDenied); grant it to run this check"
    );
    // Without a target the role checks say how to give one.
    assert!(text_of(&check(&report, "role-trust")["detail"]).starts_with("give --role ARN"));
}

#[test]
fn json_output_has_the_documented_shape() {
    let account = Account::well_configured("jsonshape");
    let world = account.env.fake.world();
    world.lock().unwrap().activation_tier = "standard".into();
    let report = account.doctor_json(
        &[
            "--role",
            &account.exec_role_arn(),
            "--also-region",
            "us-west-2",
        ],
        1,
    );
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys.iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        ["account", "checks", "exit_code", "region", "schema"].into()
    );
    assert_eq!(report["schema"], 1);
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "identity",
            "region",
            "ssm-tier",
            "ssm-tier",
            "role-trust",
            "role-policy",
            "client-policy",
            "network",
            "managed-instances",
            "attribution",
            "ssh-client",
            "ssh-config",
            "ssh-keys"
        ]
    );
    for check in report["checks"].as_array().unwrap() {
        let status = text_of(&check["status"]);
        assert!(
            ["pass", "warn", "fail", "skip"].contains(&status),
            "{check}"
        );
        assert!(check["detail"].is_string(), "{check}");
        // `fix` is always present: a string for fail and warn, else null.
        let fix = check.get("fix").expect("fix is always present");
        assert_eq!(
            fix.is_string(),
            matches!(status, "fail" | "warn"),
            "{check}"
        );
        let per_region = matches!(text_of(&check["id"]), "ssm-tier" | "managed-instances");
        assert_eq!(check.get("region").is_some(), per_region, "{check}");
    }
    // Both regions' tiers, each naming its region; the fake serves one tier
    // for every region it is asked about.
    let tiers: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "ssm-tier")
        .collect();
    assert_eq!(tiers[0]["region"], REGION);
    assert_eq!(tiers[1]["region"], "us-west-2");
    assert!(text_of(&tiers[1]["fix"]).contains("--region us-west-2"));
}

#[test]
fn fix_yes_turns_on_the_advanced_tier() {
    let account = Account::well_configured("fixtier");
    let world = account.env.fake.world();
    world.lock().unwrap().activation_tier = "standard".into();
    let role = account.exec_role_arn();

    // Without --yes and without a terminal nothing changes.
    let report = account.doctor_json(&["--role", &role, "--fix"], 1);
    assert_statuses(&report, &[("ssm-tier", "fail")]);
    assert!(
        text_of(&check(&report, "ssm-tier")["detail"]).ends_with("not changed (no confirmation)")
    );
    assert_eq!(world.lock().unwrap().activation_tier, "standard");

    let output = account.doctor(&["--role", &role, "--fix", "--yes"]);
    let (stdout, stderr) = assert_exit(&output, 0);
    assert!(
        stdout.contains("PASS  ssm-tier (eu-west-1): advanced-instances tier turned on by --fix"),
        "{stdout}"
    );
    // The cost is shown before anything changes.
    assert!(stderr.contains("USD 0.00695 per instance-hour"), "{stderr}");
    assert_eq!(world.lock().unwrap().activation_tier, "advanced");
    let calls: Vec<String> = account
        .env
        .fake
        .events()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a == "ssm:UpdateServiceSetting")
        .collect();
    assert_eq!(calls.len(), 1);
}

#[test]
fn no_credentials_exit_2() {
    let account = Account::empty("nocredentials", "advanced");
    let mut command = account.env.sm_ssh(["doctor"]);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let output = command.stdin(std::process::Stdio::null()).output().unwrap();
    let (stdout, _) = assert_exit(&output, 2);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("FAIL  identity: no usable AWS credentials"),
        "{stdout}"
    );
    assert!(stdout.contains("aws sso login"), "{stdout}");
    assert!(
        stdout.ends_with("no usable AWS credentials, the AWS checks could not run.\n"),
        "{stdout}"
    );
    // No AWS check ran: only identity, region and the local checks.
    let ids: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            ["PASS", "WARN", "FAIL", "SKIP"]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|id| id.trim_end_matches(':'))
        .collect();
    assert_eq!(
        ids,
        ["identity", "region", "ssh-client", "ssh-config", "ssh-keys"]
    );
}

#[test]
fn refused_credentials_exit_2_without_showing_the_secret() {
    let account = Account::empty("refusedcredentials", "advanced");
    account.env.fake.deny_action("sts:GetCallerIdentity", true);
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
    let mut command = account.env.sm_ssh(["doctor", "--json"]);
    command.env("AWS_SECRET_ACCESS_KEY", secret);
    let output = command.stdin(std::process::Stdio::null()).output().unwrap();
    let (stdout, stderr) = assert_exit(&output, 2);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["account"], Value::Null);
    let identity = check(&report, "identity");
    assert_eq!(identity["status"], "fail");
    assert!(
        text_of(&identity["detail"]).starts_with("STS GetCallerIdentity refused the credentials"),
        "{identity}"
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret));

    // An STS nobody answers is the same: exit 2, not a crash.
    let (_closed, closed_port) = common::refusing_port();
    let mut command = account.env.sm_ssh(["doctor"]);
    command.env(
        "AWS_ENDPOINT_URL_STS",
        format!("http://127.0.0.1:{closed_port}"),
    );
    let output = command.stdin(std::process::Stdio::null()).output().unwrap();
    let (stdout, _) = assert_exit(&output, 2);
    assert!(
        stdout.starts_with("FAIL  identity: STS GetCallerIdentity"),
        "{stdout}"
    );
}

#[test]
fn a_training_job_names_the_role_and_network_isolation_fails() {
    let account = Account::well_configured("trainingjob");
    let create = |name: &str, isolated: bool| {
        account
            .block_on(
                account
                    .sagemaker
                    .create_training_job()
                    .training_job_name(name)
                    .role_arn(account.exec_role_arn())
                    .algorithm_specification(
                        aws_sdk_sagemaker::types::AlgorithmSpecification::builder()
                            .training_image("123456789012.dkr.ecr.eu-west-1.amazonaws.com/train:1")
                            .training_input_mode(aws_sdk_sagemaker::types::TrainingInputMode::File)
                            .build(),
                    )
                    .output_data_config(
                        aws_sdk_sagemaker::types::OutputDataConfig::builder()
                            .s3_output_path("s3://bucket/output")
                            .build(),
                    )
                    .resource_config(
                        aws_sdk_sagemaker::types::ResourceConfig::builder()
                            .instance_type(
                                aws_sdk_sagemaker::types::TrainingInstanceType::MlM5Large,
                            )
                            .instance_count(1)
                            .volume_size_in_gb(10)
                            .build(),
                    )
                    .stopping_condition(
                        aws_sdk_sagemaker::types::StoppingCondition::builder()
                            .max_runtime_in_seconds(3600)
                            .build(),
                    )
                    .enable_network_isolation(isolated)
                    .send(),
            )
            .expect("CreateTrainingJob on moto");
    };
    create("trainingjob-open", false);
    create("trainingjob-isolated", true);

    let report = account.doctor_json(&["--job", "trainingjob-open"], 0);
    assert_job_statuses(&report, "warn", &[("network", "pass")]);
    let trust = text_of(&check(&report, "role-trust")["detail"]);
    assert!(
        trust.contains(&format!(
            "{} (from training job trainingjob-open)",
            account.exec_role_arn()
        )),
        "{trust}"
    );

    let report = account.doctor_json(&["--job", "trainingjob-isolated"], 1);
    assert_job_statuses(&report, "warn", &[("network", "fail")]);
    let network = check(&report, "network");
    assert!(
        text_of(&network["detail"]).contains("network isolation"),
        "{network}"
    );
    assert!(text_of(&network["fix"]).contains("EnableNetworkIsolation=false"));
}

#[test]
fn a_notebook_without_direct_internet_warns_naming_the_vpc_endpoints() {
    let account = Account::well_configured("notebook");
    account
        .block_on(
            account
                .sagemaker
                .create_notebook_instance()
                .notebook_instance_name("notebook-private")
                .instance_type(aws_sdk_sagemaker::types::InstanceType::MlT3Medium)
                .role_arn(account.exec_role_arn())
                .subnet_id("subnet-0abc")
                .security_group_ids("sg-0def")
                .direct_internet_access(aws_sdk_sagemaker::types::DirectInternetAccess::Disabled)
                .send(),
        )
        .expect("CreateNotebookInstance on moto");
    let report = account.doctor_json(&["--notebook", "notebook-private"], 0);
    assert_statuses(&report, &[("network", "warn")]);
    let network = check(&report, "network");
    assert!(
        text_of(&network["detail"]).contains("subnet-0abc with direct internet access disabled"),
        "{network}"
    );
    let fix = text_of(&network["fix"]);
    for service in ["ssm", "ssmmessages", "ec2messages", "logs", "sts"] {
        assert!(
            fix.contains(&format!(
                "--service-name com.amazonaws.eu-west-1.{service} --subnet-ids subnet-0abc --security-group-ids sg-0def"
            )),
            "{service} endpoint missing from {fix}"
        );
    }
    assert!(text_of(&check(&report, "role-policy")["detail"])
        .contains("(from notebook instance notebook-private)"));
}

#[test]
fn a_missing_job_or_role_fails_with_how_to_find_or_create_it() {
    let account = Account::well_configured("missing");
    let report = account.doctor_json(&["--job", "missing-no-such-job"], 1);
    assert_job_statuses(
        &report,
        "skip",
        &[
            ("role-trust", "fail"),
            ("role-policy", "skip"),
            ("network", "skip"),
        ],
    );
    let trust = check(&report, "role-trust");
    assert!(
        text_of(&trust["detail"])
            .starts_with("training job missing-no-such-job does not exist in eu-west-1"),
        "{trust}"
    );
    assert_eq!(
        trust["fix"],
        "check the name and region (--region): aws sagemaker list-training-jobs --region eu-west-1 --name-contains missing-no-such-job"
    );

    let report = account.doctor_json(&["--notebook", "missing-no-such-notebook"], 1);
    assert!(text_of(&check(&report, "role-trust")["fix"])
        .ends_with("aws sagemaker list-notebook-instances --region eu-west-1 --name-contains missing-no-such-notebook"));

    let role = format!("arn:aws:iam::{ACCOUNT}:role/service-role/missing-NoSuchRole");
    let report = account.doctor_json(&["--role", &role], 1);
    assert_statuses(&report, &[("role-trust", "fail"), ("role-policy", "fail")]);
    assert_eq!(
        check(&report, "role-trust")["detail"],
        format!("{role} (from --role) does not exist")
    );
    assert_eq!(
        check(&report, "role-trust")["fix"],
        "aws iam create-role --role-name missing-NoSuchRole --path /service-role/ \
         --assume-role-policy-document \"$(sm-ssh policy trust)\""
    );
    assert_eq!(
        check(&report, "role-policy")["fix"],
        format!(
            "aws iam put-role-policy --role-name missing-NoSuchRole --policy-name SSHSageMakerServerPolicy \
             --policy-document \"$(sm-ssh policy server --role {role})\""
        )
    );
}

#[test]
fn sm_ssh_config_install_satisfies_the_local_checks() {
    let account = Account::well_configured("configinstall");
    let output = account.env.run(["config", "install"]);
    assert_exit(&output, 0);
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[("ssh-config", "pass")]);
    // sm-ssh's own key, in its data directory, is among the keys checked.
    assert_eq!(
        check(&report, "ssh-keys")["detail"],
        "1 private key files, none readable by others"
    );
}

#[cfg(unix)]
#[test]
fn a_private_key_readable_by_others_fails_with_the_chmod() {
    use std::os::unix::fs::PermissionsExt;
    let account = Account::well_configured("keymode");
    let ssh = account.env.home().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let key = ssh.join("id_rsa");
    std::fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 1);
    assert_statuses(&report, &[("ssh-keys", "fail")]);
    assert_eq!(
        check(&report, "ssh-keys")["fix"],
        format!("chmod 600 {}", key.display())
    );
}

#[test]
fn team_policies_pass_with_team_tags_and_fail_without_them() {
    let account = Account::empty("team", "advanced");
    let role = account.exec_role_arn();
    account.create_role(
        &account.exec_role_name(),
        "/service-role/",
        &account.policy(&["trust"]),
    );
    account.put_role_policy(
        &account.exec_role_name(),
        "SSHSageMakerServerPolicy",
        &account.policy(&["server", "--role", &role, "--team-tag", "team"]),
    );
    account.create_role(&account.caller_role_name(), "/", &caller_trust());
    account.put_role_policy(
        &account.caller_role_name(),
        "SSHSageMakerClientPolicy",
        &account.policy(&["client", "--account", ACCOUNT, "--team-tag", "team"]),
    );
    let tag = |role: String| {
        account
            .block_on(
                account
                    .iam
                    .tag_role()
                    .role_name(role)
                    .tags(
                        aws_sdk_iam::types::Tag::builder()
                            .key("team")
                            .value("red")
                            .build()
                            .unwrap(),
                    )
                    .send(),
            )
            .unwrap();
    };

    // Untagged, the team conditions grant nothing.
    let report = account.doctor_json(&["--role", &role, "--team-tag", "team"], 1);
    assert_statuses(
        &report,
        &[("role-policy", "fail"), ("client-policy", "fail")],
    );
    assert!(
        text_of(&check(&report, "role-policy")["fix"]).ends_with(&format!(
            "\"$(sm-ssh policy server --role {role} --team-tag team)\""
        ))
    );

    tag(account.exec_role_name());
    tag(account.caller_role_name());
    let report = account.doctor_json(&["--role", &role, "--team-tag", "team"], 0);
    assert_statuses(&report, &[]);

    // Judged by per-user ownership, the team client policy misses it.
    let report = account.doctor_json(&["--role", &role], 1);
    let client = check(&report, "client-policy");
    assert_eq!(client["status"], "fail", "{client}");
    assert!(text_of(&client["detail"])
        .contains("ssm:StartSession on arn:aws:ssm:eu-west-1:123456789012:managed-instance/"));
}

#[test]
fn offline_registrations_warn_with_the_deregister_commands() {
    let account = Account::well_configured("offline");
    account.env.add_instance(training_instance(
        "mi-0aaaaaaaaaaaaaaa1",
        "offline-live",
        1_700_000_000,
    ));
    let mut lost = training_instance("mi-0aaaaaaaaaaaaaaa2", "offline-old", 1_690_000_000);
    lost.ping_status = sm_ssh_integration::world::PingStatus::ConnectionLost;
    account.env.add_instance(lost);
    // Someone else's instance is not ours to clean up.
    let mut others = sagemaker_instance(
        "mi-0aaaaaaaaaaaaaaa3",
        "AROAEXAMPLEOTHER:bob",
        "bobs-job",
        "training-job/bobs-job",
        1_690_000_000,
    );
    others.ping_status = sm_ssh_integration::world::PingStatus::ConnectionLost;
    account.env.add_instance(others);

    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[("managed-instances", "warn")]);
    let instances = check(&report, "managed-instances");
    assert!(
        text_of(&instances["detail"]).starts_with(&format!(
            "2 of your managed instances (SSHOwner={USER_ID}): 1 online, 1 offline"
        )),
        "{instances}"
    );
    assert_eq!(
        instances["fix"],
        "aws ssm deregister-managed-instance --region eu-west-1 --instance-id mi-0aaaaaaaaaaaaaaa2"
    );
}

#[test]
fn repeated_region_checks_the_tier_and_instances_in_each() {
    let account = Account::well_configured("tworegions");
    let world = account.env.fake.world();
    world.lock().unwrap().activation_tier = "standard".into();
    let report = account.doctor_json(
        &[
            "--role",
            &account.exec_role_arn(),
            "--region",
            "us-east-1",
            "--region",
            "eu-west-1",
        ],
        1,
    );
    // IAM and SageMaker are looked at in the first region only.
    assert_eq!(report["region"], "us-east-1");
    assert!(
        text_of(&check(&report, "region")["detail"]).starts_with("us-east-1 (from --region)"),
        "{report:#}"
    );
    let in_regions = |id: &str| -> Vec<(String, String)> {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == id)
            .map(|c| {
                (
                    text_of(&c["region"]).to_owned(),
                    text_of(&c["status"]).to_owned(),
                )
            })
            .collect()
    };
    let pair = |region: &str, status: &str| (region.to_owned(), status.to_owned());
    assert_eq!(
        in_regions("ssm-tier"),
        [pair("us-east-1", "fail"), pair("eu-west-1", "fail")]
    );
    assert_eq!(
        in_regions("managed-instances"),
        [pair("us-east-1", "pass"), pair("eu-west-1", "pass")]
    );
    let fixes: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == "ssm-tier")
        .map(|c| text_of(&c["fix"]))
        .collect();
    assert!(
        fixes[0].starts_with("sm-ssh doctor --fix --region us-east-1\n"),
        "{fixes:?}"
    );
    assert!(
        fixes[1].starts_with("sm-ssh doctor --fix --region eu-west-1\n"),
        "{fixes:?}"
    );
}

#[test]
fn several_regions_outside_doctor_are_a_usage_error() {
    let env = Env::start(Seed::default());
    let output = env.run(["list", "--region", "a", "--region", "b"]);
    let (stdout, stderr) = assert_exit(&output, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "--region was given 2 times (a, b); only `sm-ssh doctor` checks several regions"
        ),
        "{stderr}"
    );
}

/// An IAM endpoint passing every call to moto except SimulatePrincipalPolicy,
/// which `decide(action, form body)` answers; the PolicySourceArn of each
/// simulation goes to `sources`.
fn simulating_iam(
    moto: &str,
    sources: Arc<Mutex<Vec<String>>>,
    decide: impl Fn(&str, &str) -> &'static str + Send + 'static,
) -> IamStub {
    let moto = moto.to_owned();
    IamStub::start(move |head, body| {
        if query_value(body, "Action").as_deref() != Some("SimulatePrincipalPolicy") {
            return forward(&moto, head, body);
        }
        let source = query_value(body, "PolicySourceArn").unwrap_or_default();
        sources.lock().unwrap().push(source);
        simulated(body, &decide)
    })
}

/// What IAM's simulator says of the well-configured account: the requests
/// doctor expects to be refused (another user's instance, passing the role
/// to EC2) are, everything else is allowed.
fn truthful(_action: &str, body: &str) -> &'static str {
    let others = body.contains("AROAEXAMPLEOTHERUSER") || body.contains("ec2.amazonaws.com");
    if others {
        "implicitDeny"
    } else {
        "allowed"
    }
}

#[test]
fn policy_checks_agreeing_with_the_simulator_say_so() {
    let mut account = Account::well_configured("simagree");
    let sources = Arc::new(Mutex::new(Vec::new()));
    let iam = simulating_iam(&account._moto.endpoint(), sources.clone(), truthful);
    account
        .env
        .extra_env
        .push(("AWS_ENDPOINT_URL_IAM".into(), iam.endpoint()));
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[]);
    for id in ["role-policy", "client-policy"] {
        let detail = text_of(&check(&report, id)["detail"]);
        assert!(
            detail.ends_with(
                "has every permission SSH needs (identity policies evaluated locally, \
                 confirmed by SimulatePrincipalPolicy)"
            ),
            "{id}: {detail}"
        );
    }
    // The simulator is asked about the roles, not the caller's session.
    let sources: std::collections::BTreeSet<String> =
        sources.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        sources,
        [
            account.exec_role_arn(),
            format!("arn:aws:iam::{ACCOUNT}:role/{}", account.caller_role_name()),
        ]
        .into()
    );
}

#[test]
fn a_simulator_denying_what_the_documents_allow_warns_with_both_verdicts() {
    let mut account = Account::well_configured("simdeny");
    let sources = Arc::new(Mutex::new(Vec::new()));
    // As an SCP denying Session Manager would.
    let iam = simulating_iam(&account._moto.endpoint(), sources, |action, body| {
        if action == "ssm:StartSession" {
            "explicitDeny"
        } else {
            truthful(action, body)
        }
    });
    account
        .env
        .extra_env
        .push(("AWS_ENDPOINT_URL_IAM".into(), iam.endpoint()));
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[("client-policy", "warn")]);
    let client = check(&report, "client-policy");
    let detail = text_of(&client["detail"]);
    assert!(
        detail.contains(&format!(
            "ssm:StartSession on arn:aws:ssm:{REGION}:{ACCOUNT}:managed-instance/mi-0123456789abcdef0: \
             local evaluation allowed, SimulatePrincipalPolicy explicitDeny"
        )),
        "{detail}"
    );
    assert!(
        detail.contains(&format!(
            "ssm:StartSession on arn:aws:ssm:{REGION}::document/AWS-StartSSHSession: \
             local evaluation allowed, SimulatePrincipalPolicy explicitDeny"
        )),
        "{detail}"
    );
    // Both refuse another user's instance: no disagreement there.
    assert!(!detail.contains("AROAEXAMPLEOTHERUSER"), "{detail}");
    assert!(!detail.contains("ssm:SendCommand"), "{detail}");
    assert_eq!(
        client["fix"],
        format!(
            "find the service control policy or permission boundary that decides:\n\
             aws iam simulate-principal-policy --policy-source-arn arn:aws:iam::{ACCOUNT}:role/{} \
             --action-names ssm:StartSession",
            account.caller_role_name()
        )
    );
}

#[test]
fn a_simulation_that_cannot_run_keeps_the_local_verdict_and_names_the_permission() {
    // moto does not implement SimulatePrincipalPolicy (HTTP 500).
    let account = Account::well_configured("simmissing");
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[]);
    let detail = text_of(&check(&report, "role-policy")["detail"]);
    assert!(
        detail.ends_with(
            "(identity policies evaluated locally; SimulatePrincipalPolicy skipped: IAM answered \
             HTTP 500; it needs iam:SimulatePrincipalPolicy, without which SCPs and permission \
             boundaries are not seen)"
        ),
        "{detail}"
    );

    // Denied: the same, naming the refusal.
    let mut account = Account::well_configured("simdenied");
    let moto = account._moto.endpoint();
    let iam = IamStub::start(
        move |head, body| match query_value(body, "Action").as_deref() {
            Some("SimulatePrincipalPolicy") => denied("SimulatePrincipalPolicy"),
            _ => forward(&moto, head, body),
        },
    );
    account
        .env
        .extra_env
        .push(("AWS_ENDPOINT_URL_IAM".into(), iam.endpoint()));
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[]);
    let detail = text_of(&check(&report, "client-policy")["detail"]);
    assert!(
        detail.contains(
            "SimulatePrincipalPolicy skipped: not allowed to call iam:SimulatePrincipalPolicy \
             (AccessDenied); it needs iam:SimulatePrincipalPolicy"
        ),
        "{detail}"
    );
}

/// One Studio domain as SageMaker's DescribeDomain describes it.
struct Domain {
    id: &'static str,
    default_role: Option<String>,
    network: &'static str,
    subnets: &'static [&'static str],
    security_groups: &'static [&'static str],
}

/// One Studio user profile: its own execution role and security groups.
struct Profile {
    name: &'static str,
    role: Option<String>,
    security_groups: &'static [&'static str],
}

/// A profile with its own execution role, nothing else of its own.
fn profile(name: &'static str, role: Option<String>) -> Profile {
    Profile {
        name,
        role,
        security_groups: &[],
    }
}

/// A SageMaker endpoint (AWS JSON 1.1, the target in `X-Amz-Target`)
/// answering DescribeDomain for `domain` and DescribeUserProfile for each
/// [`Profile`] of `profiles`, and ResourceNotFound, as
/// SageMaker does, for any other profile or domain. moto answers both calls
/// with HTTP 500, hence this stub.
fn studio(domain: Domain, profiles: Vec<Profile>) -> IamStub {
    IamStub::start(move |head, body| {
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let target = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("x-amz-target")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default();
        let domain_id = text_of(&request["DomainId"]);
        let arn =
            |kind: &str, rest: &str| format!("arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{rest}");
        match target.as_str() {
            "SageMaker.DescribeDomain" if domain_id == domain.id => {
                let mut settings = serde_json::json!({"SecurityGroups": domain.security_groups});
                if let Some(role) = &domain.default_role {
                    settings["ExecutionRole"] = role.as_str().into();
                }
                json_answer(serde_json::json!({
                    "DomainId": domain.id,
                    "DomainArn": arn("domain", domain.id),
                    "DomainName": "studio",
                    "Status": "InService",
                    "AuthMode": "IAM",
                    "AppNetworkAccessType": domain.network,
                    "SubnetIds": domain.subnets,
                    "VpcId": "vpc-0studio",
                    "DefaultUserSettings": settings,
                }))
            }
            "SageMaker.DescribeUserProfile" if domain_id == domain.id => {
                let name = text_of(&request["UserProfileName"]);
                match profiles.iter().find(|profile| profile.name == name) {
                    Some(profile) => {
                        let mut settings = serde_json::json!({});
                        if !profile.security_groups.is_empty() {
                            settings["SecurityGroups"] = profile.security_groups.into();
                        }
                        if let Some(role) = &profile.role {
                            settings["ExecutionRole"] = role.as_str().into();
                        }
                        json_answer(serde_json::json!({
                            "DomainId": domain.id,
                            "UserProfileArn": arn("user-profile", &format!("{}/{name}", domain.id)),
                            "UserProfileName": name,
                            "Status": "InService",
                            "UserSettings": settings,
                        }))
                    }
                    None => not_found(&format!(
                        "User profile {} does not exist.",
                        arn("user-profile", &format!("{domain_id}/{name}"))
                    )),
                }
            }
            // An account with no notebooks or jobs, for the attribution check.
            "SageMaker.ListNotebookInstances" => {
                json_answer(serde_json::json!({"NotebookInstances": []}))
            }
            "SageMaker.ListTrainingJobs" => {
                json_answer(serde_json::json!({"TrainingJobSummaries": []}))
            }
            "SageMaker.DescribeDomain" | "SageMaker.DescribeUserProfile" => not_found(&format!(
                "Domain {} does not exist.",
                arn("domain", domain_id)
            )),
            other => json_error(
                "400 Bad Request",
                "UnknownOperationException",
                &format!("the stub does not answer {other:?}"),
            ),
        }
    })
}

/// A successful AWS JSON 1.1 answer.
fn json_answer(body: Value) -> Vec<u8> {
    json_http("200 OK", &body.to_string())
}

/// SageMaker's ResourceNotFound: HTTP 400, the error's name in `__type`.
fn not_found(message: &str) -> Vec<u8> {
    json_error("400 Bad Request", "ResourceNotFound", message)
}

fn json_error(status: &str, kind: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"__type": kind, "Message": message});
    json_http(status, &body.to_string())
}

fn json_http(status: &str, json: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         x-amzn-RequestId: 4f6c5a9e-0000-4000-8000-000000000002\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
}

/// A well-configured account whose SageMaker is `studio(domain, profiles)`.
fn studio_account(
    prefix: &str,
    domain: impl FnOnce(&Account) -> Domain,
    profiles: impl FnOnce(&Account) -> Vec<Profile>,
) -> (Account, IamStub) {
    let mut account = Account::well_configured(prefix);
    let stub = studio(domain(&account), profiles(&account));
    account
        .env
        .extra_env
        .push(("AWS_ENDPOINT_URL_SAGEMAKER".into(), stub.endpoint()));
    (account, stub)
}

#[test]
fn a_studio_user_profile_names_its_execution_role() {
    let (account, _sagemaker) = studio_account(
        "studioprofile",
        |_| Domain {
            id: "d-abc",
            // Never used: alice has a role of her own.
            default_role: Some(format!(
                "arn:aws:iam::{ACCOUNT}:role/studioprofile-NoSuchDefault"
            )),
            network: "PublicInternetOnly",
            subnets: &["subnet-0pub"],
            security_groups: &[],
        },
        |account| vec![profile("alice", Some(account.exec_role_arn()))],
    );
    let args = ["--domain", "d-abc", "--user-profile", "alice"];
    let report = account.doctor_json(&args, 0);
    assert_statuses(&report, &[("network", "pass")]);
    let from = format!(
        "{} (from Studio user profile alice in domain d-abc)",
        account.exec_role_arn()
    );
    for id in ["role-trust", "role-policy"] {
        let detail = text_of(&check(&report, id)["detail"]);
        assert!(detail.starts_with(&from), "{id}: {detail}");
    }
    assert_eq!(
        check(&report, "network")["detail"],
        "Studio user profile alice in domain d-abc: the domain uses public internet access"
    );

    let output = account.doctor(&args);
    let (stdout, _) = assert_exit(&output, 0);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("PASS  role-trust: {from}"))),
        "{stdout}"
    );
}

#[test]
fn a_studio_profile_without_a_role_uses_the_domains_default() {
    let (account, _sagemaker) = studio_account(
        "studiodefault",
        |account| Domain {
            id: "d-abc",
            default_role: Some(account.exec_role_arn()),
            network: "PublicInternetOnly",
            subnets: &[],
            security_groups: &[],
        },
        |_| vec![profile("alice", None)],
    );
    let report = account.doctor_json(&["--domain", "d-abc", "--user-profile", "alice"], 0);
    assert_statuses(&report, &[("network", "pass")]);
    let from = format!(
        "{} (from domain d-abc's default user settings, as Studio user profile alice \
         has no execution role of its own)",
        account.exec_role_arn()
    );
    for id in ["role-trust", "role-policy"] {
        let detail = text_of(&check(&report, id)["detail"]);
        assert!(detail.starts_with(&from), "{id}: {detail}");
    }
}

/// The VPC the Studio stub's domains are in.
const STUDIO_VPC: &str = "vpc-0studio";

/// The endpoint services the SSM agent in a VpcOnly domain's apps needs.
const AGENT_SERVICES: [&str; 5] = ["ssm", "ssmmessages", "ec2messages", "logs", "sts"];

/// A well-configured account with VpcOnly domain d-abc (subnets subnet-0aaa
/// and subnet-0bbb, default security group sg-0studio), profiles alice (the
/// domain's security groups) and carol (sg-0carol), and `endpoints` in the
/// domain's VPC on the fake's EC2.
fn vpc_only_studio(
    prefix: &str,
    endpoints: Vec<sm_ssh_integration::ec2::VpcEndpoint>,
) -> (Account, IamStub) {
    let (account, sagemaker) = studio_account(
        prefix,
        |_| Domain {
            id: "d-abc",
            default_role: None,
            network: "VpcOnly",
            subnets: &["subnet-0aaa", "subnet-0bbb"],
            security_groups: &["sg-0studio"],
        },
        |account| {
            vec![
                profile("alice", Some(account.exec_role_arn())),
                Profile {
                    name: "carol",
                    role: Some(account.exec_role_arn()),
                    security_groups: &["sg-0carol"],
                },
            ]
        },
    );
    account.env.fake.world().lock().unwrap().ec2 = sm_ssh_integration::ec2::Seed {
        vpc_endpoints: endpoints,
        page_size: None,
    };
    (account, sagemaker)
}

fn endpoint_name(service: &str) -> String {
    format!("com.amazonaws.{REGION}.{service}")
}

/// The `create-vpc-endpoint` command doctor prints for `service` in d-abc's VPC.
fn create_endpoint(service: &str, security_group: &str) -> String {
    format!(
        "aws ec2 create-vpc-endpoint --region {REGION} --vpc-endpoint-type Interface \
         --vpc-id {STUDIO_VPC} --service-name {} --subnet-ids subnet-0aaa subnet-0bbb \
         --security-group-ids {security_group} --private-dns-enabled",
        endpoint_name(service)
    )
}

#[test]
fn a_vpc_only_studio_domain_passes_with_its_vpc_endpoints_and_warns_when_ec2_is_denied() {
    let endpoints =
        sm_ssh_integration::ec2::interface_endpoints(REGION, STUDIO_VPC, &AGENT_SERVICES);
    let (account, _sagemaker) = vpc_only_studio("studiovpc", endpoints);
    let args = ["--domain", "d-abc", "--user-profile", "alice"];
    let report = account.doctor_json(&args, 0);
    assert_statuses(&report, &[("network", "pass")]);
    let detail = text_of(&check(&report, "network")["detail"]).to_owned();
    assert!(
        detail.starts_with(&format!("domain d-abc is VpcOnly; VPC {STUDIO_VPC} has available endpoints with private DNS for ")),
        "{detail}"
    );
    for service in AGENT_SERVICES {
        assert!(detail.contains(&endpoint_name(service)), "{detail}");
    }

    // Unread, the endpoints are still named, with the commands making them.
    account
        .env
        .fake
        .deny_action("ec2:DescribeVpcEndpoints", true);
    let report = account.doctor_json(&args, 0);
    assert_statuses(&report, &[("network", "warn")]);
    let network = check(&report, "network");
    let detail = text_of(&network["detail"]);
    assert!(
        detail.starts_with(&format!("domain d-abc is VpcOnly (VPC {STUDIO_VPC}): the SSM agent in user profile alice's apps needs interface endpoints for ")),
        "{detail}"
    );
    assert!(
        detail
            .ends_with("doctor could not read them: not allowed to call ec2:DescribeVpcEndpoints"),
        "{detail}"
    );
    let fix = text_of(&network["fix"]);
    assert!(fix.starts_with("grant ec2:DescribeVpcEndpoints"), "{fix}");
    for service in AGENT_SERVICES {
        let create = create_endpoint(service, "sg-0studio");
        assert!(fix.lines().any(|l| l == create), "{create} in {fix}");
    }

    // A profile's own security groups replace the domain's defaults.
    let report = account.doctor_json(&["--domain", "d-abc", "--user-profile", "carol"], 0);
    let fix = text_of(&check(&report, "network")["fix"]);
    let create = create_endpoint("ssm", "sg-0carol");
    assert!(fix.lines().any(|l| l == create), "{create} in {fix}");
}

#[test]
fn a_vpc_only_studio_domain_fails_naming_each_endpoint_it_lacks_with_its_fix() {
    let mut endpoints = sm_ssh_integration::ec2::interface_endpoints(
        REGION,
        STUDIO_VPC,
        &["ssm", "ssmmessages", "ec2messages"],
    );
    endpoints[1].private_dns_enabled = false;
    endpoints[2].state = "pending".into();
    let (dns_off, pending) = (endpoints[1].id.clone(), endpoints[2].id.clone());
    // Another VPC's endpoint does not count.
    endpoints.push(sm_ssh_integration::ec2::VpcEndpoint {
        id: "vpce-0ffffffffffffffff".into(),
        vpc_id: "vpc-0other".into(),
        service_name: endpoint_name("logs"),
        ..Default::default()
    });
    let (account, _sagemaker) = vpc_only_studio("studiovpcfail", endpoints);
    let report = account.doctor_json(&["--domain", "d-abc", "--user-profile", "alice"], 1);
    assert_statuses(&report, &[("network", "fail")]);
    let network = check(&report, "network");
    let detail = text_of(&network["detail"]);
    assert_eq!(
        detail,
        format!(
            "domain d-abc is VpcOnly and VPC {STUDIO_VPC} lacks what the SSM agent in user profile \
             alice's apps needs to reach AWS: {}: endpoint {dns_off} has private DNS off; \
             {}: endpoint {pending} is pending; {}: no endpoint; {}: no endpoint \
             (unless its subnets reach the internet through a NAT gateway)",
            endpoint_name("ssmmessages"),
            endpoint_name("ec2messages"),
            endpoint_name("logs"),
            endpoint_name("sts"),
        )
    );
    let fix = text_of(&network["fix"]);
    let mut want: Vec<String> = vec![format!(
        "aws ec2 modify-vpc-endpoint --region {REGION} --vpc-endpoint-id {dns_off} --private-dns-enabled"
    )];
    want.extend(
        ["ec2messages", "logs", "sts"]
            .iter()
            .map(|service| create_endpoint(service, "sg-0studio")),
    );
    want.push(
        "(the endpoints' security groups must let the domain's security groups in on HTTPS)".into(),
    );
    assert_eq!(fix.lines().collect::<Vec<_>>(), want, "{fix}");
    assert_eq!(
        account
            .env
            .fake
            .events()
            .iter()
            .filter(|e| e.action == "ec2:DescribeVpcEndpoints")
            .count(),
        1
    );
}

#[test]
fn an_unknown_studio_profile_fails_with_the_command_that_lists_profiles() {
    let (account, _sagemaker) = studio_account(
        "studiomissing",
        |account| Domain {
            id: "d-abc",
            default_role: Some(account.exec_role_arn()),
            network: "PublicInternetOnly",
            subnets: &[],
            security_groups: &[],
        },
        |account| vec![profile("alice", Some(account.exec_role_arn()))],
    );
    let report = account.doctor_json(&["--domain", "d-abc", "--user-profile", "bob"], 1);
    assert_statuses(
        &report,
        &[
            ("role-trust", "fail"),
            ("role-policy", "skip"),
            ("network", "skip"),
        ],
    );
    let trust = check(&report, "role-trust");
    assert_eq!(
        trust["detail"],
        format!(
            "Studio user profile bob in domain d-abc does not exist in eu-west-1 \
             (User profile arn:aws:sagemaker:eu-west-1:{ACCOUNT}:user-profile/d-abc/bob does not exist.), \
             so its execution role is unknown"
        )
    );
    assert_eq!(
        trust["fix"],
        "check the name and region (--region): \
         aws sagemaker list-user-profiles --region eu-west-1 --domain-id-equals d-abc"
    );
    // A wrong domain is found the same way.
    let report = account.doctor_json(&["--domain", "d-nosuch", "--user-profile", "alice"], 1);
    assert_eq!(
        check(&report, "role-trust")["fix"],
        "check the name and region (--region): \
         aws sagemaker list-user-profiles --region eu-west-1 --domain-id-equals d-nosuch"
    );
}

/// A notebook instance on moto running as `role`, with a lifecycle configuration if given.
fn create_notebook(account: &Account, name: &str, role: &str, lifecycle: Option<&str>) {
    account
        .block_on(
            account
                .sagemaker
                .create_notebook_instance()
                .notebook_instance_name(name)
                .instance_type(aws_sdk_sagemaker::types::InstanceType::MlT3Medium)
                .role_arn(role)
                .set_lifecycle_config_name(lifecycle.map(str::to_owned))
                .send(),
        )
        .expect("CreateNotebookInstance on moto");
}

fn delete_notebook(account: &Account, name: &str) {
    account.block_on(async {
        let sagemaker = &account.sagemaker;
        let stop = sagemaker
            .stop_notebook_instance()
            .notebook_instance_name(name);
        stop.send().await.expect("StopNotebookInstance on moto");
        let delete = sagemaker
            .delete_notebook_instance()
            .notebook_instance_name(name);
        delete.send().await.expect("DeleteNotebookInstance on moto");
    });
}

#[test]
fn notebooks_sharing_a_role_warn_until_it_assumes_itself_and_they_re_assume_it() {
    // Its own region: the other tests' notebooks (in REGION) stay out of it.
    let region = "ap-southeast-2";
    let account = Account::well_configured_in("attribution", region);
    let shared = account.exec_role_arn();
    let other_name = "attribution-Other";
    account.create_role(other_name, "/", &account.policy(&["trust"]));
    let other = format!("arn:aws:iam::{ACCOUNT}:role/{other_name}");

    // Distinct roles: CloudTrail tells them apart.
    create_notebook(&account, "attr-nb-a", &shared, None);
    create_notebook(&account, "attr-nb-b", &other, None);
    let report = account.doctor_json(&["--role", &shared], 0);
    let attribution = check(&report, "attribution");
    assert_eq!(attribution["status"], "pass", "{attribution}");
    assert!(
        text_of(&attribution["detail"]).contains(region),
        "{attribution}"
    );

    // A second notebook on the same role: WARN, with the fix filled in.
    create_notebook(&account, "attr-nb-c", &shared, None);
    let report = account.doctor_json(&["--role", &shared], 0);
    let attribution = check(&report, "attribution");
    assert_eq!(attribution["status"], "warn", "{attribution}");
    let detail = text_of(&attribution["detail"]);
    for part in [
        &format!("notebook instances attr-nb-a, attr-nb-c in {region} share"),
        &format!("assumed-role/{}/SageMaker", account.exec_role_name()),
        "do not allow sts:AssumeRole on itself",
        "does not trust the role itself",
        "notebook attr-nb-a has no lifecycle configuration",
    ] {
        assert!(detail.contains(part), "no {part:?} in {detail}");
    }
    let fix = text_of(&attribution["fix"]);
    let put = format!(
        "aws iam put-role-policy --role-name {} --policy-name SSHAttributionSelfAssume \
         --policy-document \"$(sm-ssh policy attribution --role {shared})\"",
        account.exec_role_name()
    );
    assert!(fix.contains(&put), "{fix}");
    assert!(
        fix.contains("--print trust") && fix.contains("--print lifecycle-script"),
        "{fix}"
    );
    let output = account.doctor(&["--role", &shared]);
    let (stdout, _) = assert_exit(&output, 0);
    assert!(
        stdout.contains("WARN  attribution: notebook instances attr-nb-a, attr-nb-c"),
        "{stdout}"
    );

    // Apply what it printed: the permission, the trust, the lifecycle script.
    account.put_role_policy(
        &account.exec_role_name(),
        "SSHAttributionSelfAssume",
        &account.policy(&["attribution", "--role", &shared]),
    );
    let trust = account.policy(&["attribution", "--role", &shared, "--print", "trust"]);
    account.update_exec_trust(&trust);
    let output = account.env.run([
        "policy",
        "attribution",
        "--role",
        &shared,
        "--print",
        "lifecycle-script",
    ]);
    let (script, _) = assert_exit(&output, 0);
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    let hook = aws_sdk_sagemaker::types::NotebookInstanceLifecycleHook::builder()
        .content(aws_smithy_types::base64::encode(&script))
        .build();
    account
        .block_on(
            account
                .sagemaker
                .create_notebook_instance_lifecycle_config()
                .notebook_instance_lifecycle_config_name("sm-ssh-attribution")
                .on_start(hook)
                .send(),
        )
        .expect("CreateNotebookInstanceLifecycleConfig on moto");
    // moto has no UpdateNotebookInstance: the notebooks are made again with it.
    for name in ["attr-nb-a", "attr-nb-c"] {
        delete_notebook(&account, name);
        create_notebook(&account, name, &shared, Some("sm-ssh-attribution"));
    }
    let report = account.doctor_json(&["--role", &shared], 0);
    let attribution = check(&report, "attribution");
    assert_eq!(attribution["status"], "pass", "{attribution}");
    assert!(
        text_of(&attribution["detail"]).contains("can assume itself"),
        "{attribution}"
    );
}

#[test]
fn attribution_skips_naming_the_permission_when_notebooks_cannot_be_listed() {
    let mut account = Account::well_configured("attribution-denied");
    let sagemaker = IamStub::start(|_, _| {
        json_error(
            "400 Bad Request",
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/attribution-denied-Developer/alice is \
             not authorized to perform: sagemaker:ListNotebookInstances",
        )
    });
    account
        .env
        .extra_env
        .push(("AWS_ENDPOINT_URL_SAGEMAKER".into(), sagemaker.endpoint()));
    let report = account.doctor_json(&["--role", &account.exec_role_arn()], 0);
    assert_statuses(&report, &[("attribution", "skip")]);
    let detail = text_of(&check(&report, "attribution")["detail"]);
    assert!(
        detail.contains("sagemaker:ListNotebookInstances"),
        "{detail}"
    );
}
