//! DescribeApp, ListApps, CreateApp and DeleteApp: a space's app, the
//! compute behind it. Creating one starts the space's SSH server with a new
//! host key; deleting one stops it. A created app is `Pending` for the
//! space's `pending_polls` DescribeApp answers, then `InService`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{find_space, register_instance, space_arn, space_sandbox, App, Space};
use crate::server::AppState;
use crate::ssm::{check_action, input, now, recorded, ApiError, ApiResult, Event};
use crate::world::World;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AppInput {
    domain_id: String,
    space_name: Option<String>,
    app_type: String,
    app_name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ListInput {
    domain_id_equals: Option<String>,
    space_name_equals: Option<String>,
}

fn app_arn(world: &World, space: &Space, app: &App) -> String {
    format!(
        "arn:aws:sagemaker:{}:{}:app/{}/{}/{}/{}",
        world.region,
        world.identity.account,
        space.domain_id,
        space.name,
        space.app_type.to_ascii_lowercase(),
        app.name
    )
}

fn app_json(world: &World, space: &Space, app: &App) -> Value {
    json!({
        "AppArn": app_arn(world, space, app),
        "AppType": space.app_type,
        "AppName": app.name,
        "DomainId": space.domain_id,
        "SpaceName": space.name,
        "Status": app.status,
        "CreationTime": app.creation_time,
        "ResourceSpec": super::resource_spec(space),
    })
}

/// The space an app call names, checking the app's type and name.
fn space_of<'w>(world: &'w mut World, req: &AppInput) -> Result<&'w mut Space, ApiError> {
    let space_name = req
        .space_name
        .as_deref()
        .ok_or_else(|| ApiError::validation("SpaceName is required for space apps"))?;
    let space = find_space(world, &req.domain_id, space_name)?;
    if space.app_type != req.app_type {
        return Err(ApiError::validation(format!(
            "App type {} does not match the space's app type {}",
            req.app_type, space.app_type
        )));
    }
    Ok(space)
}

fn app_not_found(req: &AppInput) -> ApiError {
    super::not_found(format!(
        "App with name {} of type {} does not exist in space {}",
        req.app_name,
        req.app_type,
        req.space_name.as_deref().unwrap_or_default()
    ))
}

pub(super) fn describe(state: &AppState, body: &[u8]) -> ApiResult {
    let req: AppInput = input(body)?;
    let mut world = state.world();
    let resource = format!("{}/{}", req.domain_id, req.app_name);
    let result = (|| {
        check_action(&world, "sagemaker:DescribeApp", &resource)?;
        let space = space_of(&mut world, &req)?;
        let app = space
            .app
            .as_mut()
            .filter(|a| a.name == req.app_name)
            .ok_or_else(|| app_not_found(&req))?;
        match app.status.as_str() {
            "Pending" if app.polls_left > 0 => app.polls_left -= 1,
            "Pending" => app.status = "InService".into(),
            "Deleting" => app.status = "Deleted".into(),
            _ => {}
        }
        let app = app.clone();
        let space = space.clone();
        Ok(app_json(&world, &space, &app))
    })();
    recorded(
        &mut world,
        "sagemaker:DescribeApp",
        Event::on(&resource),
        result,
    )
}

pub(super) fn list(state: &AppState, body: &[u8]) -> ApiResult {
    let req: ListInput = input(body)?;
    let mut world = state.world();
    let result = (|| {
        check_action(&world, "sagemaker:ListApps", "*")?;
        let apps: Vec<Value> = world
            .sagemaker
            .spaces
            .iter()
            .filter(|s| s.in_domain(req.domain_id_equals.as_deref()))
            .filter(|s| req.space_name_equals.as_ref().is_none_or(|n| *n == s.name))
            .filter_map(|s| s.app.as_ref().map(|a| app_json(&world, s, a)))
            .collect();
        Ok(json!({ "Apps": apps }))
    })();
    recorded(&mut world, "sagemaker:ListApps", Event::default(), result)
}

pub(super) async fn create(state: &AppState, body: &[u8]) -> ApiResult {
    let req: AppInput = input(body)?;
    let prepared = {
        let mut world = state.world();
        let resource = format!("{}/{}", req.domain_id, req.app_name);
        let result = (|| {
            check_action(&world, "sagemaker:CreateApp", &resource)?;
            let space = space_of(&mut world, &req)?;
            if let Some(app) = &space.app {
                if matches!(app.status.as_str(), "Pending" | "InService" | "Deleting") {
                    return Err(ApiError::new(
                        "ResourceInUse",
                        format!(
                            "App {} of type {} already exists in space {} with status {}",
                            app.name, req.app_type, space.name, app.status
                        ),
                    ));
                }
            }
            space.app = Some(App {
                name: req.app_name.clone(),
                status: if space.pending_polls == 0 {
                    "InService".into()
                } else {
                    "Pending".into()
                },
                creation_time: now(),
                remote_access: space.remote_access,
                polls_left: space.pending_polls.saturating_sub(1),
                failures_left: space.registration_failures,
            });
            let space = space.clone();
            let arn = space_arn(&world, &space.domain_id, &space.name);
            let app_arn = app_arn(&world, &space, space.app.as_ref().expect("just set"));
            Ok((arn, app_arn, space.sandbox))
        })();
        recorded(
            &mut world,
            "sagemaker:CreateApp",
            Event::on(&resource),
            result,
        )?
    };
    let (arn, app_arn, seeded) = prepared;
    let io = |e: std::io::Error| ApiError::new("InternalFailure", e.to_string());
    let sandbox = space_sandbox(&state.world, &state.sandboxes, &arn, seeded).map_err(io)?;
    let addr = state.spaces.start(&arn, &sandbox).await.map_err(io)?;
    let mut world = state.world();
    register_instance(&mut world, &state.sandboxes, &arn, Some(addr)).map_err(io)?;
    Ok(json!({ "AppArn": app_arn }))
}

pub(super) fn delete(state: &AppState, body: &[u8]) -> ApiResult {
    let req: AppInput = input(body)?;
    let mut world = state.world();
    let resource = format!("{}/{}", req.domain_id, req.app_name);
    let result = (|| {
        check_action(&world, "sagemaker:DeleteApp", &resource)?;
        let space = space_of(&mut world, &req)?;
        let app = space
            .app
            .as_mut()
            .filter(|a| a.name == req.app_name && a.status != "Deleted")
            .ok_or_else(|| app_not_found(&req))?;
        app.status = "Deleting".into();
        let (domain, name) = (space.domain_id.clone(), space.name.clone());
        let arn = space_arn(&world, &domain, &name);
        state.spaces.stop(&arn);
        register_instance(&mut world, &state.sandboxes, &arn, None)
            .map_err(|e| ApiError::new("InternalFailure", e.to_string()))?;
        Ok(json!({}))
    })();
    recorded(
        &mut world,
        "sagemaker:DeleteApp",
        Event::on(&resource),
        result,
    )
}
