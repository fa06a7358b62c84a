//! Reading a principal's IAM policies (inline, attached, and for users their
//! groups'), trust policy and tags, so doctor can evaluate them locally.

use aws_sdk_iam::Client;
use serde_json::Value;

use super::Failure;
use crate::policy::eval::Policy;

/// An IAM role as doctor needs it.
pub struct Role {
    pub name: String,
    pub arn: String,
    pub trust: Value,
    pub tags: Vec<(String, String)>,
}

/// The last path segment of a role or user ARN (`…:role/service-role/X` → `X`).
pub fn name_from_arn(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// IAM returns policy documents URL-encoded (RFC 3986); moto sometimes not.
pub fn decode_document(text: &str) -> String {
    if text.trim_start().starts_with('{') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse(name: String, document: &str) -> Result<Policy, Failure> {
    Policy::parse(&name, &decode_document(document))
        .map_err(|error| Failure::Other(format!("{error:#}")))
}

pub async fn role(iam: &Client, name: &str) -> Result<Role, Failure> {
    let output = iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("iam:GetRole", e))?;
    let role = output
        .role
        .ok_or_else(|| Failure::Other("GetRole answered without a role".into()))?;
    let trust = role
        .assume_role_policy_document
        .as_deref()
        .map(decode_document)
        .map(|text| serde_json::from_str(&text).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    let tags = role
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|tag| (tag.key, tag.value))
        .collect();
    Ok(Role {
        name: role.role_name,
        arn: role.arn,
        trust,
        tags,
    })
}

/// Every item of a paginated IAM listing, or the failure naming its permission.
macro_rules! all_items {
    ($request:expr, $permission:literal) => {
        $request
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| Failure::from_sdk($permission, e))
    };
}

/// An IAM identity that holds inline and attached policies.
#[derive(Clone, Copy)]
enum Principal<'a> {
    Role(&'a str),
    User(&'a str),
    Group(&'a str),
}

impl Principal<'_> {
    /// How an inline policy of this principal is named in doctor's findings.
    fn inline_label(self, policy: &str) -> String {
        match self {
            Principal::Role(_) | Principal::User(_) => format!("inline:{policy}"),
            Principal::Group(group) => format!("group:{group}:{policy}"),
        }
    }

    async fn inline_names(self, iam: &Client) -> Result<Vec<String>, Failure> {
        match self {
            Principal::Role(name) => all_items!(
                iam.list_role_policies().role_name(name),
                "iam:ListRolePolicies"
            ),
            Principal::User(name) => all_items!(
                iam.list_user_policies().user_name(name),
                "iam:ListUserPolicies"
            ),
            Principal::Group(name) => all_items!(
                iam.list_group_policies().group_name(name),
                "iam:ListGroupPolicies"
            ),
        }
    }

    async fn inline_document(self, iam: &Client, policy: &str) -> Result<String, Failure> {
        Ok(match self {
            Principal::Role(name) => {
                iam.get_role_policy()
                    .role_name(name)
                    .policy_name(policy)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk("iam:GetRolePolicy", e))?
                    .policy_document
            }
            Principal::User(name) => {
                iam.get_user_policy()
                    .user_name(name)
                    .policy_name(policy)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk("iam:GetUserPolicy", e))?
                    .policy_document
            }
            Principal::Group(name) => {
                iam.get_group_policy()
                    .group_name(name)
                    .policy_name(policy)
                    .send()
                    .await
                    .map_err(|e| Failure::from_sdk("iam:GetGroupPolicy", e))?
                    .policy_document
            }
        })
    }

    async fn attached_arns(self, iam: &Client) -> Result<Vec<Option<String>>, Failure> {
        let attached = match self {
            Principal::Role(name) => all_items!(
                iam.list_attached_role_policies().role_name(name),
                "iam:ListAttachedRolePolicies"
            ),
            Principal::User(name) => all_items!(
                iam.list_attached_user_policies().user_name(name),
                "iam:ListAttachedUserPolicies"
            ),
            Principal::Group(name) => all_items!(
                iam.list_attached_group_policies().group_name(name),
                "iam:ListAttachedGroupPolicies"
            ),
        }?;
        Ok(attached
            .into_iter()
            .map(|policy| policy.policy_arn)
            .collect())
    }

    /// The inline policies, then the attached ones, in the order IAM lists them.
    async fn policies(self, iam: &Client, out: &mut Vec<Policy>) -> Result<(), Failure> {
        for name in self.inline_names(iam).await? {
            let document = self.inline_document(iam, &name).await?;
            out.push(parse(self.inline_label(&name), &document)?);
        }
        for arn in self.attached_arns(iam).await?.into_iter().flatten() {
            out.push(managed_policy(iam, &arn).await?);
        }
        Ok(())
    }
}

/// The inline and attached policies of a role.
pub async fn role_policies(iam: &Client, role: &str) -> Result<Vec<Policy>, Failure> {
    let mut out = Vec::new();
    Principal::Role(role).policies(iam, &mut out).await?;
    Ok(out)
}

/// The inline and attached policies of a user and of its groups, and its tags.
pub async fn user_policies(
    iam: &Client,
    user: &str,
) -> Result<(Vec<Policy>, Vec<(String, String)>), Failure> {
    let mut out = Vec::new();
    Principal::User(user).policies(iam, &mut out).await?;
    let groups = all_items!(
        iam.list_groups_for_user().user_name(user),
        "iam:ListGroupsForUser"
    )?;
    for group in groups {
        Principal::Group(&group.group_name)
            .policies(iam, &mut out)
            .await?;
    }
    let tags = iam
        .list_user_tags()
        .user_name(user)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("iam:ListUserTags", e))?
        .tags
        .into_iter()
        .map(|tag| (tag.key, tag.value))
        .collect();
    Ok((out, tags))
}

/// The default version of a managed policy.
async fn managed_policy(iam: &Client, arn: &str) -> Result<Policy, Failure> {
    let policy = iam
        .get_policy()
        .policy_arn(arn)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("iam:GetPolicy", e))?
        .policy
        .ok_or_else(|| Failure::Other(format!("GetPolicy {arn} answered without a policy")))?;
    let version = policy
        .default_version_id
        .ok_or_else(|| Failure::Other(format!("policy {arn} has no default version")))?;
    let document = iam
        .get_policy_version()
        .policy_arn(arn)
        .version_id(version)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("iam:GetPolicyVersion", e))?
        .policy_version
        .and_then(|v| v.document)
        .ok_or_else(|| Failure::Other(format!("policy {arn} has no document")))?;
    parse(format!("managed:{arn}"), &document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_url_encoded_documents() {
        assert_eq!(
            decode_document("%7B%22a%22%3A%20%22b%2Fc%22%7D"),
            r#"{"a": "b/c"}"#
        );
        assert_eq!(decode_document(r#"{"a":"%41"}"#), r#"{"a":"%41"}"#);
        assert_eq!(decode_document("%7Bbad%zz"), "{bad%zz");
    }

    #[test]
    fn names_from_arns() {
        assert_eq!(
            name_from_arn("arn:aws:iam::1:role/service-role/Exec"),
            "Exec"
        );
        assert_eq!(name_from_arn("arn:aws:iam::1:user/alice"), "alice");
    }
}
