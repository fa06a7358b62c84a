//! The fake's control plane answers the real AWS SDK (aws-sdk-ssm,
//! aws-sdk-sts) and the AWS CLI: shapes, paging, errors, denials, and
//! SendCommand really running scripts in the instance sandbox.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{
    CommandInvocationStatus, InstanceInformationFilter, InstanceInformationFilterKey,
    InstanceInformationStringFilter, PingStatus as SdkPing, ResourceTypeForTagging, Tag,
};
use sm_ssh_integration::openssh::OpenSshServer;
use sm_ssh_integration::world::{Identity, Instance, PingStatus, Seed};
use sm_ssh_integration::FakeAws;

const MI: &str = "mi-0123456789abcdef0";
const OWNER: &str = "AROAEXAMPLEDEVELOPER:alice";

fn instance(id: &str, tags: &[(&str, &str)]) -> Instance {
    Instance {
        id: id.into(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Instance::default()
    }
}

async fn fake_with(instances: Vec<Instance>) -> FakeAws {
    FakeAws::start(Seed {
        region: "eu-west-1".into(),
        instances,
        activation_tier: "advanced".into(),
        ..Seed::default()
    })
    .await
    .unwrap()
}

fn credentials() -> aws_sdk_ssm::config::Credentials {
    aws_sdk_ssm::config::Credentials::new("testing", "testing", None, None, "test")
}

fn ssm(fake: &FakeAws) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(fake.region()))
        .credentials_provider(credentials())
        .endpoint_url(fake.endpoint())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

fn sts(fake: &FakeAws) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(fake.region()))
        .credentials_provider(credentials())
        .endpoint_url(fake.endpoint())
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

fn code(e: impl ProvideErrorMetadata) -> (String, String) {
    (
        e.code().unwrap_or("?").to_string(),
        e.message().unwrap_or("").to_string(),
    )
}

/// The error code SendCommand answers when asked to run `true` with
/// `document` on `instance`; panics if it accepts.
async fn refused_true(client: &aws_sdk_ssm::Client, instance: &str, document: &str) -> String {
    let e = client
        .send_command()
        .instance_ids(instance)
        .document_name(document)
        .parameters("commands", vec!["true".into()])
        .send()
        .await
        .unwrap_err();
    code(e).0
}

fn filter(key: &str, values: &[&str]) -> InstanceInformationStringFilter {
    let mut f = InstanceInformationStringFilter::builder().key(key);
    for v in values {
        f = f.values(*v);
    }
    f.build().unwrap()
}

#[tokio::test]
async fn describe_instance_information_filters_and_pages() {
    let mut instances: Vec<Instance> = (0..12)
        .map(|n| {
            let owner = if n % 2 == 0 { OWNER } else { "AIDAOTHER" };
            instance(
                &format!("mi-{n:017x}"),
                &[
                    ("SSHOwner", owner),
                    ("SSHResourceName", &format!("job-{n}")),
                ],
            )
        })
        .collect();
    instances[3].ping_status = PingStatus::ConnectionLost;
    instances[4].tags.clear();
    instances[5].resource_type = "EC2Instance".into();
    instances[6].ip_address = "10.0.0.6".into();
    instances[6].last_ping = 1_700_000_123.0;
    let fake = fake_with(instances).await;
    let client = ssm(&fake);

    // Paging: 12 instances, pages of 5.
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let out = client
            .describe_instance_information()
            .max_results(5)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        pages.push(out.instance_information_list().len());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, vec![5, 5, 2]);
    let all: Vec<_> = client
        .describe_instance_information()
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), 12);
    let six = all
        .iter()
        .find(|i| i.instance_id() == Some("mi-00000000000000006"))
        .unwrap();
    assert_eq!(six.ip_address(), Some("10.0.0.6"));
    assert_eq!(six.last_ping_date_time().unwrap().secs(), 1_700_000_123);
    assert_eq!(six.ping_status(), Some(&SdkPing::Online));
    assert_eq!(six.agent_version(), Some("3.3.1802.0"));

    let ids = |out: aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput| -> Vec<String> {
        out.instance_information_list()
            .iter()
            .map(|i| i.instance_id().unwrap().to_string())
            .collect()
    };
    // Values OR, filters AND.
    let out = client
        .describe_instance_information()
        .filters(filter("tag:SSHOwner", &[OWNER]))
        .filters(filter("PingStatus", &["Online"]))
        .filters(filter("ResourceType", &["ManagedInstance"]))
        .max_results(50)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ids(out),
        ["0", "2", "6", "8", "a"].map(|n| format!("mi-0000000000000000{n}"))
    );
    let out = client
        .describe_instance_information()
        .filters(filter(
            "InstanceIds",
            &["mi-00000000000000003", "mi-00000000000000004", "mi-nope"],
        ))
        .filters(filter("tag-key", &["SSHResourceName"]))
        .send()
        .await
        .unwrap();
    assert_eq!(ids(out), ["mi-00000000000000003"]);
    let out = client
        .describe_instance_information()
        .instance_information_filter_list(
            InstanceInformationFilter::builder()
                .key(InstanceInformationFilterKey::PingStatus)
                .value_set("ConnectionLost")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ids(out), ["mi-00000000000000003"]);

    let e = client
        .describe_instance_information()
        .max_results(51)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "ValidationException");
    let e = client
        .describe_instance_information()
        .next_token("garbage")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "InvalidNextToken");
    let e = client
        .describe_instance_information()
        .filters(filter("Color", &["red"]))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "InvalidFilterKey");
}

