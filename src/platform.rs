//! Platforms (`os/arch[/variant]`): parsing, strict matching for `--platform`, and the
//! host-platform preference order used when an index has to fall back to one manifest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An OCI platform as it appears in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// A platform with no `os.version` and no `os.features`, taken as given (not normalized).
    pub fn new(
        os: impl Into<String>,
        architecture: impl Into<String>,
        variant: Option<&str>,
    ) -> Self {
        Platform {
            architecture: architecture.into(),
            os: os.into(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The canonical form, as containerd's `platforms.Normalize`: names lowercased, `macos` is
    /// `darwin`, architecture aliases resolved (`x86_64` is `amd64`, `aarch64` is `arm64`, `i386` is
    /// `386`, `armhf` is `arm/v7`, `armel` is `arm/v6`), default variants spelled one way
    /// (`arm64/v8` and `amd64/v1` have no variant, `arm` without one is `arm/v7`).
    /// `os.version` and `os.features` are kept as they are.
    pub fn normalized(&self) -> Platform {
        let (architecture, variant) = normalize_arch(&self.architecture, self.variant.as_deref());
        Platform {
            architecture,
            os: normalize_os(&self.os),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
            variant,
        }
    }

    /// The platform of the machine this runs on, in GOOS/GOARCH names (`linux/amd64`,
    /// `linux/arm64`, `darwin/arm64`, ...). A 32-bit ARM host is taken to be `arm/v7`.
    pub fn host() -> Platform {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let little_endian = cfg!(target_endian = "little");
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc" => ("ppc", None),
            "powerpc64" if little_endian => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "mips" if little_endian => ("mipsle", None),
            "mips64" if little_endian => ("mips64le", None),
            "loongarch64" => ("loong64", None),
            "wasm32" => ("wasm", None),
            // s390x, riscv64, mips, mips64, sparc64 have the same name in both worlds.
            other => (other, None),
        };
        Platform::new(os, arch, variant).normalized()
    }

    /// Whether `self` and `other` name the same os, architecture and variant once both are
    /// normalized: what `--platform` selects (containerd's `platforms.OnlyStrict`). `linux/arm64`
    /// matches `linux/arm64/v8` and `linux/arm` matches `linux/arm/v7`, but `linux/arm/v7` does not
    /// match `linux/arm/v6`. `os.version` and `os.features` are not compared.
    pub fn matches_strict(&self, other: &Platform) -> bool {
        let (a, b) = (self.normalized(), other.normalized());
        a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }

    /// How well a host of platform `self` runs `candidate`, in containerd's `platforms.Only(host)`
    /// order: `Some(0)` for the host's own platform, larger numbers for platforms it can run less
    /// natively, `None` for platforms it cannot run. The os must match.
    ///
    /// - `amd64/vN` runs `amd64/vN`, `amd64/vN-1`, ..., `amd64` (v1), then `386`;
    /// - `arm64` runs `arm64`, then `arm/v8`, `arm/v7`, `arm/v6`, `arm/v5`
    ///   (`arm64/v8.N` and `arm64/v9.N` first run the lower `arm64` variants);
    /// - `arm/vN` runs `arm/vN` down to `arm/v5`;
    /// - any other architecture runs only itself.
    pub fn host_preference(&self, candidate: &Platform) -> Option<u32> {
        let host = self.normalized();
        let candidate = candidate.normalized();
        if candidate.os != host.os {
            return None;
        }
        compatible_platforms(&host.architecture, host.variant.as_deref())
            .iter()
            .position(|(arch, variant)| {
                *arch == candidate.architecture && *variant == candidate.variant
            })
            .map(|rank| rank as u32)
    }
}

/// The index of the candidate that a host of platform `host` runs best (lowest
/// [`Platform::host_preference`], the first one on ties), or `None` when it runs none of them.
pub fn best_host_match<'a>(
    host: &Platform,
    candidates: impl IntoIterator<Item = &'a Platform>,
) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (index, candidate) in candidates.into_iter().enumerate() {
        if let Some(rank) = host.host_preference(candidate)
            && best.is_none_or(|(_, best_rank)| rank < best_rank)
        {
            best = Some((index, rank));
        }
    }
    best.map(|(index, _)| index)
}

