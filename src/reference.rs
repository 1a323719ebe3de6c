//! Push targets: `registry[:port]/repository[:tag|@digest]`, parsed with oci-client's
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
        let err = |reason: String| ReferenceError {
            value: value.chars().take(300).collect(),
            reason,
        };
        if value.trim() != value || value.is_empty() {
            return Err(err("empty, or surrounded by whitespace".into()));
        }
        if let Some(scheme) = ["http://", "https://", "docker://", "oci://"]
            .iter()
            .find(|s| value.starts_with(**s))
        {
            return Err(err(format!(
                "give the reference without the {scheme} prefix (use --plain-http for plain HTTP)"
            )));
        }
        // oci-client (oci-spec) accepts a first component with uppercase letters as a host;
        // docker refuses it unless it looks like a host (has '.' or ':' or is localhost).
        let first = value.split('/').next().unwrap_or_default();
        if value.contains('/')
            && first.chars().any(|c| c.is_ascii_uppercase())
            && !first.contains('.')
            && !first.contains(':')
        {
            return Err(err("repository names must be lowercase".into()));
        }
        if let Some((_, digest)) = value.split_once('@') {
            digest.parse::<Digest>().map_err(|e| err(e.reason))?;
        }
        let parsed = oci_client::Reference::try_from(value).map_err(|e| {
            let reason = match e {
                oci_client::ParseError::ReferenceInvalidFormat
                    if value.chars().any(|c| c.is_ascii_uppercase()) =>
                {
                    "invalid format (repository names must be lowercase)".to_string()
                }
                other => other.to_string(),
            };
            err(reason)
        })?;
        let registry = parsed.registry().to_string();
        if let Some((_, port)) = registry.rsplit_once(':')
            && !registry.ends_with(']')
        {
            match port.parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => {}
                _ => return Err(err(format!("port {port:?} is not in 1..65535"))),
            }
        }
        let repository = parsed.repository().to_string();
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(err("repository names must be lowercase".into()));
        }
        let digest = match parsed.digest() {
            Some(d) => Some(d.parse::<Digest>().map_err(|e| err(e.reason))?),
            None => None,
        };
        // oci-spec's parser fills in `latest` for a bare name; an untagged target means "all tags"
        // here, so take the tag only when the user wrote one.
        let name_part = value.split('@').next().unwrap_or(value);
        let last = name_part.rsplit('/').next().unwrap_or(name_part);
        let tag = if last.contains(':') { parsed.tag().map(str::to_string) } else { None };
        if tag.is_some() && digest.is_some() {
            return Err(err(
                "has both a tag and a digest; push by tag or by digest, not both".into(),
            ));
        }
        Ok(Target {
            endpoint: parsed.resolve_registry().to_string(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name used in progress output and mount sources.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// An oci-client reference for this repository with the given tag or digest.
    pub fn oci_reference(&self, tag_or_digest: TagOrDigest<'_>) -> oci_client::Reference {
        match tag_or_digest {
            TagOrDigest::Tag(t) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                t.to_string(),
            ),
            TagOrDigest::Digest(d) => oci_client::Reference::with_digest(
                self.registry.clone(),
                self.repository.clone(),
                d.to_string(),
            ),
        }
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
            ("127.0.0.1:5000/app:v1@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "both"),
            ("127.0.0.1:5000/app@sha256:abc", "64 hex characters"),
            ("127.0.0.1:5000/app:bad tag", "format"),
            ("127.0.0.1:5000/a$$/b", "format"),
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
