//! Spec checks that need no API call. A failure is permanent: it stalls the resource with
//! a reason until the spec changes.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::crd::ImagePushSpec;
use crate::platform::Platform;
use crate::reference::Target;

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
    for mount in super::job::WORKER_MOUNTS {
        let mount = Path::new(mount);
        if mount.starts_with(root) || (root.starts_with(mount) && mount != Path::new("/tmp")) {
            return Err(format!("overlaps the worker's mount {}", mount.display()));
        }
    }
    Ok(())
}

/// Checks everything that can be checked without the API.
pub fn validate(spec: &ImagePushSpec, allowed_roots: &[PathBuf]) -> Result<Target, Invalid> {
    let target =
        Target::parse(&spec.target).map_err(|e| invalid("ReferenceInvalid", e.to_string()))?;
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
            if pvc.claim_name.is_empty() {
                return Err(invalid(
                    "SpecInvalid",
                    "source.persistentVolumeClaim.claimName is empty",
                ));
            }
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
    if let Some(ca) = spec.connection.as_ref().and_then(|c| c.ca.as_ref())
        && ca.secret_name.is_some() == ca.config_map_name.is_some()
    {
        return Err(invalid(
            "SpecInvalid",
            "connection.ca: set exactly one of secretName and configMapName",
        ));
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
    use crate::crd::HostPathSource;

    fn spec() -> ImagePushSpec {
        ImagePushSpec::from_claim("layouts", Some("app"), "registry.example.com/team/app:v1")
    }

    #[test]
    fn accepts_a_plain_spec() {
        let t = validate(&spec(), &[]).unwrap();
        assert_eq!(t.repository, "team/app");
    }

    #[test]
    fn refuses_bad_specs_with_reasons() {
        let roots = vec![PathBuf::from("/var/lib/images")];
        type Edit = fn(&mut ImagePushSpec);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (|s| s.target = "Reg/Upper:v1".into(), "ReferenceInvalid", "lowercase"),
            (|s| s.target = "r:70000/app".into(), "ReferenceInvalid", "port"),
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
        for ok in ["/var/lib/images", "/data", "/tmp/builds", "/var/run/builds"] {
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
            ("/var/run", "/var/run/imagepush/credentials"),
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