#[tokio::test]
async fn tags_on_managed_instances() {
    let fake = fake_with(vec![instance(MI, &[("SSHOwner", OWNER)])]).await;
    let client = ssm(&fake);
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().unwrap();
    client
        .add_tags_to_resource()
        .resource_type(ResourceTypeForTagging::ManagedInstance)
        .resource_id(MI)
        .tags(tag("SSHResourceName", "my-job"))
        .tags(tag("SSHOwner", "AIDANEW"))
        .send()
        .await
        .unwrap();
    client
        .remove_tags_from_resource()
        .resource_type(ResourceTypeForTagging::ManagedInstance)
        .resource_id(MI)
        .tag_keys("SSHResourceName")
        .send()
        .await
        .unwrap();
    let out = client
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::ManagedInstance)
        .resource_id(MI)
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = out
        .tag_list()
        .iter()
        .map(|t| (t.key(), t.value()))
        .collect();
    assert_eq!(tags, [("SSHOwner", "AIDANEW")]);
    let e = client
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::ManagedInstance)
        .resource_id("mi-ffffffffffffffff0")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "InvalidResourceId");
}

#[tokio::test]
async fn sessions_start_resume_terminate() {
    let native = "sagemaker-training-job:my-job_algo-1";
    let fake = fake_with(vec![instance(MI, &[]), instance(native, &[])]).await;
    let client = ssm(&fake);
    let out = client
        .start_session()
        .target(MI)
        .document_name("AWS-StartPortForwardingSession")
        .parameters("portNumber", vec!["8888".into()])
        .reason("Local user started SageMaker SSH Helper")
        .send()
        .await
        .unwrap();
    let sid = out.session_id().unwrap().to_string();
    let (prefix, hex) = sid.rsplit_once('-').unwrap();
    assert_eq!(prefix, "alice");
    assert!(
        hex.len() == 17 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{sid}"
    );
    assert_eq!(
        out.stream_url().unwrap(),
        format!(
            "ws://{}/v1/data-channel/{sid}?role=publish_subscribe",
            fake.addr()
        )
    );
    let token = out.token_value().unwrap().to_string();
    let world = fake.world();
    {
        let mut w = world.lock().unwrap();
        let s = &w.sessions[&sid];
        assert_eq!(
            s.properties.to_string(),
            r#"{"localPortNumber":"0","portNumber":"8888","type":"LocalPortForwarding"}"#
        );
        assert_eq!(s.document, "AWS-StartPortForwardingSession");
        let grant = w.redeem_token(&sid, &token).unwrap();
        assert_eq!(grant.target, MI);
        assert!(
            w.redeem_token(&sid, &token).is_err(),
            "tokens are single use"
        );
        let event = w
            .events
            .iter()
            .find(|e| e.action == "ssm:StartSession")
            .unwrap();
        assert_eq!(
            event.reason.as_deref(),
            Some("Local user started SageMaker SSH Helper")
        );
        assert_eq!(event.caller, Identity::default().arn);
        assert_eq!(event.resource.as_deref(), Some(MI));
    }

    let resumed = client
        .resume_session()
        .session_id(&sid)
        .send()
        .await
        .unwrap();
    let fresh = resumed.token_value().unwrap();
    assert_ne!(fresh, token);
    assert_eq!(resumed.stream_url(), out.stream_url());
    let mut terminated = world
        .lock()
        .unwrap()
        .redeem_token(&sid, fresh)
        .unwrap()
        .terminated;
    client
        .terminate_session()
        .session_id(&sid)
        .send()
        .await
        .unwrap();
    terminated.changed().await.unwrap();
    assert!(*terminated.borrow());
    let after = client
        .resume_session()
        .session_id(&sid)
        .send()
        .await
        .unwrap();
    assert_eq!(after.token_value(), None, "no token once terminated");
    let e = client
        .resume_session()
        .session_id("alice-00000000000000000")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "DoesNotExistException");

    // SSH document: no type, default port; AWS-native targets seeded by id work.
    let out = client
        .start_session()
        .target(native)
        .document_name("AWS-StartSSHSession")
        .send()
        .await
        .unwrap();
    let w = world.lock().unwrap();
    assert_eq!(
        w.sessions[out.session_id().unwrap()].properties.to_string(),
        r#"{"portNumber":"22"}"#
    );
}

