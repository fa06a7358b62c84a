//! `sm-ssh sessions`: Session Manager's record of who is (or was) on which
//! machine — owner, target by its SageMaker name, document, reason, status,
//! start and end — and `sm-ssh sessions terminate` to end sessions.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_config::SdkConfig;

use crate::audit::denial::{self, Starter};
use crate::audit::listing::{self, Query, Row};
use crate::audit::names;
use crate::cli::Global;
use crate::error::{exit, AwsError, AwsProblem, Failure};
use crate::resolve::{format_epoch, region_name};
use crate::target::{SageMakerTarget, Target};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Ended sessions (Session Manager keeps 30 days) instead of active ones.
    #[arg(long)]
    pub history: bool,
    /// Only sessions to this target: a `*.sagemaker` name, `mi-…`/`i-…`, or a
    /// native target (`sagemaker-training-job:…`).
    #[arg(long, value_name = "NAME")]
    pub target: Option<String>,
    /// Whose sessions: `me` (the caller, from sts:GetCallerIdentity), `any`,
    /// or an IAM principal ARN as Session Manager records it.
    #[arg(long, value_name = "me|any|ARN", default_value = "me")]
    pub owner: String,
    /// Only sessions started within this long: `90s`, `30m`, `12h`, `7d`, `2w`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<u64>,
    /// Print JSON (an array of objects, fields as documented) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// End sessions by id (asks first on a terminal; `--yes` does not ask).
    Terminate {
        #[arg(required = true, value_name = "SESSION_ID")]
        ids: Vec<String>,
        /// Don't ask.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    let sdk = crate::aws::load(global).await;
    if let Some(Action::Terminate { ids, yes }) = args.action {
        return terminate(&sdk, &ids, yes).await;
    }
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let wanted = args.target.as_deref().map(Target::parse).transpose()?;
    let owner = match args.owner.as_str() {
        "me" => Some(caller(&sdk).await?.0),
        "any" => None,
        arn if arn.starts_with("arn:") => Some(arn.to_owned()),
        other => {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "--owner {other:?} is not `me`, `any` or an IAM principal ARN \
                     (arn:aws:sts::<account>:assumed-role/<role>/<name>, arn:aws:iam::<account>:user/<name>)"
                ),
            )
            .into())
        }
    };
    let query = Query {
        history: args.history,
        owner: owner.clone(),
        target: match &wanted {
            Some(Target::Instance(id) | Target::Native(id)) => Some(id.clone()),
            _ => None,
        },
        session_id: None,
        since: args.since.map(|secs| now() - secs as i64),
    };
    let mut rows = listing::fetch(&ssm, &query)
        .await
        .map_err(describe_denied)?;
    // A SageMaker name can stand for several instances and target forms:
    // filtered here, on the names the rows were given.
    if let Some(Target::SageMaker(wanted)) = &wanted {
        rows.retain(|row| {
            row.resource
                .as_ref()
                .is_some_and(|r| names::same(wanted, r))
        });
    }
    if args.json {
        let json = serde_json::to_string_pretty(&rows).context("encoding JSON")?;
        println!("{json}");
    } else if rows.is_empty() {
        eprintln!("{}", nothing_found(&args, owner.as_deref(), &sdk));
    } else {
        print!("{}", table(&rows, args.history));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_denied(error: AwsError) -> anyhow::Error {
    match error.problem {
        AwsProblem::AccessDenied { .. } => denial::describe_sessions(&error).into(),
        _ => error.into(),
    }
}

fn nothing_found(args: &Args, owner: Option<&str>, sdk: &SdkConfig) -> String {
    let state = if args.history { "ended" } else { "active" };
    let whose = owner
        .map(|o| format!(" of {o}"))
        .unwrap_or_else(|| " of any owner".into());
    let target = args
        .target
        .as_ref()
        .map(|t| format!(" to {t}"))
        .unwrap_or_default();
    let mut hints = Vec::new();
    if owner.is_some() {
        hints.push("`--owner any` shows everyone's");
    }
    hints.push(if args.history {
        "without --history shows active ones"
    } else {
        "--history shows ended ones"
    });
    format!(
        "No {state} sessions{whose}{target} in {}; {}.",
        region_name(sdk),
        hints.join(", ")
    )
}

/// The caller's ARN and account.
async fn caller(sdk: &SdkConfig) -> Result<(String, String), AwsError> {
    let identity = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", &e))?;
    Ok((
        identity.arn().unwrap_or_default().to_owned(),
        identity.account().unwrap_or_default().to_owned(),
    ))
}

/// `sm-ssh sessions terminate`: shows what will end, asks, ends each.
async fn terminate(sdk: &SdkConfig, ids: &[String], yes: bool) -> anyhow::Result<ExitCode> {
    let ssm = aws_sdk_ssm::Client::new(sdk);
    let (me, account) = caller(sdk).await?;
    let ids: Vec<&String> = ids.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let mut plan: Vec<(&String, Option<Row>)> = Vec::new();
    for id in ids {
        match lookup(&ssm, id).await {
            Lookup::Active(row) => plan.push((id, Some(*row))),
            Lookup::Unknown => plan.push((id, None)),
            Lookup::Ended(row) => eprintln!(
                "sm-ssh: session {id} already ended{}; nothing to do",
                row.end_secs
                    .map(|t| format!(" at {}", format_epoch(t)))
                    .unwrap_or_default()
            ),
            Lookup::Missing => {
                return Err(Failure::new(
                    exit::NOT_FOUND,
                    format!(
                        "there is no session {id} in {}; `sm-ssh sessions --owner any` lists \
                         the active ones",
                        region_name(sdk)
                    ),
                )
                .into())
            }
        }
    }
    if plan.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("About to terminate:");
    for (id, row) in &plan {
        eprintln!("  {}", describe_one(id, row.as_ref()));
    }
    if !yes && !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            exit::USAGE,
            "not terminating without confirmation: stdin is not a terminal; pass --yes",
        )
        .into());
    }
    if !crate::prompt::confirm(&format!("Terminate {} session(s)?", plan.len()), yes) {
        eprintln!("sm-ssh: nothing terminated");
        return Ok(ExitCode::from(exit::FAILURE));
    }
    let mut code = ExitCode::SUCCESS;
    for (id, row) in &plan {
        let result = ssm.terminate_session().session_id(id.as_str()).send().await;
        match result {
            Ok(_) => println!("terminated {id}"),
            Err(error) => {
                let error = AwsError::from_sdk("ssm:TerminateSession", &error);
                let failure = match error.problem {
                    AwsProblem::AccessDenied { .. } => {
                        let starter = match row {
                            Some(row) if row.owner == me => Starter::Me,
                            Some(row) => Starter::Other(&row.owner),
                            None => Starter::Unknown,
                        };
                        denial::terminate_session(&error, id, starter, &me, &account)
                    }
                    _ => Failure::new(error.exit_code(), error.message(None)),
                };
                eprintln!("sm-ssh: {}", failure.message);
                code = ExitCode::from(failure.code);
            }
        }
    }
    Ok(code)
}