/// The (architecture, variant) pairs, normalized, that a host of this normalized architecture
/// and variant runs, best first.
fn compatible_platforms(arch: &str, variant: Option<&str>) -> Vec<(String, Option<String>)> {
    let mut vector = vec![(arch.to_owned(), variant.map(str::to_owned))];
    match arch {
        "amd64" => {
            if let Some(level) = variant.and_then(version_number).filter(|level| *level > 1) {
                for lower in (1..level).rev() {
                    vector.push(normalize_arch("amd64", Some(&format!("v{lower}"))));
                }
            }
            vector.push(("386".to_owned(), None));
        }
        "arm" => vector.extend(arm32_below(variant)),
        "arm64" => {
            let variant = variant.unwrap_or("v8");
            let (major, minor) = match variant.trim_start_matches('v').split_once('.') {
                Some((major, minor)) => (major.parse::<u32>().ok(), minor.parse::<u32>().ok()),
                None => (variant.trim_start_matches('v').parse::<u32>().ok(), Some(0)),
            };
            if let (Some(major @ (8 | 9)), Some(minor)) = (major, minor) {
                let mut v8_minor = minor;
                if major == 9 {
                    for lower in (0..minor).rev() {
                        vector.push(arm64_variant(9, lower));
                    }
                    // v9.0 diverged from v8.5: v9.x runs v8.(x+5) and below.
                    v8_minor = minor + 5;
                    vector.push(arm64_variant(8, v8_minor));
                }
                for lower in (0..v8_minor).rev() {
                    vector.push(arm64_variant(8, lower));
                }
                vector.push(("arm".to_owned(), Some("v8".to_owned())));
                vector.extend(arm32_below(Some("v8")));
            }
        }
        _ => {}
    }
    vector
}

fn arm64_variant(major: u32, minor: u32) -> (String, Option<String>) {
    let variant = if minor == 0 { format!("v{major}") } else { format!("v{major}.{minor}") };
    normalize_arch("arm64", Some(&variant))
}

/// `arm/vN-1` down to `arm/v5` for an `arm/vN` host.
fn arm32_below(variant: Option<&str>) -> Vec<(String, Option<String>)> {
    match variant.and_then(version_number) {
        Some(level) if level > 5 => {
            (5..level).rev().map(|lower| ("arm".to_owned(), Some(format!("v{lower}")))).collect()
        }
        _ => Vec::new(),
    }
}

/// `vN` (or `N`) as a number.
fn version_number(variant: &str) -> Option<u32> {
    variant.strip_prefix('v').unwrap_or(variant).parse().ok()
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    if os == "macos" { "darwin".to_owned() } else { os }
}

/// containerd's `normalizeArch`: the canonical architecture and variant.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.unwrap_or("").to_ascii_lowercase();
    let (arch, variant) = match arch.as_str() {
        "i386" => ("386".to_owned(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            ("amd64".to_owned(), if variant == "v1" { String::new() } else { variant })
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" => String::new(),
                _ => variant,
            };
            ("arm64".to_owned(), variant)
        }
        "armhf" => ("arm".to_owned(), "v7".to_owned()),
        "armel" => ("arm".to_owned(), "v6".to_owned()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_owned(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_owned(), variant)
        }
        _ => (arch, variant),
    };
    (arch, (!variant.is_empty()).then_some(variant))
}

