//! `sm-ssh playground --broken [KIND]`: `sm-ssh doctor` against an account
//! misconfigured in one way (or each way in turn), to show what every kind
//! of failure looks like and the fix doctor gives for it.

use std::process::ExitCode;

use super::account::{self, Broken};
use super::Demo;
use crate::doctor::{self, report::Status, Options, Source};

/// Runs doctor, with the demo job's execution role, in each broken account.
pub async fn run_broken(kinds: &[Broken]) -> anyhow::Result<ExitCode> {
    let mut as_expected = true;
    for (index, kind) in kinds.iter().enumerate() {
        let demo = Demo::start_with(Some(*kind)).await?;
        let sdk = demo.sdk_config().await;
        let identity = demo.fake.world().lock().unwrap().identity.clone();
        let options = Options {
            target: Some(Source::Role(account::execution_role_arn(&identity.account))),
            space: (*kind == Broken::VpcEndpoints).then(|| super::DEMO_SPACE_HOST.to_owned()),
            ..Options::default()
        };
        let report = doctor::run(&options, &sdk).await;
        if index > 0 {
            println!();
        }
        println!(
            "# sm-ssh playground --broken {}: {} the {} check",
            kind.name(),
            if kind.status() == Status::Warn {
                "warns in"
            } else {
                "breaks"
            },
            kind.check()
        );
        print!("{}", report.to_text());
        let with = |status: Status| -> Vec<&str> {
            report
                .checks
                .iter()
                .filter(|c| c.status == status)
                .map(|c| c.id)
                .collect()
        };
        // Other warnings (ssh-config on a fresh machine) may stand.
        as_expected &= match kind.status() {
            Status::Warn => {
                with(Status::Fail).is_empty() && with(Status::Warn).contains(&kind.check())
            }
            _ => with(Status::Fail) == [kind.check()],
        };
    }
    if !as_expected {
        anyhow::bail!(
            "a broken account did not fail (or warn in) exactly its one check (see above)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
