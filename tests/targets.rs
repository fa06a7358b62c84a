//! Target names: every accepted form resolves to the right instance, and bad
//! names exit 2 listing the accepted forms.

mod common;

use common::*;

#[test]
fn every_form_resolves() {
    let owner = caller().user_id;
    let instance = |id: &str, name: &str, resource: &str| {
        sagemaker_instance(id, &owner, name, resource, 1_700_000_000)
    };
    let env = Env::start(seed_with(vec![
        instance("mi-00000000000000001", "job", "training-job/job"),
        instance("mi-00000000000000002", "job", "processing-job/job"),
        instance("mi-00000000000000003", "job", "transform-job/job"),
        instance("mi-00000000000000004", "nb", "notebook-instance/nb"),
        instance(
            "mi-00000000000000005",
            "default",
            "app/d-abc123/my-space/JupyterLab/default",
        ),
    ]));
    for (target, id) in [
        ("job.training.sagemaker", "mi-00000000000000001"),
        ("job.processing.sagemaker", "mi-00000000000000002"),
        ("job.transform.sagemaker", "mi-00000000000000003"),
        ("nb.notebook.sagemaker", "mi-00000000000000004"),
        (
            "default.my-space.d-abc123.studio.sagemaker",
            "mi-00000000000000005",
        ),
        ("default.studio.sagemaker", "mi-00000000000000005"),
        ("mi-00000000000000004", "mi-00000000000000004"),
        ("ecs:cluster_task_container", "ecs:cluster_task_container"),
    ] {
        let (stdout, _) = assert_exit(&env.run(["list", target, "--json"]), 0);
        let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(rows[0]["instance_id"], id, "{target}: {stdout}");
    }
}

#[test]
fn bad_names_exit_2_with_the_accepted_forms() {
    let env = Env::start(seed_with(Vec::new()));
    for bad in [
        "job.lambda.sagemaker",
        "a.b.training.sagemaker",
        "bad_name.training.sagemaker",
        "training.sagemaker",
        "ecs:",
    ] {
        let output = env.run(["list", bad]);
        let (stdout, stderr) = assert_exit(&output, 2);
        assert!(stdout.is_empty(), "{bad}: {stdout}");
        assert!(stderr.contains(&format!("`{bad}`")), "{bad}: {stderr}");
        assert!(stderr.contains("accepted targets:"), "{bad}: {stderr}");
        assert!(
            stderr.contains("<app>.<space>.<domain>.studio.sagemaker"),
            "{bad}: {stderr}"
        );
    }
    // No AWS call is made for a bad name.
    assert!(env.fake.events().is_empty());
}

#[test]
fn proxy_and_connect_refuse_bad_names_the_same_way() {
    let env = Env::start(seed_with(Vec::new()));
    for command in ["proxy", "connect"] {
        let output = env.run([command, "job.lambda.sagemaker"]);
        let (stdout, stderr) = assert_exit(&output, 2);
        assert!(stdout.is_empty(), "{command}: {stdout}");
        assert!(stderr.contains("accepted targets:"), "{command}: {stderr}");
    }
    assert!(env.fake.events().is_empty());
}
