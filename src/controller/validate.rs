//! Spec checks that need no API call. A failure is permanent: it stalls the resource with
//! a reason until the spec changes.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::names::{config_key, dns_subdomain, label_key, label_value};
use super::policy::{self, TargetPattern};
use crate::crd::ImagePushSpec;
use crate::platform::Platform;
use crate::reference::PushTarget;

/// A spec problem: a condition reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

fn invalid(reason: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { reason, message: message.into() }
}

/// Default push timeout when the spec has none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parses `90s`, `30m`, `1h30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().ok()?;
        number.clear();
        total = total.checked_add(n.checked_mul(match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        })?)?;
    }
    if !number.is_empty() || total == 0 {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// The most specific of `roots` that `path` lies under, when `path` is absolute and has no
/// `.`/`..` components. The worker gets that root mounted and resolves the path inside it.
pub fn host_path_root<'a>(path: &str, roots: &'a [PathBuf]) -> Option<&'a Path> {
    let p = Path::new(path);
    if !p.is_absolute()
        || p.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return None;
    }
    roots
        .iter()
        .filter(|root| p.starts_with(root))
        .max_by_key(|root| root.components().count())
        .map(PathBuf::as_path)
}

/// Whether `path` may be a hostPath source (see `host_path_root`).
pub fn host_path_allowed(path: &str, roots: &[PathBuf]) -> bool {
    host_path_root(path, roots).is_some()
}

/// Directories of the worker image (distroless: the binary, libraries, CA certificates, users)
/// and of what kubelet mounts into every container. A root at, above or under one of them
/// would replace the image's files there.
const IMAGE_DIRS: [&str; 7] =
    ["/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/var/run/secrets"];

/// Whether `root` can be an allowed hostPath root: an absolute path without `.`/`..`, not `/`,
/// not in the kernel's or the devices' trees, and clear of the worker's own mounts (it is
/// mounted into the worker at its own path).
pub fn check_allowed_root(root: &Path) -> Result<(), String> {
    if !root.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if root.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return Err("must not contain . or .. components".into());
    }
    if root.parent().is_none() {
        return Err("must not be / (the worker's own filesystem)".into());
    }
    for system in ["/proc", "/sys", "/dev"] {
        if root.starts_with(system) {
            return Err(format!("must not be under {system}"));
        }
    }
    for image_dir in IMAGE_DIRS {
        let dir = Path::new(image_dir);
        if dir.starts_with(root) || root.starts_with(dir) {
            return Err(format!(
                "would hide the worker image's own files in {image_dir} (a root is mounted at its own path)"
            ));
        }
    }
    for mount in super::job::WORKER_MOUNTS {
        let mount = Path::new(mount);
        if mount.starts_with(root) || (root.starts_with(mount) && mount != Path::new("/tmp")) {
            return Err(format!("overlaps the worker's mount {}", mount.display()));
        }
    }
    Ok(())
}

/// A value the worker Job carries into its pod, checked by the API server's rule for it.
fn name_field(
    field: &str,
    value: &str,
    rule: fn(&str) -> Result<(), String>,
) -> Result<(), Invalid> {
    rule(value).map_err(|why| invalid("SpecInvalid", format!("{field}: {why}")))
}

/// Checks everything that can be checked without the API.
pub fn validate(spec: &ImagePushSpec, allowed_roots: &[PathBuf]) -> Result<PushTarget, Invalid> {
    validate_with(spec, allowed_roots, &[])
}