/// A `--platform` value that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {value:?}: {reason}")]
pub struct PlatformError {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parses `os/arch[/variant]` as docker's `--platform` does and returns the
    /// [normalized](Platform::normalized) platform. Each part is one or more of
    /// `[A-Za-z0-9._-]`; case is folded. `os.version` syntax (`windows(10.0.17763)`) and the
    /// one-part short forms (`linux`, `arm64`) are not accepted.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| PlatformError { value: value.to_owned(), reason };
        if value.is_empty() {
            return Err(error("empty; expected os/arch[/variant]".to_owned()));
        }
        if value.contains('*') {
            return Err(error("wildcards are not supported".to_owned()));
        }
        let parts: Vec<&str> = value.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(error(format!("expected os/arch[/variant], got {} part(s)", parts.len())));
        }
        for (name, part) in ["os", "architecture", "variant"].iter().zip(&parts) {
            if part.is_empty() {
                return Err(error(format!("{name} is empty")));
            }
            if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
                return Err(error(format!("{name} {part:?} may only contain [A-Za-z0-9._-]")));
            }
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()).normalized())
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`, the `--platform` syntax; `os.version` and `os.features` are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref() {
            Some(variant) if !variant.is_empty() => write!(f, "/{variant}"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn raw(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform::new(os, arch, variant)
    }

    #[test]
    fn parses_and_normalizes() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            ("linux/amd64", "linux", "amd64", None),
            ("linux/amd64/v1", "linux", "amd64", None),
            ("linux/amd64/v3", "linux", "amd64", Some("v3")),
            ("linux/x86_64", "linux", "amd64", None),
            ("linux/x86-64/v2", "linux", "amd64", Some("v2")),
            ("linux/arm64", "linux", "arm64", None),
            ("linux/arm64/v8", "linux", "arm64", None),
            ("linux/arm64/8", "linux", "arm64", None),
            ("linux/aarch64", "linux", "arm64", None),
            ("linux/arm64/v8.2", "linux", "arm64", Some("v8.2")),
            ("linux/arm", "linux", "arm", Some("v7")),
            ("linux/arm/7", "linux", "arm", Some("v7")),
            ("linux/arm/v6", "linux", "arm", Some("v6")),
            ("linux/arm/5", "linux", "arm", Some("v5")),
            ("linux/armhf", "linux", "arm", Some("v7")),
            ("linux/armel", "linux", "arm", Some("v6")),
            ("linux/i386", "linux", "386", None),
            ("linux/386", "linux", "386", None),
            ("Linux/AMD64", "linux", "amd64", None),
            ("LINUX/ARM/V6", "linux", "arm", Some("v6")),
            ("macos/arm64", "darwin", "arm64", None),
            ("windows/amd64", "windows", "amd64", None),
            ("linux/s390x", "linux", "s390x", None),
            ("linux/ppc64le", "linux", "ppc64le", None),
            ("linux/riscv64", "linux", "riscv64", None),
            ("freebsd/my_arch.1-x/some-variant", "freebsd", "my_arch.1-x", Some("some-variant")),
        ];
        for (input, os, arch, variant) in cases {
            let got = p(input);
            assert_eq!(got, raw(os, arch, *variant), "parsing {input:?}");
        }
    }

    #[test]
    fn rejects_garbage() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("linux", "got 1 part(s)"),
            ("amd64", "got 1 part(s)"),
            ("linux/amd64/v8/extra", "got 4 part(s)"),
            ("linux/", "architecture is empty"),
            ("/amd64", "os is empty"),
            ("linux//amd64", "architecture is empty"),
            ("linux/amd64/", "variant is empty"),
            ("linux/amd 64", "architecture \"amd 64\" may only contain"),
            (" linux/amd64", "os \" linux\" may only contain"),
            ("linux/amd64\n", "architecture \"amd64\\n\" may only contain"),
            ("linux/amd64\0", "may only contain"),
            ("linux/\u{1b}[31m", "may only contain"),
            ("linux/*", "wildcards"),
            ("windows(10.0.17763)/amd64", "os \"windows(10.0.17763)\" may only contain"),
            ("linux/ämd64", "may only contain"),
            ("linux,amd64", "got 1 part(s)"),
            ("linux:amd64", "got 1 part(s)"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<Platform>().expect_err(input);
            assert_eq!(err.value, *input);
            assert!(
                err.reason.contains(reason),
                "{input:?}: reason {:?} lacks {reason:?}",
                err.reason
            );
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("invalid platform {input:?}: ")),
                "{input:?}: message {message:?}"
            );
            assert!(
                !message.contains('\n') && !message.contains('\0'),
                "{message:?} is not escaped"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "linux/amd64",
            "linux/amd64/v2",
            "linux/arm64",
            "linux/arm64/v8.2",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/386",
            "windows/amd64",
            "darwin/arm64",
        ] {
            let parsed = p(input);
            assert_eq!(parsed.to_string(), input);
            assert_eq!(p(&parsed.to_string()), parsed);
        }
        // Non-canonical input displays in canonical form.
        for (input, shown) in [
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/x86_64/v1", "linux/amd64"),
            ("Linux/AArch64", "linux/arm64"),
        ] {
            assert_eq!(p(input).to_string(), shown, "{input:?}");
        }
        // An empty variant from a descriptor is not shown.
        assert_eq!(raw("linux", "amd64", Some("")).to_string(), "linux/amd64");
    }

    #[test]
    fn matches_strictly_after_normalization() {
        let cases: &[(Platform, Platform, bool)] = &[
            (p("linux/arm64"), raw("linux", "arm64", Some("v8")), true),
            (p("linux/arm64/v8"), raw("linux", "arm64", None), true),
            (p("linux/arm64"), raw("linux", "aarch64", None), true),
            (p("linux/arm"), raw("linux", "arm", Some("v7")), true),
            (p("linux/arm/v7"), raw("linux", "arm", None), true),
            (p("linux/amd64"), raw("linux", "amd64", Some("v1")), true),
            (p("linux/amd64"), raw("Linux", "x86_64", None), true),
            (p("linux/amd64"), raw("linux", "amd64", Some("")), true),
            (p("linux/arm/v7"), raw("linux", "arm", Some("v6")), false),
            (p("linux/arm"), raw("linux", "arm", Some("v6")), false),
            (p("linux/arm64"), raw("linux", "arm64", Some("v8.2")), false),
            (p("linux/amd64"), raw("linux", "amd64", Some("v2")), false),
            (p("linux/amd64"), raw("linux", "386", None), false),
            (p("linux/arm64"), raw("linux", "arm", Some("v8")), false),
            (p("linux/amd64"), raw("windows", "amd64", None), false),
            (p("linux/amd64"), raw("unknown", "unknown", None), false),
        ];
        for (wanted, candidate, expected) in cases {
            assert_eq!(wanted.matches_strict(candidate), *expected, "{wanted} vs {candidate:?}");
            assert_eq!(candidate.matches_strict(wanted), *expected, "{candidate:?} vs {wanted}");
        }
        // os.version and os.features are ignored.
        let mut windows = p("windows/amd64");
        windows.os_version = Some("10.0.17763.1".to_owned());
        windows.os_features = vec!["win32k".to_owned()];
        assert!(p("windows/amd64").matches_strict(&windows));
    }

    #[test]
    fn host_preference_follows_containerd_order() {
        /// A host and, for each candidate, its expected rank.
        type Case<'a> = (&'a str, &'a [(&'a str, Option<u32>)]);
        let cases: &[Case] = &[
            (
                "linux/amd64",
                &[
                    ("linux/amd64", Some(0)),
                    ("linux/amd64/v1", Some(0)),
                    ("linux/386", Some(1)),
                    ("linux/amd64/v2", None),
                    ("linux/arm64", None),
                    ("windows/amd64", None),
                ],
            ),
            (
                "linux/amd64/v3",
                &[
                    ("linux/amd64/v3", Some(0)),
                    ("linux/amd64/v2", Some(1)),
                    ("linux/amd64", Some(2)),
                    ("linux/386", Some(3)),
                    ("linux/amd64/v4", None),
                ],
            ),
            (
                "linux/arm64",
                &[
                    ("linux/arm64", Some(0)),
                    ("linux/arm64/v8", Some(0)),
                    ("linux/arm/v8", Some(1)),
                    ("linux/arm/v7", Some(2)),
                    ("linux/arm", Some(2)),
                    ("linux/arm/v6", Some(3)),
                    ("linux/arm/v5", Some(4)),
                    ("linux/arm64/v8.1", None),
                    ("linux/amd64", None),
                    ("darwin/arm64", None),
                ],
            ),
            (
                "linux/arm64/v8.2",
                &[
                    ("linux/arm64/v8.2", Some(0)),
                    ("linux/arm64/v8.1", Some(1)),
                    ("linux/arm64", Some(2)),
                    ("linux/arm/v8", Some(3)),
                    ("linux/arm/v7", Some(4)),
                ],
            ),
            (
                "linux/arm64/v9",
                &[
                    ("linux/arm64/v9", Some(0)),
                    ("linux/arm64/v8.5", Some(1)),
                    ("linux/arm64", Some(6)),
                    ("linux/arm/v8", Some(7)),
                ],
            ),
            (
                "linux/arm/v7",
                &[
                    ("linux/arm/v7", Some(0)),
                    ("linux/arm", Some(0)),
                    ("linux/arm/v6", Some(1)),
                    ("linux/arm/v5", Some(2)),
                    ("linux/arm/v8", None),
                    ("linux/arm64", None),
                ],
            ),
            ("linux/arm/v5", &[("linux/arm/v5", Some(0)), ("linux/arm/v6", None)]),
            ("linux/386", &[("linux/386", Some(0)), ("linux/amd64", None)]),
            ("linux/s390x", &[("linux/s390x", Some(0)), ("linux/amd64", None)]),
        ];
        for (host, candidates) in cases {
            let host = p(host);
            for (candidate, expected) in *candidates {
                assert_eq!(
                    host.host_preference(&p(candidate)),
                    *expected,
                    "{host} runs {candidate}"
                );
            }
        }
        // Descriptors from an index are compared in normalized form too.
        assert_eq!(p("linux/arm64").host_preference(&raw("linux", "arm64", Some("v8"))), Some(0));
        assert_eq!(p("linux/amd64").host_preference(&raw("unknown", "unknown", None)), None);
    }

    #[test]
    fn best_host_match_picks_lowest_rank_first_on_ties() {
        let candidates = |list: &[&str]| -> Vec<Platform> { list.iter().map(|s| p(s)).collect() };
        let cases: &[(&str, &[&str], Option<usize>)] = &[
            ("linux/amd64", &["linux/arm64", "linux/amd64", "linux/386"], Some(1)),
            ("linux/amd64", &["linux/386", "linux/arm64"], Some(0)),
            ("linux/amd64", &["linux/arm64", "linux/arm/v7"], None),
            ("linux/amd64", &[], None),
            ("linux/arm64", &["linux/arm/v6", "linux/arm/v7", "linux/amd64"], Some(1)),
            ("linux/arm64", &["linux/arm/v7", "linux/arm64/v8", "linux/arm64"], Some(1)),
            ("linux/arm/v7", &["linux/arm64", "linux/arm/v5", "linux/arm/v6"], Some(2)),
            ("linux/amd64/v2", &["linux/amd64", "linux/amd64/v3", "linux/amd64/v2"], Some(2)),
        ];
        for (host, list, expected) in cases {
            let list = candidates(list);
            assert_eq!(best_host_match(&p(host), &list), *expected, "{host} among {list:?}");
        }
        // Attestation entries (unknown/unknown) are never picked.
        let index = [raw("unknown", "unknown", None), p("linux/amd64")];
        assert_eq!(best_host_match(&p("linux/amd64"), &index), Some(1));
    }

    #[test]
    fn host_is_normalized_and_runs_itself() {
        let host = Platform::host();
        assert_eq!(host, host.normalized());
        assert_eq!(host.host_preference(&host), Some(0));
        assert!(host.matches_strict(&host.to_string().parse().unwrap()));
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
            assert_eq!(host.to_string(), "linux/arm64");
        }
    }

    #[test]
    fn serde_shape_is_unchanged() {
        let json = r#"{"architecture":"arm","os":"linux","variant":"v7"}"#;
        let platform: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(platform, p("linux/arm/v7"));
        assert_eq!(serde_json::to_string(&platform).unwrap(), json);
    }
}
