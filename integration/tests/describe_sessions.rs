//! DescribeSessions through the real aws-sdk-ssm: two callers told apart by
//! their access keys, Active and History with end times, the filters, paging,
//! and the denials of DescribeSessions and TerminateSession.

use std::time::Duration;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{SessionFilter, SessionFilterKey, SessionState, SessionStatus};
use sm_ssh_integration::world::{Identity, Instance, Seed};
use sm_ssh_integration::FakeAws;

const MI: &str = "mi-0123456789abcdef0";
const BOB_KEY: &str = "AKIDEXAMPLEBOB";

fn bob_identity() -> Identity {
    Identity {
        arn: "arn:aws:sts::123456789012:assumed-role/Developer/bob".into(),
        user_id: "AROAEXAMPLEDEVELOPER:bob".into(),
        ..Identity::default()
    }
}

async fn fake() -> FakeAws {
    FakeAws::start(Seed {
        region: "eu-west-1".into(),
        identities: [(BOB_KEY.to_string(), bob_identity())].into(),
        instances: vec![Instance {
            id: MI.into(),
            ..Instance::default()
        }],
        ..Seed::default()
    })
    .await
    .unwrap()
}

fn ssm(fake: &FakeAws, key: &str) -> aws_sdk_ssm::Client {
    let credentials = aws_sdk_ssm::config::Credentials::new(key, "secret", None, None, "test");
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(fake.region()))
        .credentials_provider(credentials)
        .endpoint_url(fake.endpoint())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

async fn start(client: &aws_sdk_ssm::Client, reason: &str) -> String {
    client
        .start_session()
        .target(MI)
        .document_name("AWS-StartSSHSession")
        .reason(reason)
        .send()
        .await
        .unwrap()
        .session_id()
        .unwrap()
        .to_owned()
}

fn filter(key: SessionFilterKey, value: &str) -> SessionFilter {
    SessionFilter::builder()
        .key(key)
        .value(value)
        .build()
        .unwrap()
}

async fn ids(
    client: &aws_sdk_ssm::Client,
    state: SessionState,
    filters: Vec<SessionFilter>,
) -> Vec<String> {
    let out = client
        .describe_sessions()
        .state(state)
        .set_filters(Some(filters).filter(|f| !f.is_empty()))
        .send()
        .await
        .unwrap();
    out.sessions()
        .iter()
        .map(|s| s.session_id().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn sessions_carry_their_owner_and_move_to_history_when_over() {
    let fake = fake().await;
    let (alice, bob) = (ssm(&fake, "testing"), ssm(&fake, BOB_KEY));
    let first = start(&alice, "sm-ssh 0.1.0: job.training.sagemaker").await;
    let theirs = start(&bob, "bob's").await;
    let second = start(&alice, "again").await;
    assert!(theirs.starts_with("bob-"), "{theirs}");

    let active = alice
        .describe_sessions()
        .state(SessionState::Active)
        .send()
        .await
        .unwrap();
    let got: Vec<_> = active
        .sessions()
        .iter()
        .map(|s| s.session_id().unwrap())
        .collect();
    assert_eq!(
        got,
        [second.as_str(), theirs.as_str(), first.as_str()],
        "newest first"
    );
    let one = &active.sessions()[2];
    assert_eq!(one.owner(), Some(Identity::default().arn.as_str()));
    assert_eq!(one.target(), Some(MI));
    assert_eq!(one.document_name(), Some("AWS-StartSSHSession"));
    assert_eq!(one.reason(), Some("sm-ssh 0.1.0: job.training.sagemaker"));
    assert_eq!(one.status(), Some(&SessionStatus::Connecting));
    assert!(one.start_date().is_some() && one.end_date().is_none());

    let mine = vec![filter(SessionFilterKey::Owner, &Identity::default().arn)];
    assert_eq!(
        ids(&bob, SessionState::Active, mine.clone()).await,
        [second.clone(), first.clone()]
    );
    let bobs = vec![filter(SessionFilterKey::Owner, &bob_identity().arn)];
    assert_eq!(
        ids(&alice, SessionState::Active, bobs).await,
        std::slice::from_ref(&theirs)
    );
    let by_id = vec![filter(SessionFilterKey::SessionId, &first)];
    assert_eq!(
        ids(&alice, SessionState::Active, by_id).await,
        std::slice::from_ref(&first)
    );

    // Paging, one at a time.
    let page = alice
        .describe_sessions()
        .state(SessionState::Active)
        .max_results(1)
        .send()
        .await
        .unwrap();
    assert_eq!(page.sessions().len(), 1);
    let rest = alice
        .describe_sessions()
        .state(SessionState::Active)
        .max_results(2)
        .set_next_token(page.next_token().map(str::to_owned))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.sessions().len(), 2);
    assert!(rest.next_token().is_none());

    // TerminateSession ends one; the agent ending another does too.
    alice
        .terminate_session()
        .session_id(&first)
        .send()
        .await
        .unwrap();
    let world = fake.world();
    world.lock().unwrap().sessions[&second]
        .terminated
        .send_replace(true);
    let history = loop {
        let out = alice
            .describe_sessions()
            .state(SessionState::History)
            .set_filters(Some(mine.clone()))
            .send()
            .await
            .unwrap();
        if out.sessions().len() == 2 {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for session in history.sessions() {
        assert_eq!(session.status(), Some(&SessionStatus::Terminated));
        let (start, end) = (session.start_date().unwrap(), session.end_date().unwrap());
        assert!(end.as_secs_f64() >= start.as_secs_f64());
    }
    assert_eq!(
        ids(&alice, SessionState::Active, vec![]).await,
        std::slice::from_ref(&theirs)
    );
}

#[tokio::test]
async fn denials_and_the_own_session_condition() {
    let fake = fake().await;
    let (alice, bob) = (ssm(&fake, "testing"), ssm(&fake, BOB_KEY));
    let theirs = start(&bob, "bob's").await;

    fake.deny_action("ssm:DescribeSessions", true);
    let error = alice
        .describe_sessions()
        .state(SessionState::Active)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("AccessDeniedException"));
    assert!(error.message().unwrap().contains(
        "assumed-role/Developer/alice is not authorized to perform: ssm:DescribeSessions"
    ));
    fake.deny_action("ssm:DescribeSessions", false);

    fake.enforce_owner_tag(true);
    let error = alice
        .terminate_session()
        .session_id(&theirs)
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("AccessDeniedException"));
    assert!(error.message().unwrap().contains(&format!(
        "ssm:TerminateSession on resource: arn:aws:ssm:eu-west-1:123456789012:session/{theirs}"
    )));
    bob.terminate_session()
        .session_id(&theirs)
        .send()
        .await
        .unwrap();
    let events = fake.events();
    let callers: Vec<_> = events
        .iter()
        .filter(|e| e.action == "ssm:TerminateSession")
        .map(|e| (e.caller.as_str(), e.error.as_deref()))
        .collect();
    assert_eq!(
        callers,
        [
            (
                Identity::default().arn.as_str(),
                Some("AccessDeniedException")
            ),
            (bob_identity().arn.as_str(), None)
        ]
    );
}
