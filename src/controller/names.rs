//! The API server's rules for names, label keys and values and Secret/ConfigMap keys, as
//! pure checks. The controller applies them to what it copies from a spec into a worker Job,
//! so a spec the API server would refuse in a Pod stalls with a reason before any Job exists
//! (instead of a Job the API server answers with 422). Each check returns what is wrong, in
//! the API server's words where it has them.

/// A lowercase RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1 to 63 characters"));
    }
    let ok_inner = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ok_inner || !ends(s.as_bytes()[0]) || !ends(s.as_bytes()[s.len() - 1]) {
        return Err(format!(
            "{s:?} is not a lowercase RFC 1123 label (lower case alphanumeric characters or '-', \
             starting and ending with an alphanumeric character)"
        ));
    }
    Ok(())
}

/// A lowercase RFC 1123 subdomain: dot-separated parts of lower case alphanumeric characters
/// or '-', each starting and ending with an alphanumeric character, at most 253 characters in
/// all (the API server sets no limit per part). Names of Secrets, ConfigMaps, claims and nodes
/// are subdomains.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1 to 253 characters"));
    }
    let part_ok = |p: &str| {
        let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        !p.is_empty()
            && edge(p.as_bytes()[0])
            && edge(p.as_bytes()[p.len() - 1])
            && p.bytes().all(|b| edge(b) || b == b'-')
    };
    if !s.split('.').all(part_ok) {
        return Err(format!(
            "{s:?} is not a lowercase RFC 1123 subdomain (lower case alphanumeric characters, '-' \
             or '.', starting and ending with an alphanumeric character)"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters (the name part of a
/// label key, and a non-empty label value).
fn qualified_name_part(s: &str) -> bool {
    let edge = |b: u8| b.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && edge(s.as_bytes()[0])
        && edge(s.as_bytes()[s.len() - 1])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && dns_subdomain(p).is_err()
    {
        return Err(format!("label key {s:?}: the prefix must be a lowercase RFC 1123 subdomain"));
    }
    if !qualified_name_part(name) {
        return Err(format!(
            "label key {s:?}: the name part must be 1 to 63 alphanumeric characters, '-', '_' or \
             '.', starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumeric characters, `-`, `_` or `.`, starting and
/// ending with an alphanumeric character.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || qualified_name_part(s) {
        Ok(())
    } else {
        Err(format!(
            "label value {s:?} must be empty or 1 to 63 alphanumeric characters, '-', '_' or '.', \
             starting and ending with an alphanumeric character"
        ))
    }
}

/// A key of a Secret or ConfigMap: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or
/// `..` and not starting with `..`.
pub fn config_key(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("key {s:?} must be 1 to 253 characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
        return Err(format!("key {s:?} must consist of alphanumeric characters, '-', '_' or '.'"));
    }
    if s == "." || s.starts_with("..") {
        return Err(format!("key {s:?} must not be '.' or '..' or start with '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_server() {
        type Check = fn(&str) -> Result<(), String>;
        let cases: &[(Check, &str, bool)] = &[
            (dns_label, "push", true),
            (dns_label, "a-1", true),
            (dns_label, "-a", false),
            (dns_label, "a-", false),
            (dns_label, "A", false),
            (dns_label, "a.b", false),
            (dns_label, &"a".repeat(64), false),
            (dns_label, "", false),
            (dns_subdomain, "node-1.example.com", true),
            (dns_subdomain, "regcred", true),
            (dns_subdomain, "Node_1", false),
            (dns_subdomain, "a..b", false),
            (dns_subdomain, ".a", false),
            (dns_subdomain, "", false),
            (dns_subdomain, &"a".repeat(100), true),
            (dns_subdomain, &format!("{}.b", "a".repeat(200)), true),
            (dns_subdomain, "a-.b", false),
            (dns_subdomain, &"a".repeat(254), false),
            (label_key, "kubernetes.io/hostname", true),
            (label_key, "disk", true),
            (label_key, "Disk_Type.x", true),
            (label_key, "example.com/", false),
            (label_key, "/x", false),
            (label_key, "Bad Prefix/x", false),
            (label_key, "a/b/c", false),
            (label_key, "", false),
            (label_key, "x-", false),
            (label_key, &format!("p/{}", "a".repeat(64)), false),
            (label_value, "", true),
            (label_value, "ssd", true),
            (label_value, "v1.2_3-x", true),
            (label_value, "-x", false),
            (label_value, "a b", false),
            (label_value, &"a".repeat(64), false),
            (config_key, "ca.crt", true),
            (config_key, ".dockerconfigjson", true),
            (config_key, "", false),
            (config_key, ".", false),
            (config_key, "..data", false),
            (config_key, "a/b", false),
            (config_key, "a b", false),
        ];
        for (check, input, ok) in cases {
            assert_eq!(check(input).is_ok(), *ok, "{input:?}: {:?}", check(input));
        }
    }
}
