//! Push targets: `registry[:port]/repository[:tag|@digest]`, parsed with the distribution
//! reference grammar plus the checks it leaves out (uppercase in a name, port range,
//! a tag and a digest at once).

use std::fmt;

use crate::digest::Digest;

/// Why a target reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid target reference {value:?}: {reason}")]
pub struct ReferenceError {
    pub value: String,
    pub reason: String,
}

/// Where a push goes: a repository on a registry, and how the pushed image is named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as written (docker.io for names without a host).
    pub registry: String,
    /// The host that is contacted (`index.docker.io` for docker.io).
    pub endpoint: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Target {
    pub fn parse(value: &str) -> Result<Target, ReferenceError> {
        let err =
            |reason: String| ReferenceError { value: value.chars().take(300).collect(), reason };
        check_form(value).map_err(&err)?;
        // The distribution reference grammar, checked by hand: a parser built on the grammar's
        // regular expression (oci-spec's) compiles it on first use, tens of milliseconds a run.
        let (name_and_tag, digest) = match value.split_once('@') {
            Some((n, d)) => (n, Some(d.parse::<Digest>().map_err(|e| err(e.reason))?)),
            None => (value, None),
        };
        let (name, tag) = match name_and_tag.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name_and_tag, None),
        };
        if let Some(t) = tag
            && !is_valid_tag(t)
        {
            return Err(err(format!("invalid reference format: {t:?} is not a valid tag")));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first.to_string(), rest.to_string()),
            _ => ("docker.io".to_string(), name.to_string()),
        };
        check_registry(&registry).map_err(&err)?;
        let repository = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        check_repository(&repository).map_err(&err)?;
        if tag.is_some() && digest.is_some() {
            return Err(err(
                "has both a tag and a digest; push by tag or by digest, not both".into()
            ));
        }
        let endpoint = endpoint_of(&registry);
        Ok(Target { endpoint, registry, repository, tag: tag.map(str::to_string), digest })
    }

    /// `registry/repository`, the name used in progress output and mount sources.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

/// Where a mirror (`--mirror`) goes: a registry and an optional path prefix, under which
/// every image of a bundle keeps its own repository path and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRoot {
    /// `host[:port]` as written (docker.io for a prefix without a host).
    pub registry: String,
    /// The host that is contacted (`index.docker.io` for docker.io).
    pub endpoint: String,
    /// Path prefix of every repository, without leading or trailing `/`.
    pub prefix: Option<String>,
}

impl MirrorRoot {
    /// Parses `registry[:port][/prefix]`: no tag and no digest (every image keeps its own).
    pub fn parse(value: &str) -> Result<MirrorRoot, ReferenceError> {
        let err =
            |reason: String| ReferenceError { value: value.chars().take(300).collect(), reason };
        check_form(value).map_err(&err)?;
        let no_tag = || {
            err("a mirror target is REGISTRY[/PREFIX], without a tag or digest: every image keeps its own".into())
        };
        if value.contains('@') {
            return Err(no_tag());
        }
        let trimmed = value.strip_suffix('/').unwrap_or(value);
        let (registry, prefix) = match trimmed.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first, Some(rest)),
            None if looks_like_host(trimmed) => (trimmed, None),
            _ => ("docker.io", Some(trimmed)),
        };
        check_registry(registry).map_err(&err)?;
        if let Some(p) = prefix {
            if p.rsplit('/').next().is_some_and(|last| last.contains(':')) {
                return Err(no_tag());
            }
            check_repository(p).map_err(&err)?;
        }
        Ok(MirrorRoot {
            registry: registry.to_string(),
            endpoint: endpoint_of(registry),
            prefix: prefix.map(str::to_string),
        })
    }

    /// The repository an image whose own path is `path` (`library/nginx`) lands in.
    pub fn repository(&self, path: &str) -> Result<Target, ReferenceError> {
        let repository = match &self.prefix {
            Some(p) => format!("{p}/{path}"),
            None => path.to_string(),
        };
        let err = |reason: String| ReferenceError {
            value: format!("{}/{repository}", self.registry),
            reason,
        };
        check_repository(&repository).map_err(err)?;
        Ok(Target {
            registry: self.registry.clone(),
            endpoint: self.endpoint.clone(),
            repository,
            tag: None,
            digest: None,
        })
    }
}

impl fmt::Display for MirrorRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.registry)?;
        if let Some(p) = &self.prefix {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// What a push names as its destination: one repository, or a mirror of a whole bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget {
    /// `registry/repository[:tag|@digest]`.
    Repository(Target),
    /// `registry[/prefix]`: every named image of the layout under its own path (`--mirror`).
    Mirror(MirrorRoot),
}