#[tokio::test]
async fn hybrid_nodes_need_the_advanced_tier_for_sessions() {
    let fake = FakeAws::start(Seed {
        region: "eu-west-1".into(),
        instances: vec![instance(MI, &[]), instance("i-0123456789abcdef0", &[])],
        ..Seed::default()
    })
    .await
    .unwrap();
    let client = ssm(&fake);
    let start = |target: &str| {
        client
            .start_session()
            .target(target)
            .document_name("AWS-StartSSHSession")
            .send()
    };
    let (c, m) = code(start(MI).await.unwrap_err());
    assert_eq!(
        (c.as_str(), m.as_str()),
        (
            "BadRequest",
            "Enable advanced-instances tier to use Session Manager with your on-premises instances"
        )
    );
    // EC2 instances need no tier.
    start("i-0123456789abcdef0").await.unwrap();
    client
        .update_service_setting()
        .setting_id("/ssm/managed-instance/activation-tier")
        .setting_value("advanced")
        .send()
        .await
        .unwrap();
    start(MI).await.unwrap();
}

#[tokio::test]
async fn start_session_errors() {
    let mut offline = instance("mi-00000000000000002", &[]);
    offline.ping_status = PingStatus::ConnectionLost;
    let fake = fake_with(vec![instance(MI, &[]), offline]).await;
    let client = ssm(&fake);
    let start = |target: &str, doc: &str, params: &[(&str, &str)]| {
        let mut req = client.start_session().target(target).document_name(doc);
        for (k, v) in params {
            req = req.parameters(*k, vec![v.to_string()]);
        }
        req.send()
    };
    let (c, m) = code(
        start("mi-ffffffffffffffff0", "AWS-StartSSHSession", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (c.as_str(), m.as_str()),
        (
            "TargetNotConnected",
            "mi-ffffffffffffffff0 is not connected."
        )
    );
    let (c, _) = code(
        start("mi-00000000000000002", "AWS-StartSSHSession", &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(c, "TargetNotConnected");
    let (c, _) = code(start(MI, "AWS-NoSuchDocument", &[]).await.unwrap_err());
    assert_eq!(c, "InvalidDocument");
    let (c, _) = code(
        start(MI, "AWS-StartSSHSession", &[("portNumber", "http")])
            .await
            .unwrap_err(),
    );
    assert_eq!(c, "InvalidParameters");
    let (c, _) = code(
        start(
            MI,
            "AWS-StartPortForwardingSessionToRemoteHost",
            &[("portNumber", "5432")],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(c, "InvalidParameters");
    let out = start(
        MI,
        "AWS-StartPortForwardingSessionToRemoteHost",
        &[
            ("host", "db.internal"),
            ("portNumber", "5432"),
            ("localPortNumber", "15432"),
        ],
    )
    .await
    .unwrap();
    let w = fake.world();
    let w = w.lock().unwrap();
    assert_eq!(
        w.sessions[out.session_id().unwrap()].properties.to_string(),
        r#"{"host":"db.internal","localPortNumber":"15432","portNumber":"5432","type":"LocalPortForwarding"}"#
    );
    let refused: Vec<_> = w.events.iter().filter_map(|e| e.error.clone()).collect();
    assert_eq!(refused.len(), 5);
}

#[tokio::test]
async fn denials_switch_at_runtime() {
    let fake = fake_with(vec![
        instance(MI, &[("SSHOwner", OWNER)]),
        instance("mi-00000000000000002", &[("SSHOwner", "AIDASOMEONEELSE")]),
    ])
    .await;
    let client = ssm(&fake);
    let start = |target: &'static str| {
        client
            .start_session()
            .target(target)
            .document_name("AWS-StartSSHSession")
            .send()
    };
    fake.deny_action("ssm:StartSession", true);
    let (c, m) = code(start(MI).await.unwrap_err());
    assert_eq!(c, "AccessDeniedException");
    assert_eq!(
        m,
        format!(
            "User: {} is not authorized to perform: ssm:StartSession on resource: \
             arn:aws:ssm:eu-west-1:123456789012:managed-instance/{MI} because no \
             identity-based policy allows the ssm:StartSession action",
            Identity::default().arn
        )
    );
    fake.deny_action("ssm:StartSession", false);
    start(MI).await.unwrap();

    fake.deny_document("AWS-StartSSHSession", true);
    let (c, m) = code(start(MI).await.unwrap_err());
    assert_eq!(c, "AccessDeniedException");
    assert!(m.contains("document/AWS-StartSSHSession"), "{m}");
    fake.deny_document("AWS-StartSSHSession", false);

    fake.enforce_owner_tag(true);
    start(MI).await.unwrap();
    assert_eq!(
        code(start("mi-00000000000000002").await.unwrap_err()).0,
        "AccessDeniedException"
    );
    assert_eq!(
        refused_true(&client, "mi-00000000000000002", "AWS-RunShellScript").await,
        "AccessDeniedException"
    );
    fake.enforce_owner_tag(false);
    start("mi-00000000000000002").await.unwrap();

    fake.deny_action("ssm:DescribeInstanceInformation", true);
    let e = client
        .describe_instance_information()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "AccessDeniedException");
}

#[tokio::test]
async fn sts_get_caller_identity() {
    let fake = fake_with(vec![]).await;
    let client = sts(&fake);
    let out = client.get_caller_identity().send().await.unwrap();
    let id = Identity::default();
    assert_eq!(out.account(), Some(id.account.as_str()));
    assert_eq!(out.arn(), Some(id.arn.as_str()));
    assert_eq!(out.user_id(), Some(id.user_id.as_str()));
    fake.set_identity(Identity {
        account: "210987654321".into(),
        arn: "arn:aws:iam::210987654321:user/bob".into(),
        user_id: "AIDABOB".into(),
    });
    assert_eq!(
        client.get_caller_identity().send().await.unwrap().user_id(),
        Some("AIDABOB")
    );
    fake.deny_action("sts:GetCallerIdentity", true);
    let e = client
        .get_caller_identity()
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(e.code(), Some("AccessDenied"));
    assert!(e
        .message()
        .unwrap()
        .contains("arn:aws:iam::210987654321:user/bob"));
}

/// Polls until the invocation ends, returning every status seen (errors as
/// their code) in order, without repeats.
async fn walk(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
) -> (
    Vec<String>,
    aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput,
) {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..3000 {
        let step = match client
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(MI)
            .send()
            .await
        {
            Ok(out) => {
                let status = out.status().unwrap().as_str().to_string();
                let done = !matches!(
                    out.status(),
                    Some(CommandInvocationStatus::Pending | CommandInvocationStatus::InProgress)
                );
                if done {
                    seen.push(status);
                    return (seen, out);
                }
                status
            }
            Err(e) => code(e).0,
        };
        if seen.last() != Some(&step) {
            seen.push(step);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("command {command_id} never finished; saw {seen:?}");
}

async fn send(client: &aws_sdk_ssm::Client, commands: &[&str], params: &[(&str, &str)]) -> String {
    let mut req = client
        .send_command()
        .instance_ids(MI)
        .document_name("AWS-RunShellScript")
        .comment("Copy public key for SSH helper")
        .timeout_seconds(30)
        .parameters("commands", commands.iter().map(|c| c.to_string()).collect());
    for (k, v) in params {
        req = req.parameters(*k, vec![v.to_string()]);
    }
    let out = req.send().await.unwrap();
    let command = out.command().unwrap();
    assert_eq!(command.document_name(), Some("AWS-RunShellScript"));
    command.command_id().unwrap().to_string()
}

#[tokio::test]
async fn send_command_runs_in_the_sandbox_and_walks_its_status() {
    let fake = fake_with(vec![instance(MI, &[])]).await;
    let client = ssm(&fake);
    let sandbox = fake.sandbox(MI).unwrap();
    let gate = sandbox.join("gate");

    let id = send(
        &client,
        &[
            "mkdir -p /etc/ssh/authorized_keys.d/",
            "echo 'ssh-ed25519 AAAA test' > /etc/ssh/authorized_keys.d/key.pub",
            "cat /etc/ssh/authorized_keys.d/* > /etc/ssh/authorized_keys",
            &format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display()),
            "echo \"home=$HOME\"",
            "echo warning >&2",
        ],
        &[],
    )
    .await;
    let first = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id(MI)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(first).0, "InvocationDoesNotExist");
    // Wait until the script is blocked on the gate, then open it.
    loop {
        let out = client
            .get_command_invocation()
            .command_id(&id)
            .instance_id(MI)
            .send()
            .await
            .unwrap();
        if out.status() == Some(&CommandInvocationStatus::InProgress) {
            break;
        }
        assert_eq!(out.status(), Some(&CommandInvocationStatus::Pending));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(&gate, "").unwrap();
    let (seen, out) = walk(&client, &id).await;
    assert_eq!(seen.last().map(String::as_str), Some("Success"), "{seen:?}");
    assert_eq!(out.response_code(), 0);
    assert_eq!(
        out.standard_output_content(),
        Some(format!("home={}\n", sandbox.join("home").display()).as_str())
    );
    assert_eq!(out.standard_error_content(), Some("warning\n"));
    assert_eq!(out.plugin_name(), Some("aws:runShellScript"));
    assert_eq!(
        std::fs::read_to_string(sandbox.join("etc/ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAA test\n"
    );

    let id = send(
        &client,
        &["echo before", "ls /nonexistent-dir", "exit 3"],
        &[],
    )
    .await;
    let (seen, out) = walk(&client, &id).await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("InvocationDoesNotExist")
    );
    assert_eq!(out.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(out.response_code(), 3);
    assert_eq!(out.standard_output_content(), Some("before\n"));
    assert!(out
        .standard_error_content()
        .unwrap()
        .contains("nonexistent-dir"));

    let id = send(
        &client,
        &["echo started", "sleep 30"],
        &[("executionTimeout", "1")],
    )
    .await;
    let (_, out) = walk(&client, &id).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(out.status_details(), Some("ExecutionTimedOut"));
    assert_eq!(out.standard_output_content(), Some("started\n"));

    let e = client
        .get_command_invocation()
        .command_id("00000000-0000-0000-0000-000000000000")
        .instance_id(MI)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "InvocationDoesNotExist");
    fake.set_ping_status(MI, PingStatus::ConnectionLost);
    assert_eq!(
        refused_true(&client, MI, "AWS-RunShellScript").await,
        "InvalidInstanceId"
    );
    assert_eq!(
        refused_true(&client, MI, "AWS-RunPowerShellScript").await,
        "InvalidDocument"
    );
}

#[tokio::test]
async fn service_setting_and_activation() {
    // A new account's tier: standard.
    let fake = FakeAws::start(Seed {
        region: "eu-west-1".into(),
        ..Seed::default()
    })
    .await
    .unwrap();
    let client = ssm(&fake);
    let arn =
        "arn:aws:ssm:eu-west-1:123456789012:servicesetting/ssm/managed-instance/activation-tier";
    let get = |id: &'static str| client.get_service_setting().setting_id(id).send();
    let s = get("/ssm/managed-instance/activation-tier").await.unwrap();
    let s = s.service_setting().unwrap();
    assert_eq!(s.setting_value(), Some("standard"));
    assert_eq!(s.arn(), Some(arn));
    client
        .update_service_setting()
        .setting_id(arn)
        .setting_value("advanced")
        .send()
        .await
        .unwrap();
    let s = get(arn).await.unwrap();
    assert_eq!(
        s.service_setting().unwrap().setting_value(),
        Some("advanced")
    );
    assert_eq!(
        code(get("/ssm/other").await.unwrap_err()).0,
        "ServiceSettingNotFound"
    );
    let e = client
        .update_service_setting()
        .setting_id(arn)
        .setting_value("premium")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(e).0, "ValidationException");

    let out = client
        .create_activation()
        .iam_role("service-role/AmazonSageMaker-ExecutionRole")
        .description("SSH helper")
        .tags(Tag::builder().key("SSHOwner").value(OWNER).build().unwrap())
        .send()
        .await
        .unwrap();
    let id = out.activation_id().unwrap();
    assert!(!out.activation_code().unwrap().is_empty());
    let w = fake.world();
    let w = w.lock().unwrap();
    assert_eq!(
        w.activations[id].tags,
        BTreeMap::from([("SSHOwner".to_string(), OWNER.to_string())])
    );
}

#[tokio::test]
async fn sshd_accepts_a_key_pushed_by_send_command() {
    let fake = fake_with(vec![instance(MI, &[])]).await;
    let client = ssm(&fake);
    let sandbox = fake.sandbox(MI).unwrap();
    let sshd = OpenSshServer::start(&sandbox).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_ed25519");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let ssh = || {
        std::process::Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args(["-p", &sshd.port().to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{}@127.0.0.1", whoami()))
            .arg("true")
            .output()
            .unwrap()
    };
    assert!(!ssh().status.success(), "no key pushed yet");
    let id = send(
        &client,
        &[
            "mkdir -p /etc/ssh/authorized_keys.d/",
            &format!(
                "echo '{}' > /etc/ssh/authorized_keys.d/sagemaker-ssh-gw.pub",
                public.trim()
            ),
            "cat /etc/ssh/authorized_keys.d/* > /etc/ssh/authorized_keys",
        ],
        &[],
    )
    .await;
    let (_, out) = walk(&client, &id).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::Success));
    let result = ssh();
    assert!(
        result.status.success(),
        "ssh failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&result.stderr),
        sshd.log()
    );
}

fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `env()` is enough for the AWS CLI (a different SDK) to reach the fake.
#[tokio::test]
async fn aws_cli_reaches_the_fake_through_env() {
    let Ok(aws) = std::env::var("SM_SSH_TEST_AWS_CLI") else {
        eprintln!("SM_SSH_TEST_AWS_CLI is unset (scripts/test sets it); skipping");
        return;
    };
    let fake = fake_with(vec![instance(MI, &[("SSHOwner", OWNER)])]).await;
    let out = tokio::process::Command::new(aws)
        .args([
            "ssm",
            "describe-instance-information",
            "--filters",
            &format!("Key=tag:SSHOwner,Values={OWNER}"),
            "--query",
            "InstanceInformationList[0].[InstanceId,PingStatus]",
            "--output",
            "text",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", tempfile::tempdir().unwrap().path())
        .envs(fake.env())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{MI}\tOnline")
    );
}

/// The binary prints exports that work, and serves until stopped.
#[tokio::test]
async fn fake_binary_prints_exports() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seed.json");
    std::fs::write(
        &config,
        format!(r#"{{"region":"ap-south-1","instances":[{{"id":"{MI}","tags":{{"SSHOwner":"{OWNER}"}}}}]}}"#),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sm-ssh-fake"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut env = BTreeMap::new();
    while env.len() < 7 {
        let line = lines.next_line().await.unwrap().expect("exports");
        let (k, v) = line
            .strip_prefix("export ")
            .unwrap()
            .split_once('=')
            .unwrap();
        env.insert(k.to_string(), v.trim_matches('\'').to_string());
    }
    assert_eq!(env["AWS_REGION"], "ap-south-1");
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(env["AWS_REGION"].clone()))
        .credentials_provider(credentials())
        .endpoint_url(&env["AWS_ENDPOINT_URL_SSM"])
        .build();
    let out = aws_sdk_ssm::Client::from_conf(conf)
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::ManagedInstance)
        .resource_id(MI)
        .send()
        .await
        .unwrap();
    assert_eq!(out.tag_list()[0].value(), OWNER);
    child.kill().await.unwrap();
}

/// The data channel is served on the same port: StartSession's StreamUrl and
/// token open it, and the agent greets with the document's properties.
#[tokio::test]
async fn stream_url_reaches_the_data_channel() {
    use futures_util::{SinkExt, StreamExt};
    use sm_ssh_proxy::frame::{message_type, payload_type, Frame};
    use sm_ssh_proxy::payload::OpenDataChannel;
    use tokio_tungstenite::tungstenite::Message;

    let fake = fake_with(vec![instance(MI, &[])]).await;
    let out = ssm(&fake)
        .start_session()
        .target(MI)
        .document_name("AWS-StartSSHSession")
        .send()
        .await
        .unwrap();
    // Signed as the plugin signs it, with the static key the fake knows.
    let url = out.stream_url().unwrap();
    let key = sm_ssh_integration::auth::Credential {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
        expires: None,
    };
    let headers = sm_ssh_integration::auth::sign_headers(
        url,
        &[],
        &key,
        "eu-west-1",
        std::time::SystemTime::now(),
    )
    .unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let open = OpenDataChannel {
        message_schema_version: "1.0".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        token_value: out.token_value().unwrap().into(),
        client_id: Some(uuid::Uuid::new_v4().to_string()),
        client_version: Some("1.2.764.0".into()),
    };
    ws.send(Message::Text(serde_json::to_string(&open).unwrap().into()))
        .await
        .unwrap();
    // A guard against a hang, not a speed check.
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ws
                .next()
                .await
                .expect("the data channel stays open")
                .unwrap()
            {
                Message::Binary(b) => break Frame::decode(&b).unwrap(),
                _ => continue,
            }
        }
    })
    .await
    .expect("the agent sends its HandshakeRequest");
    assert_eq!(first.message_type, message_type::OUTPUT_STREAM_DATA);
    assert_eq!(first.payload_type, payload_type::HANDSHAKE_REQUEST);
    let request: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert!(
        request.to_string().contains(r#"{"portNumber":"22"}"#),
        "{request}"
    );
    let world = fake.world();
    let sid = out.session_id().unwrap();
    let again = world
        .lock()
        .unwrap()
        .redeem_token(sid, out.token_value().unwrap());
    assert!(again.is_err(), "the token was used by the websocket");
}

/// Instances put straight into the world get a sandbox on first SendCommand.
#[tokio::test]
async fn send_command_provisions_a_sandbox_on_demand() {
    let fake = fake_with(vec![]).await;
    fake.world()
        .lock()
        .unwrap()
        .instances
        .insert(MI.into(), instance(MI, &[]));
    let client = ssm(&fake);
    let id = send(&client, &["echo hi > /etc/ssh/marker"], &[]).await;
    let (_, out) = walk(&client, &id).await;
    assert_eq!(out.status(), Some(&CommandInvocationStatus::Success));
    let sandbox = fake.sandbox(MI).expect("a sandbox was made");
    assert_eq!(
        std::fs::read_to_string(sandbox.join("etc/ssh/marker")).unwrap(),
        "hi\n"
    );
}
