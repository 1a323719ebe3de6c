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
        if value.trim() != value || value.is_empty() {
            return Err(err("empty, or surrounded by whitespace".into()));
        }
        if let Some(scheme) =
            ["http://", "https://", "docker://", "oci://"].iter().find(|s| value.starts_with(**s))
        {
            return Err(err(format!(
                "give the reference without the {scheme} prefix (use --plain-http for plain HTTP)"
            )));
        }
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
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
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
        let endpoint = match registry.as_str() {
            // Docker Hub's API endpoint for the `docker.io` name.
            "docker.io" => "index.docker.io".to_string(),
            other => other.to_string(),
        };
        Ok(Target { endpoint, registry, repository, tag: tag.map(str::to_string), digest })
    }

    /// `registry/repository`, the name used in progress output and mount sources.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
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
    fn tags() {
        for ok in ["v1", "latest", "_x", "1.0.0-rc.1", &"a".repeat(128)] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a:b", "a/b", &"a".repeat(129), "é"] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }
}