impl PushTarget {
    /// A target as the command line or `spec.target` gives it; `mirror` as `--mirror` or
    /// `spec.mirror` says.
    pub fn parse(value: &str, mirror: bool) -> Result<PushTarget, ReferenceError> {
        Ok(if mirror {
            PushTarget::Mirror(MirrorRoot::parse(value)?)
        } else {
            PushTarget::Repository(Target::parse(value)?)
        })
    }

    pub fn registry(&self) -> &str {
        match self {
            PushTarget::Repository(t) => &t.registry,
            PushTarget::Mirror(m) => &m.registry,
        }
    }

    /// The host that is contacted.
    pub fn endpoint(&self) -> &str {
        match self {
            PushTarget::Repository(t) => &t.endpoint,
            PushTarget::Mirror(m) => &m.endpoint,
        }
    }

    /// The one repository pushed to; `None` for a mirror.
    pub fn repository(&self) -> Option<&str> {
        match self {
            PushTarget::Repository(t) => Some(&t.repository),
            PushTarget::Mirror(_) => None,
        }
    }

    /// `registry/repository`, or `registry[/prefix]` for a mirror: where reports say the push
    /// went.
    pub fn repository_name(&self) -> String {
        match self {
            PushTarget::Repository(t) => t.repository_name(),
            PushTarget::Mirror(m) => m.to_string(),
        }
    }
}

impl From<Target> for PushTarget {
    fn from(t: Target) -> PushTarget {
        PushTarget::Repository(t)
    }
}

impl fmt::Display for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushTarget::Repository(t) => t.fmt(f),
            PushTarget::Mirror(m) => m.fmt(f),
        }
    }
}

/// Whether the first path component of a name is a registry host (`host.domain`,
/// `host:port`, `localhost`), as the distribution reference grammar tells them apart.
pub fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// The host contacted for a registry name: Docker Hub's API endpoint for `docker.io`.
fn endpoint_of(registry: &str) -> String {
    match registry {
        "docker.io" => "index.docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Refuses what no reference may look like: empty, padded, or with a URL scheme.
fn check_form(value: &str) -> Result<(), String> {
    if value.trim() != value || value.is_empty() {
        return Err("empty, or surrounded by whitespace".into());
    }
    if let Some(scheme) =
        ["http://", "https://", "docker://", "oci://"].iter().find(|s| value.starts_with(**s))
    {
        return Err(format!(
            "give the reference without the {scheme} prefix (use --plain-http for plain HTTP)"
        ));
    }
    Ok(())
}

/// How a manifest is addressed in a repository.
#[derive(Debug, Clone, Copy)]
pub enum TagOrDigest<'a> {
    Tag(&'a str),
    Digest(&'a Digest),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `host[:port]` or `[ipv6]:port`, each host label alphanumeric with inner dashes.
fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (ip, after) = rest.split_once(']').ok_or("unterminated [IPv6] host")?;
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} is not an IPv6 address"));
        }
        (None, after.strip_prefix(':'))
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!("invalid reference format: {host:?} is not a valid registry host"));
        }
    }
    if let Some(port) = port {
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) && !port.starts_with('+') => {}
            _ => return Err(format!("port {port:?} is not in 1..65535")),
        }
    }
    Ok(())
}

/// Path components of lowercase alphanumerics joined by `.`, `_`, `__` or dashes.
fn check_repository(repository: &str) -> Result<(), String> {
    if repository.len() > 255 {
        return Err("repository name must not be more than 255 characters".into());
    }
    if repository.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".into());
    }
    for component in repository.split('/') {
        let b = component.as_bytes();
        let valid = !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
            && !component.contains("..")
            && !component.contains("._")
            && !component.contains("_.")
            && !component.contains("___")
            && !component.contains(".-")
            && !component.contains("-.")
            && !component.contains("_-")
            && !component.contains("-_");
        if !valid {
            return Err(format!(
                "invalid reference format: {component:?} is not a valid repository path component"
            ));
        }
    }
    Ok(())
}