enum Lookup {
    Active(Box<Row>),
    Ended(Box<Row>),
    Missing,
    /// DescribeSessions failed (often: not allowed); terminate anyway.
    Unknown,
}

async fn lookup(ssm: &aws_sdk_ssm::Client, id: &str) -> Lookup {
    for history in [false, true] {
        let query = Query {
            history,
            session_id: Some(id.to_owned()),
            ..Query::default()
        };
        match listing::fetch(ssm, &query).await {
            Ok(rows) => {
                if let Some(row) = rows.into_iter().next() {
                    let row = Box::new(row);
                    return if history {
                        Lookup::Ended(row)
                    } else {
                        Lookup::Active(row)
                    };
                }
            }
            Err(error) => {
                tracing::debug!(session_id = id, "cannot describe the session: {error}");
                return Lookup::Unknown;
            }
        }
    }
    Lookup::Missing
}

fn describe_one(id: &str, row: Option<&Row>) -> String {
    match row {
        Some(row) => format!(
            "{id}  {}  {}  started {}",
            short_owner(&row.owner),
            target_of(row),
            row.start_secs
                .map(format_epoch)
                .unwrap_or_else(|| "-".into())
        ),
        None => format!("{id}  (owner and target unknown)"),
    }
}

/// The name when known, else Session Manager's target.
fn target_of(row: &Row) -> String {
    row.resource
        .as_ref()
        .map(SageMakerTarget::host_name)
        .unwrap_or_else(|| row.target.clone())
}

