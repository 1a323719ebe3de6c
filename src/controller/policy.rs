//! What the cluster admin allows ImagePush objects to push to (`--allowed-target`): patterns
//! of repositories. Without any, every target is allowed (the chart says so). Pure, so every
//! rule is table-tested.

use std::str::FromStr;

use crate::reference::PushTarget;

/// `registry[:port]/path`: `*` stands for any characters within one part (never a `/`), and
/// a last part `**` for any repository at or below the parts before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPattern {
    text: String,
    registry: String,
    parts: Vec<String>,
    any_below: bool,
}

impl FromStr for TargetPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (registry, path) = text
            .split_once('/')
            .ok_or("a pattern is registry[:port]/path, such as ghcr.io/acme/** or registry.internal:5000/team-*/app")?;
        let mut parts: Vec<String> = path.split('/').map(String::from).collect();
        let any_below = parts.last().is_some_and(|p| p == "**");
        if any_below {
            parts.pop();
        }
        let bad = |p: &str| {
            p.is_empty()
                || p.contains("**")
                || p.chars()
                    .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-*".contains(c)))
        };
        if registry.is_empty() || registry.contains("**") || parts.iter().any(|p| bad(p)) {
            return Err(format!(
                "{text:?}: the path must be lower-case repository parts, `*` within a part, and `**` only as the last part"
            ));
        }
        if parts.is_empty() && !any_below {
            return Err(format!("{text:?} names no repository"));
        }
        Ok(TargetPattern {
            text: text.to_string(),
            registry: registry.to_string(),
            parts,
            any_below,
        })
    }
}

impl TargetPattern {
    /// Whether pushes to `registry/repository` are allowed.
    fn matches(&self, registry: &str, repository: &str) -> bool {
        let parts: Vec<&str> = repository.split('/').collect();
        glob(&self.registry, registry)
            && if self.any_below {
                parts.len() >= self.parts.len() && self.parts_match(&parts)
            } else {
                parts.len() == self.parts.len() && self.parts_match(&parts)
            }
    }

    /// Whether every repository a mirror under `registry/prefix` may fill is allowed: only a
    /// `**` pattern at or above the prefix covers them all.
    fn covers(&self, registry: &str, prefix: Option<&str>) -> bool {
        let parts: Vec<&str> = prefix.map(|p| p.split('/').collect()).unwrap_or_default();
        self.any_below
            && glob(&self.registry, registry)
            && parts.len() >= self.parts.len()
            && self.parts_match(&parts)
    }

    fn parts_match(&self, parts: &[&str]) -> bool {
        self.parts.iter().zip(parts).all(|(p, s)| glob(p, s))
    }
}

/// `*` in `pattern` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else { return false };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

/// `Ok` when `patterns` allow `target` (no patterns: everything), else why not.
pub fn check(patterns: &[TargetPattern], target: &PushTarget) -> Result<(), String> {
    if patterns.is_empty() {
        return Ok(());
    }
    let (allowed, what) = match target {
        PushTarget::Repository(t) => (
            patterns.iter().any(|p| p.matches(&t.registry, &t.repository)),
            format!("{}/{}", t.registry, t.repository),
        ),
        PushTarget::Mirror(m) => (
            patterns.iter().any(|p| p.covers(&m.registry, m.prefix.as_deref())),
            format!("every repository under {m}"),
        ),
    };
    if allowed {
        return Ok(());
    }
    let list: Vec<&str> = patterns.iter().map(|p| p.text.as_str()).collect();
    Err(format!(
        "pushes to {what} are not allowed in this cluster (allowed: {}); ask the cluster admin, or choose an allowed target",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<TargetPattern> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn allowed(list: &[&str], target: &str, mirror: bool) -> bool {
        check(&patterns(list), &PushTarget::parse(target, mirror).unwrap()).is_ok()
    }

    #[test]
    fn targets_match_repository_patterns() {
        let list =
            ["ghcr.io/acme/**", "registry.internal:5000/team-*/app", "docker.io/library/nginx"];
        for (target, ok) in [
            ("ghcr.io/acme/app:v1", true),
            ("ghcr.io/acme/a/b/c:v1", true),
            ("ghcr.io/acme", true),
            ("ghcr.io/acmex/app:v1", false),
            ("ghcr.io/other/app:v1", false),
            ("registry.internal:5000/team-a/app:v1", true),
            (
                "registry.internal:5000/team-a/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                true,
            ),
            ("registry.internal:5000/team-a/app/sub:v1", false),
            ("registry.internal:5000/team/app:v1", false),
            ("registry.internal/team-a/app:v1", false),
            ("nginx:1.27", true),
            ("docker.io/library/nginx", true),
            ("evil.example.com/acme/app:v1", false),
        ] {
            assert_eq!(allowed(&list, target, false), ok, "{target}");
        }
        // No patterns: everything.
        assert!(allowed(&[], "anywhere.example.com/x/y:z", false));
        // Registry globs, and `**` right after it.
        assert!(allowed(&["*.internal.example.com/**"], "reg.internal.example.com/x/y:1", false));
        assert!(!allowed(&["*.internal.example.com/**"], "reg.example.com/x/y:1", false));
    }

    #[test]
    fn a_mirror_needs_a_pattern_that_covers_everything_under_its_prefix() {
        let list = ["reg:5000/mirror/**", "reg:5000/exact/app"];
        for (root, ok) in [
            ("reg:5000/mirror", true),
            ("reg:5000/mirror/sub", true),
            ("reg:5000", false),
            ("reg:5000/other", false),
            ("reg:5000/exact", false),
            ("reg:5000/exact/app", false),
        ] {
            assert_eq!(allowed(&list, root, true), ok, "{root}");
        }
        assert!(allowed(&["reg:5000/**"], "reg:5000", true));
        let e = check(&patterns(&list), &PushTarget::parse("reg:5000/other", true).unwrap())
            .unwrap_err();
        assert!(
            e.contains("every repository under reg:5000/other") && e.contains("reg:5000/mirror/**"),
            "{e}"
        );
    }

    #[test]
    fn bad_patterns_are_refused_naming_them() {
        for bad in [
            "ghcr.io",
            "ghcr.io/",
            "ghcr.io/Acme/**",
            "ghcr.io/a/**/b",
            "ghcr.io/a**",
            "/a/b",
            "ghcr.io/a//b",
        ] {
            let e = bad.parse::<TargetPattern>().unwrap_err();
            assert!(e.contains(bad) || e.contains("registry[:port]/path"), "{bad}: {e}");
        }
        assert!("ghcr.io/**".parse::<TargetPattern>().is_ok());
    }
}