/// Whether `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
pub fn is_valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_targets() {
        let cases: &[(&str, &str, &str, Option<&str>, bool)] = &[
            ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", "team/app", Some("v1"), false),
            ("127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app", None, false),
            ("localhost:5000/app", "localhost:5000", "app", None, false),
            ("registry.example.com/a/b/c:1.0", "registry.example.com", "a/b/c", Some("1.0"), false),
            ("app:v2", "docker.io", "library/app", Some("v2"), false),
            ("localhost/a__b/c.d-e:x", "localhost", "a__b/c.d-e", Some("x"), false),
            ("[::1]:5000/app:v1", "[::1]:5000", "app", Some("v1"), false),
            ("team/app", "docker.io", "team/app", None, false),
        ];
        for (input, reg, repo, tag, _) in cases {
            let t = Target::parse(input).unwrap();
            assert_eq!(t.registry, *reg, "{input}");
            assert_eq!(t.repository, *repo, "{input}");
            assert_eq!(t.tag.as_deref(), *tag, "{input}");
            assert!(t.digest.is_none());
        }
        let t = Target::parse(&format!("127.0.0.1:5000/app@{D}")).unwrap();
        assert_eq!(t.digest.unwrap().to_string(), D);
        assert!(t.tag.is_none());
        assert_eq!(Target::parse("app").unwrap().endpoint, "index.docker.io");
    }

    #[test]
    fn refuses_bad_targets() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (" 127.0.0.1:5000/app", "whitespace"),
            ("127.0.0.1:5000/Team/app:v1", "lowercase"),
            ("Team/app", "lowercase"),
            ("127.0.0.1:99999/app", "port"),
            ("127.0.0.1:0/app", "port"),
            ("https://registry.example.com/app", "prefix"),
            (
                "127.0.0.1:5000/app:v1@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "both",
            ),
            ("127.0.0.1:5000/app@sha256:abc", "64 hex characters"),
            ("127.0.0.1:5000/app:bad tag", "format"),
            ("127.0.0.1:5000/a$$/b", "format"),
            ("127.0.0.1:5000/a..b", "format"),
            ("127.0.0.1:5000/-a", "format"),
            ("127.0.0.1:5000/a//b", "format"),
            (":justtag", "format"),
            ("bad_host.example.com/app", "format"),
            ("[zz]:5000/app", "ipv6"),
        ];
        for (input, want) in cases {
            let e = Target::parse(input).unwrap_err();
            assert!(e.to_string().to_lowercase().contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn mirror_roots() {
        let ok: &[(&str, &str, Option<&str>, &str)] = &[
            ("127.0.0.1:5000", "127.0.0.1:5000", None, "127.0.0.1:5000"),
            ("127.0.0.1:5000/", "127.0.0.1:5000", None, "127.0.0.1:5000"),
            ("127.0.0.1:5000/mirror", "127.0.0.1:5000", Some("mirror"), "127.0.0.1:5000/mirror"),
            (
                "registry.example.com/a/b",
                "registry.example.com",
                Some("a/b"),
                "registry.example.com/a/b",
            ),
            ("localhost", "localhost", None, "localhost"),
            ("myorg", "docker.io", Some("myorg"), "docker.io/myorg"),
        ];
        for (input, registry, prefix, shown) in ok {
            let m = MirrorRoot::parse(input).unwrap();
            assert_eq!(
                (m.registry.as_str(), m.prefix.as_deref(), m.to_string().as_str()),
                (*registry, *prefix, *shown),
                "{input}"
            );
        }
        assert_eq!(MirrorRoot::parse("myorg").unwrap().endpoint, "index.docker.io");
        let refused: &[(&str, &str)] = &[
            ("127.0.0.1:5000/mirror:v1", "without a tag"),
            (&format!("127.0.0.1:5000/mirror@{D}"), "without a tag"),
            ("127.0.0.1:5000/Mirror", "lowercase"),
            ("127.0.0.1:99999", "port"),
            ("https://127.0.0.1:5000", "prefix"),
            ("", "empty"),
            ("127.0.0.1:5000//x", "format"),
        ];
        for (input, want) in refused {
            let e = MirrorRoot::parse(input).unwrap_err().to_string();
            assert!(e.to_lowercase().contains(want), "{input}: {e}");
        }
        let m = MirrorRoot::parse("reg:5000/mirror").unwrap();
        let t = m.repository("library/nginx").unwrap();
        assert_eq!(t.repository_name(), "reg:5000/mirror/library/nginx");
        assert_eq!(
            MirrorRoot::parse("reg:5000").unwrap().repository("a/b").unwrap().repository,
            "a/b"
        );
        let long = "a".repeat(250);
        assert!(m.repository(&long).unwrap_err().to_string().contains("255"));
        assert_eq!(
            PushTarget::parse("reg:5000/mirror", true).unwrap().repository_name(),
            "reg:5000/mirror"
        );
        assert_eq!(PushTarget::parse("reg:5000/app", false).unwrap().repository(), Some("app"));
    }

    #[test]
    fn tags() {
        for ok in ["v1", "latest", "_x", "1.0.0-rc.1", &"a".repeat(128)] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a:b", "a/b", &"a".repeat(129), "é"] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }
}
