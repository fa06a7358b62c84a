//! `doctor --space`'s image check: remote access needs SageMaker
//! Distribution 2.7 or newer, or a custom image that carries curl or wget,
//! unzip, tar and gzip (the developer guide's remote-access prerequisites).
//! The release shows as the ResourceSpec's `SageMakerImageVersionAlias`
//! (SemVer); an image ARN without a version runs the latest release; an
//! image version ARN's number (`…/sagemaker-distribution-cpu/30`) is
//! SageMaker's own counter, which does not say the release.

use super::report::Check;
use crate::path::space::SpaceInfo;

const ID: &str = "space-image";
/// The oldest SageMaker Distribution release remote access works with.
pub const MINIMUM: (u32, u32) = (2, 7);
/// What a custom image needs for the platform's server to install itself.
const CUSTOM_TOOLS: &str = "curl or wget, unzip, tar and gzip";

/// How an image ARN reads.
#[derive(Debug, PartialEq, Eq)]
enum Image<'a> {
    /// SageMaker Distribution; the version number of an image version ARN.
    Distribution(Option<&'a str>),
    Custom,
    None,
}

fn classify(arn: &str) -> Image<'_> {
    if arn.is_empty() {
        return Image::None;
    }
    let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
    let mut parts = resource.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("image"), Some(name), None) if name.starts_with("sagemaker-distribution") => {
            Image::Distribution(None)
        }
        (Some("image-version"), Some(name), version)
            if name.starts_with("sagemaker-distribution") =>
        {
            Image::Distribution(version)
        }
        _ => Image::Custom,
    }
}

/// `2.7.0`, `3.1`, `v2.10.1-gpu` → (major, minor).
fn release(alias: &str) -> Option<(u32, u32)> {
    let mut numbers = alias
        .trim_start_matches(['v', 'V'])
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    }
}

pub fn check(info: &SpaceInfo) -> Check {
    let name = info.host_name();
    let image = info.image_label();
    let settings = match info.app_type.as_str() {
        "CodeEditor" => "CodeEditorAppSettings",
        _ => "JupyterLabAppSettings",
    };
    let pick = format!(
        "pick SageMaker Distribution {}.{} or newer for the space in Studio (or: aws sagemaker update-space \
         --domain-id {} --space-name {} --space-settings '{{\"{settings}\":{{\"DefaultResourceSpec\":\
         {{\"SageMakerImageArn\":\"<the image ARN>\",\"SageMakerImageVersionAlias\":\"<2.7.0 or newer>\"}}}}}}'), \
         then restart it: sm-ssh space enable {name} --restart --yes",
        MINIMUM.0, MINIMUM.1, info.domain, info.space
    );
    match (classify(&info.image), info.image_alias.as_deref()) {
        (Image::Custom, _) => Check::warn(
            ID,
            format!("{name} runs the custom image {image}: remote access needs {CUSTOM_TOOLS} in it"),
            format!("make sure the image installs {CUSTOM_TOOLS} (e.g. RUN apt-get install -y curl unzip tar gzip in its Dockerfile)"),
        ),
        (Image::None, None) => Check::warn(
            ID,
            format!("DescribeSpace and DescribeApp name no image for {name} (the domain's default runs)"),
            pick,
        ),
        (_, Some(alias)) => match release(alias) {
            Some(found) if found >= MINIMUM => Check::pass(
                ID,
                format!("{name} runs SageMaker Distribution {alias} (remote access needs {}.{} or newer)", MINIMUM.0, MINIMUM.1),
            ),
            Some(_) => Check::fail(
                ID,
                format!("{name} runs SageMaker Distribution {alias}; remote access needs {}.{} or newer", MINIMUM.0, MINIMUM.1),
                pick,
            ),
            None => Check::warn(
                ID,
                format!("{name} runs {image}, whose alias {alias:?} is not a release number"),
                pick,
            ),
        },
        (Image::Distribution(None), None) => Check::pass(
            ID,
            format!("{name} runs the latest SageMaker Distribution ({image})"),
        ),
        (Image::Distribution(Some(number)), None) => Check::warn(
            ID,
            format!(
                "{name} runs SageMaker Distribution image version {number}, which does not say its release \
                 (remote access needs {}.{} or newer)",
                MINIMUM.0, MINIMUM.1
            ),
            pick,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    const SMD: &str = "arn:aws:sagemaker:us-east-1:081325390199:image/sagemaker-distribution-cpu";

    fn info(image: &str, alias: Option<&str>) -> SpaceInfo {
        SpaceInfo {
            domain: "d-1".into(),
            space: "demo".into(),
            image: image.into(),
            image_alias: alias.map(Into::into),
            ..SpaceInfo::default()
        }
    }

    #[test]
    fn releases_compare_by_major_and_minor() {
        assert_eq!(release("2.7.0"), Some((2, 7)));
        assert_eq!(release("v2.10.1-gpu"), Some((2, 10)));
        assert_eq!(release("latest"), None);
        assert!(release("2.10.0").unwrap() >= MINIMUM);
        assert!(release("2.6.3").unwrap() < MINIMUM);
    }

    #[test]
    fn each_image_gets_its_verdict() {
        let status = |image: &str, alias: Option<&str>| check(&info(image, alias)).status;
        assert_eq!(status(SMD, Some("3.0.0")), Status::Pass);
        assert_eq!(status(SMD, Some("2.7.0")), Status::Pass);
        assert_eq!(status(SMD, Some("2.6.1")), Status::Fail);
        assert_eq!(status(SMD, None), Status::Pass);
        let numbered =
            "arn:aws:sagemaker:us-east-1:081325390199:image-version/sagemaker-distribution-gpu/30";
        assert_eq!(status(numbered, None), Status::Warn);
        let custom = "arn:aws:sagemaker:us-east-1:123456789012:image/my-team-image";
        let verdict = check(&info(custom, None));
        assert_eq!(verdict.status, Status::Warn);
        assert!(
            verdict.detail.contains("curl or wget, unzip, tar and gzip"),
            "{}",
            verdict.detail
        );
        assert_eq!(status("", None), Status::Warn);
    }
}
