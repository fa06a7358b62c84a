//! IAM in the AWS Query protocol (`Version=2010-05-08`, XML answers): the
//! reads `sm-ssh doctor` makes of roles, users, groups and managed policies,
//! and `SimulatePrincipalPolicy` evaluated over the seeded policies
//! (`simulate`). Nothing here writes: the account is what the seed says.

mod simulate;
pub(crate) mod xml;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::server::AppState;
use crate::ssm::{access_denied, record, Event};
use xml::{Form, Xml};

pub use simulate::{evaluate, Context, Decision};

/// The API version IAM requests carry; STS's differs, which is how the one
/// endpoint of the fake tells the two Query-protocol services apart.
const VERSION: &str = "2010-05-08";

/// The IAM side of a seeded account.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    pub roles: Vec<Role>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    /// Customer-managed (and AWS-managed) policies, by ARN.
    pub policies: Vec<ManagedPolicy>,
}

/// Inline policies by name, managed ones by ARN.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Policies {
    pub inline: BTreeMap<String, Value>,
    pub attached: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Role {
    pub name: String,
    /// `/` or `/service-role/` and the like.
    pub path: Option<String>,
    /// The trust policy (`AssumeRolePolicyDocument`).
    pub trust: Value,
    pub tags: BTreeMap<String, String>,
    #[serde(flatten)]
    pub policies: Policies,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct User {
    pub name: String,
    pub path: Option<String>,
    /// Names of the groups the user is in.
    pub groups: Vec<String>,
    pub tags: BTreeMap<String, String>,
    #[serde(flatten)]
    pub policies: Policies,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Group {
    pub name: String,
    pub path: Option<String>,
    #[serde(flatten)]
    pub policies: Policies,
}

/// A managed policy with one version, `v1`, its default.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ManagedPolicy {
    pub arn: String,
    pub document: Value,
}

impl Account {
    fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    fn policy(&self, arn: &str) -> Option<&ManagedPolicy> {
        self.policies.iter().find(|p| p.arn == arn)
    }

    /// Every identity policy of a role or user ARN (a user's groups'
    /// included), as IAM's simulator gathers them; `None` for an unknown
    /// principal. Attached ARNs the account does not hold count as empty.
    pub fn principal_policies(&self, arn: &str) -> Option<Vec<(String, Value)>> {
        let resource = arn.splitn(6, ':').nth(5)?;
        let (kind, path) = resource.split_once('/')?;
        let name = path.rsplit('/').next()?;
        let mut sets: Vec<&Policies> = Vec::new();
        match kind {
            "role" => sets.push(&self.role(name)?.policies),
            "user" => {
                let user = self.user(name)?;
                sets.push(&user.policies);
                sets.extend(
                    user.groups
                        .iter()
                        .filter_map(|g| self.group(g))
                        .map(|g| &g.policies),
                );
            }
            _ => return None,
        }
        let mut out = Vec::new();
        for set in sets {
            for (name, document) in &set.inline {
                out.push((format!("inline:{name}"), document.clone()));
            }
            for arn in &set.attached {
                if let Some(policy) = self.policy(arn) {
                    out.push((arn.clone(), policy.document.clone()));
                }
            }
        }
        Some(out)
    }
}

/// True when a Query-protocol body is addressed to IAM.
pub(crate) fn is_iam(body: &[u8]) -> bool {
    Form::parse(body).get("Version") == Some(VERSION)
}

/// An IAM error: HTTP status, code, message.
type Failure = (StatusCode, &'static str, String);

fn no_such(kind: &str, name: &str) -> Failure {
    (
        StatusCode::NOT_FOUND,
        "NoSuchEntity",
        format!("The {kind} with name {name} cannot be found."),
    )
}

pub(crate) fn handle(state: &AppState, body: &[u8]) -> Response {
    let form = Form::parse(body);
    let action = form.get("Action").unwrap_or_default().to_owned();
    let mut world = state.world.lock().unwrap();
    let permission = format!("iam:{action}");
    let denied = world
        .denials
        .actions
        .contains(&permission)
        .then(|| access_denied(&world, &permission, "*"));
    record(
        &mut world,
        &permission,
        Event {
            error: denied.as_ref(),
            ..Event::default()
        },
    );
    if let Some(e) = denied {
        return xml::error(StatusCode::FORBIDDEN, "AccessDenied", &e.message);
    }
    let account = &world.iam;
    let id = &world.identity.account;
    match answer(account, id, &action, &form) {
        Ok(result) => xml::ok(&action, &result),
        Err((status, code, message)) => xml::error(status, code, &message),
    }
}

/// The `<ActionResult>` body of one call.
fn answer(account: &Account, id: &str, action: &str, form: &Form) -> Result<Xml, Failure> {
    let arg = |name: &str| form.get(name).unwrap_or_default();
    let mut out = Xml::default();
    match action {
        "GetRole" => {
            let role = account
                .role(arg("RoleName"))
                .ok_or_else(|| no_such("role", arg("RoleName")))?;
            out.open("Role");
            entity(&mut out, id, "role", "AROA", &role.name, &role.path);
            out.leaf(
                "AssumeRolePolicyDocument",
                &xml::encode_document(&role.trust),
            );
            tags(&mut out, &role.tags);
            out.close("Role");
        }
        "GetUser" => {
            let user = user_named(account, arg("UserName"))?;
            out.open("User");
            entity(&mut out, id, "user", "AIDA", &user.name, &user.path);
            tags(&mut out, &user.tags);
            out.close("User");
        }
        "ListUserTags" => {
            let user = user_named(account, arg("UserName"))?;
            tags(&mut out, &user.tags);
            out.leaf("IsTruncated", "false");
        }
        "ListGroupsForUser" => {
            let user = user_named(account, arg("UserName"))?;
            out.open("Groups");
            for group in user.groups.iter().filter_map(|g| account.group(g)) {
                out.open("member");
                entity(&mut out, id, "group", "AGPA", &group.name, &group.path);
                out.close("member");
            }
            out.close("Groups");
            out.leaf("IsTruncated", "false");
        }
        "ListRolePolicies" | "ListUserPolicies" | "ListGroupPolicies" => {
            let (_, policies) = holder(account, action, form)?;
            out.open("PolicyNames");
            for name in policies.inline.keys() {
                out.leaf("member", name);
            }
            out.close("PolicyNames");
            out.leaf("IsTruncated", "false");
        }
        "GetRolePolicy" | "GetUserPolicy" | "GetGroupPolicy" => {
            let (holder_field, policies) = holder(account, action, form)?;
            let name = arg("PolicyName");
            let document = policies.inline.get(name).ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    "NoSuchEntity",
                    format!("The policy with name {name} cannot be found."),
                )
            })?;
            out.leaf(holder_field, arg(holder_field));
            out.leaf("PolicyName", name);
            out.leaf("PolicyDocument", &xml::encode_document(document));
        }
        "ListAttachedRolePolicies" | "ListAttachedUserPolicies" | "ListAttachedGroupPolicies" => {
            let (_, policies) = holder(account, action, form)?;
            out.open("AttachedPolicies");
            for arn in &policies.attached {
                out.open("member");
                out.leaf("PolicyName", arn.rsplit('/').next().unwrap_or(arn));
                out.leaf("PolicyArn", arn);
                out.close("member");
            }
            out.close("AttachedPolicies");
            out.leaf("IsTruncated", "false");
        }
        "GetPolicy" => {
            let policy = managed(account, arg("PolicyArn"))?;
            let name = policy.arn.rsplit('/').next().unwrap_or(&policy.arn);
            out.open("Policy");
            out.leaf("PolicyName", name);
            out.leaf("PolicyId", &xml::unique_id("ANPA", &policy.arn));
            out.leaf("Arn", &policy.arn);
            out.leaf("Path", "/");
            out.leaf("DefaultVersionId", "v1");
            out.leaf("AttachmentCount", "1");
            out.leaf("IsAttachable", "true");
            out.leaf("CreateDate", xml::CREATED);
            out.leaf("UpdateDate", xml::CREATED);
            out.close("Policy");
        }
        "GetPolicyVersion" => {
            let policy = managed(account, arg("PolicyArn"))?;
            if arg("VersionId") != "v1" {
                return Err((
                    StatusCode::NOT_FOUND,
                    "NoSuchEntity",
                    format!(
                        "Policy {} version {} does not exist or is not attachable.",
                        policy.arn,
                        arg("VersionId")
                    ),
                ));
            }
            out.open("PolicyVersion");
            out.leaf("Document", &xml::encode_document(&policy.document));
            out.leaf("VersionId", "v1");
            out.leaf("IsDefaultVersion", "true");
            out.leaf("CreateDate", xml::CREATED);
            out.close("PolicyVersion");
        }
        "SimulatePrincipalPolicy" => simulate::answer(account, form, &mut out)?,
        other => {
            return Err((
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("The fake IAM does not implement {other}"),
            ))
        }
    }
    Ok(out)
}