/// `validate`, and the target must be one `allowed_targets` allow (none: any).
pub fn validate_with(
    spec: &ImagePushSpec,
    allowed_roots: &[PathBuf],
    allowed_targets: &[TargetPattern],
) -> Result<PushTarget, Invalid> {
    let target = PushTarget::parse(&spec.target, spec.mirror)
        .map_err(|e| invalid("ReferenceInvalid", e.to_string()))?;
    policy::check(allowed_targets, &target).map_err(|why| invalid("TargetNotAllowed", why))?;
    if spec.mirror && spec.source.reference.is_some() {
        return Err(invalid(
            "SpecInvalid",
            "source.ref cannot be set with mirror: a mirror pushes every named image of the layout",
        ));
    }
    if let Some(p) = &spec.platform {
        p.parse::<Platform>().map_err(|e| invalid("PlatformInvalid", e.to_string()))?;
    }
    match (&spec.source.persistent_volume_claim, &spec.source.host_path) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                "SpecInvalid",
                "source: set exactly one of persistentVolumeClaim and hostPath",
            ));
        }
        (Some(pvc), None) => {
            name_field("source.persistentVolumeClaim.claimName", &pvc.claim_name, dns_subdomain)?;
            if let Some(path) = &pvc.path {
                let p = Path::new(path);
                if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(invalid(
                        "SpecInvalid",
                        format!(
                            "source.persistentVolumeClaim.path {path:?} must be relative and must not contain '..'"
                        ),
                    ));
                }
            }
        }
        (None, Some(hp)) => {
            if hp.node_name.is_some() && hp.node_selector.is_some() {
                return Err(invalid(
                    "SpecInvalid",
                    "source.hostPath: set at most one of nodeName and nodeSelector",
                ));
            }
            if let Some(node) = &hp.node_name {
                name_field("source.hostPath.nodeName", node, dns_subdomain)?;
            }
            for (key, value) in hp.node_selector.iter().flatten() {
                name_field("source.hostPath.nodeSelector", key, label_key)?;
                name_field("source.hostPath.nodeSelector", value, label_value)?;
            }
            if !host_path_allowed(&hp.path, allowed_roots) {
                let roots: Vec<String> =
                    allowed_roots.iter().map(|r| r.display().to_string()).collect();
                return Err(invalid(
                    "HostPathNotAllowed",
                    format!(
                        "source.hostPath.path {:?} is not under an allowed root ({})",
                        hp.path,
                        if roots.is_empty() {
                            "hostPath sources are disabled".to_string()
                        } else {
                            roots.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    if let Some(r) = &spec.source.reference
        && r.trim().is_empty()
    {
        return Err(invalid("SpecInvalid", "source.ref is empty"));
    }
    if let Some(t) = &spec.timeout
        && parse_duration(t).is_none()
    {
        return Err(invalid(
            "SpecInvalid",
            format!("timeout {t:?} is not a duration such as 90s, 30m or 1h"),
        ));
    }
    if spec.max_concurrent_uploads == Some(0) {
        return Err(invalid("SpecInvalid", "maxConcurrentUploads must be at least 1"));
    }
    if let Some(account) = &spec.service_account_name {
        name_field("serviceAccountName", account, dns_subdomain)?;
    }
    if let Some(secret) = &spec.credentials_secret {
        name_field("credentialsSecret.name", &secret.name, dns_subdomain)?;
    }
    if let Some(ca) = spec.connection.as_ref().and_then(|c| c.ca.as_ref()) {
        if ca.secret_name.is_some() == ca.config_map_name.is_some() {
            return Err(invalid(
                "SpecInvalid",
                "connection.ca: set exactly one of secretName and configMapName",
            ));
        }
        if let Some(name) = &ca.secret_name {
            name_field("connection.ca.secretName", name, dns_subdomain)?;
        }
        if let Some(name) = &ca.config_map_name {
            name_field("connection.ca.configMapName", name, dns_subdomain)?;
        }
        if let Some(key) = &ca.key {
            name_field("connection.ca.key", key, config_key)?;
        }
    }
    for m in &spec.mount_from {
        if m.trim().is_empty() || m.contains(char::is_whitespace) {
            return Err(invalid(
                "SpecInvalid",
                format!("mountFrom entry {m:?} is not a repository name"),
            ));
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CaSource, Connection, HostPathSource, LocalObjectReference, Source};

    fn spec() -> ImagePushSpec {
        ImagePushSpec::from_claim("layouts", Some("app"), "registry.example.com/team/app:v1")
    }

    fn ca(secret: Option<&str>, config_map: Option<&str>, key: Option<&str>) -> Connection {
        Connection {
            ca: Some(CaSource {
                secret_name: secret.map(Into::into),
                config_map_name: config_map.map(Into::into),
                key: key.map(Into::into),
            }),
            ..Default::default()
        }
    }

    fn host(node_name: Option<&str>, selector: Option<(&str, &str)>) -> Source {
        Source {
            persistent_volume_claim: None,
            host_path: Some(HostPathSource {
                path: "/var/lib/images/app".into(),
                node_name: node_name.map(Into::into),
                node_selector: selector.map(|(k, v)| [(k.to_string(), v.to_string())].into()),
            }),
            reference: None,
        }
    }

    #[test]
    fn accepts_a_plain_spec() {
        let t = validate(&spec(), &[]).unwrap();
        assert_eq!(t.repository(), Some("team/app"));
        let mut mirror = spec();
        mirror.mirror = true;
        mirror.target = "registry.example.com/mirror".into();
        let t = validate(&mirror, &[]).unwrap();
        assert_eq!((t.repository(), t.to_string().as_str()), (None, "registry.example.com/mirror"));
    }

    #[test]
    fn refuses_bad_specs_with_reasons() {
        let roots = vec![PathBuf::from("/var/lib/images")];
        type Edit = fn(&mut ImagePushSpec);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (|s| s.target = "Reg/Upper:v1".into(), "ReferenceInvalid", "lowercase"),
            (|s| s.target = "r:70000/app".into(), "ReferenceInvalid", "port"),
            (
                |s| s.mirror = true, // the target has a tag
                "ReferenceInvalid",
                "without a tag or digest",
            ),
            (
                |s| {
                    s.mirror = true;
                    s.target = "registry.example.com/mirror".into();
                    s.source.reference = Some("v1".into());
                },
                "SpecInvalid",
                "source.ref cannot be set with mirror",
            ),
            (|s| s.platform = Some("linux/".into()), "PlatformInvalid", "linux/"),
            (
                |s| s.source.persistent_volume_claim.as_mut().unwrap().path = Some("../x".into()),
                "SpecInvalid",
                "..",
            ),
            (
                |s| s.source.persistent_volume_claim.as_mut().unwrap().path = Some("/abs".into()),
                "SpecInvalid",
                "relative",
            ),
            (
                |s| {
                    s.source.host_path = Some(HostPathSource {
                        path: "/x".into(),
                        node_name: None,
                        node_selector: None,
                    })
                },
                "SpecInvalid",
                "exactly one",
            ),
            (|s| s.source.persistent_volume_claim = None, "SpecInvalid", "exactly one"),
            (|s| s.timeout = Some("soon".into()), "SpecInvalid", "timeout"),
            (|s| s.max_concurrent_uploads = Some(0), "SpecInvalid", "at least 1"),
            (|s| s.mount_from = vec!["a b".into()], "SpecInvalid", "mountFrom"),
            (
                |s| {
                    s.source.persistent_volume_claim.as_mut().unwrap().claim_name =
                        "Build_Out".into()
                },
                "SpecInvalid",
                "claimName",
            ),
            (
                |s| s.service_account_name = Some("Builder".into()),
                "SpecInvalid",
                "serviceAccountName",
            ),
            (
                |s| s.credentials_secret = Some(LocalObjectReference { name: "Reg Cred".into() }),
                "SpecInvalid",
                "credentialsSecret.name",
            ),
            (|s| s.connection = Some(ca(Some(""), None, None)), "SpecInvalid", "ca.secretName"),
            (
                |s| s.connection = Some(ca(None, Some("a..b"), None)),
                "SpecInvalid",
                "ca.configMapName",
            ),
            (|s| s.connection = Some(ca(Some("ca"), None, Some(""))), "SpecInvalid", "ca.key"),
            (|s| s.connection = Some(ca(Some("ca"), None, Some("a/b"))), "SpecInvalid", "ca.key"),
            (
                |s| s.connection = Some(ca(Some("ca"), Some("ca"), None)),
                "SpecInvalid",
                "exactly one",
            ),
            (|s| s.source = host(Some("Node_1"), None), "SpecInvalid", "hostPath.nodeName"),
            (
                |s| s.source = host(None, Some(("bad key", "x"))),
                "SpecInvalid",
                "hostPath.nodeSelector: label key",
            ),
            (
                |s| s.source = host(None, Some(("disk", "-ssd"))),
                "SpecInvalid",
                "hostPath.nodeSelector: label value",
            ),
        ];
        for (edit, reason, text) in cases {
            let mut s = spec();
            edit(&mut s);
            let e = validate(&s, &roots).unwrap_err();
            assert_eq!(e.reason, reason, "{e:?}");
            assert!(e.message.contains(text), "{e:?}");
        }
    }

    #[test]
    fn host_paths_only_under_allowed_roots() {
        let roots = vec![PathBuf::from("/var/lib/images")];
        let mut s = spec();
        s.source.persistent_volume_claim = None;
        for (path, ok) in [
            ("/var/lib/images/app", true),
            ("/var/lib/images", true),
            ("/var/lib/imagesX/app", false),
            ("/var/lib/images/../../etc", false),
            ("/etc", false),
            ("relative/path", false),
        ] {
            s.source.host_path = Some(HostPathSource {
                path: path.into(),
                node_name: Some("n1".into()),
                node_selector: None,
            });
            assert_eq!(validate(&s, &roots).is_ok(), ok, "{path}");
        }
        s.source.host_path = Some(HostPathSource {
            path: "/var/lib/images/a".into(),
            node_name: None,
            node_selector: None,
        });
        let e = validate(&s, &[]).unwrap_err();
        assert_eq!(e.reason, "HostPathNotAllowed");
        assert!(e.message.contains("disabled"));
    }

    #[test]
    fn the_most_specific_root_is_mounted() {
        let roots = vec![PathBuf::from("/data"), PathBuf::from("/data/images")];
        assert_eq!(host_path_root("/data/images/app", &roots), Some(Path::new("/data/images")));
        assert_eq!(host_path_root("/data/other", &roots), Some(Path::new("/data")));
        assert_eq!(host_path_root("/data/images/../x", &roots), None);
        assert_eq!(host_path_root("/elsewhere", &roots), None);
    }

    #[test]
    fn allowed_roots_stay_clear_of_the_system_and_the_worker() {
        for ok in ["/var/lib/images", "/data", "/tmp/builds", "/var/run/builds", "/opt/x", "/srv/x"]
        {
            assert_eq!(check_allowed_root(Path::new(ok)), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("relative", "absolute"),
            ("/", "not be /"),
            ("/data/../etc", ".."),
            ("/proc/1/root", "/proc"),
            ("/dev", "/dev"),
            ("/sys/fs", "/sys"),
            ("/tmp", "/tmp"),
            ("/layout", "/layout"),
            ("/layout/x", "/layout"),
            ("/var/run", "/var/run/secrets"),
            ("/var", "/var/run/secrets"),
            ("/usr", "/usr"),
            ("/usr/local/bin", "/usr"),
            ("/usr/share/images", "/usr"),
            ("/lib", "/lib"),
            ("/lib64", "/lib64"),
            ("/lib/x86_64-linux-gnu", "/lib"),
            ("/bin", "/bin"),
            ("/sbin", "/sbin"),
            ("/etc", "/etc"),
            ("/etc/ssl", "/etc"),
            ("/var/run/secrets", "/var/run/secrets"),
            ("/var/run/secrets/kubernetes.io", "/var/run/secrets"),
            ("/var/run/imagepush/ca/x", "/var/run/imagepush/ca"),
        ] {
            let e = check_allowed_root(Path::new(bad)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        for bad in ["", "0s", "5", "m", "1d", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