/// `arn:aws:sts::1:assumed-role/Role/alice` → `Role/alice`; `…:user/x/bob` → `bob`.
fn short_owner(arn: &str) -> String {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or(arn);
    match resource.split_once('/') {
        Some(("assumed-role", rest)) => rest.to_owned(),
        Some(("user", path)) => path.rsplit('/').next().unwrap_or(path).to_owned(),
        _ => arn.to_owned(),
    }
}

/// The aligned table, newest first, with a header line.
fn table(rows: &[Row], history: bool) -> String {
    let mut header = vec![
        "SESSION", "STATUS", "OWNER", "TARGET", "DOCUMENT", "STARTED",
    ];
    if history {
        header.push("ENDED");
    }
    header.push("REASON");
    let time = |t: Option<i64>| t.map(format_epoch).unwrap_or_else(|| "-".into());
    let mut lines: Vec<Vec<String>> = vec![header.into_iter().map(String::from).collect()];
    for row in rows {
        let mut line = vec![
            row.session_id.clone(),
            row.status.clone(),
            short_owner(&row.owner),
            target_of(row),
            row.document.clone().unwrap_or_else(|| "-".into()),
            time(row.start_secs),
        ];
        if history {
            line.push(time(row.end_secs));
        }
        line.push(row.reason.clone().unwrap_or_else(|| "-".into()));
        lines.push(line);
    }
    super::list::aligned(&lines)
}

/// `90s`, `30m`, `12h`, `7d`, `2w` → seconds.
fn parse_duration(text: &str) -> Result<u64, String> {
    let bad =
        || format!("{text:?} is not a duration: a number and a unit, e.g. 90s, 30m, 12h, 7d, 2w");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    number.checked_mul(unit).filter(|s| *s > 0).ok_or_else(bad)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        for bad in ["", "5", "m", "1.5h", "0s", "3y", "-1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owners_are_shortened() {
        assert_eq!(
            short_owner("arn:aws:sts::1:assumed-role/Developer/alice"),
            "Developer/alice"
        );
        assert_eq!(short_owner("arn:aws:iam::1:user/team/bob"), "bob");
        assert_eq!(short_owner("arn:aws:iam::1:root"), "arn:aws:iam::1:root");
    }

    #[test]
    fn the_table_has_an_ended_column_for_history_only() {
        let row = Row {
            session_id: "alice-0123".into(),
            status: "Terminated".into(),
            owner: "arn:aws:sts::1:assumed-role/Developer/alice".into(),
            target: "mi-0123456789abcdef0".into(),
            name: None,
            document: Some("AWS-StartSSHSession".into()),
            reason: None,
            start: None,
            end: None,
            resource: None,
            start_secs: Some(1_700_000_000),
            end_secs: Some(1_700_000_060),
        };
        let text = table(std::slice::from_ref(&row), true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("SESSION     STATUS      OWNER"),
            "{text}"
        );
        assert!(lines[0].contains("ENDED"));
        assert!(lines[1].contains("2023-11-14 22:14:20 UTC"), "{text}");
        assert!(!table(&[row], false).contains("ENDED"));
    }
}