/// The role, user or group a `…RolePolicies`/`…UserPolicies`/`…GroupPolicies`
/// call names, with the form field that names it.
fn holder<'a>(
    account: &'a Account,
    action: &str,
    form: &Form,
) -> Result<(&'static str, &'a Policies), Failure> {
    let arg = |name: &str| form.get(name).unwrap_or_default().to_owned();
    if action.contains("Role") {
        let name = arg("RoleName");
        let role = account.role(&name).ok_or_else(|| no_such("role", &name))?;
        Ok(("RoleName", &role.policies))
    } else if action.contains("User") {
        let name = arg("UserName");
        let user = account.user(&name).ok_or_else(|| no_such("user", &name))?;
        Ok(("UserName", &user.policies))
    } else {
        let name = arg("GroupName");
        let group = account
            .group(&name)
            .ok_or_else(|| no_such("group", &name))?;
        Ok(("GroupName", &group.policies))
    }
}

fn user_named<'a>(account: &'a Account, name: &str) -> Result<&'a User, Failure> {
    account.user(name).ok_or_else(|| no_such("user", name))
}

fn managed<'a>(account: &'a Account, arn: &str) -> Result<&'a ManagedPolicy, Failure> {
    account.policy(arn).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "NoSuchEntity",
            format!("Policy {arn} does not exist or is not attachable."),
        )
    })
}

/// Path, name, id, ARN and creation date of a role, user or group.
fn entity(
    out: &mut Xml,
    account: &str,
    kind: &str,
    prefix: &str,
    name: &str,
    path: &Option<String>,
) {
    let path = path.as_deref().unwrap_or("/");
    let arn = format!("arn:aws:iam::{account}:{kind}{path}{name}");
    out.leaf("Path", path);
    let field = match kind {
        "role" => "Role",
        "user" => "User",
        _ => "Group",
    };
    out.leaf(&format!("{field}Name"), name);
    out.leaf(&format!("{field}Id"), &xml::unique_id(prefix, &arn));
    out.leaf("Arn", &arn);
    out.leaf("CreateDate", xml::CREATED);
}

fn tags(out: &mut Xml, tags: &BTreeMap<String, String>) {
    out.open("Tags");
    for (key, value) in tags {
        out.open("member");
        out.leaf("Key", key);
        out.leaf("Value", value);
        out.close("member");
    }
    out.close("Tags");
}
