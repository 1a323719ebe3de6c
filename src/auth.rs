//! Registry credentials from the files people already have: a docker `config.json`, and the
//! Kubernetes Secret formats (`kubernetes.io/dockerconfigjson`, the legacy
//! `kubernetes.io/dockercfg`, and `kubernetes.io/basic-auth`) mounted as a directory.
//!
//! This module only reads; it never writes a credential anywhere. Credentials that live in a
//! credential helper (a `credHelpers` entry, or a `credsStore`) are asked for with docker's
//! helper protocol ([`helper`]), except for a Kubernetes Secret, whose helpers are never run.
//! Credentials never appear in `Debug` or `Display` output, in logs or in errors: secrets are held
//! in [`Secret`], and errors name the file, the registry and the field, never a value read from
//! the file.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Map, Value};

pub mod helper;

/// A secret string: `Debug` and `Display` print `<redacted>`; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call this only where the value is sent to the registry.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What to authenticate to a registry with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// No credentials: anonymous access (a token endpoint may still hand out an anonymous token).
    Anonymous,
    /// A username and password (or a personal access token used as a password).
    Basic { username: String, password: Secret },
    /// docker config `identitytoken`: an OAuth2 refresh token, used at the token endpoint.
    IdentityToken(Secret),
}

/// Why credentials could not be read. No variant carries a value read from the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused or failed a read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not JSON at all. The file is parsed into an untyped value first, so the cause only ever
    /// reports a position (serde_json echoes content only for typed deserialization).
    #[error("{} is not valid JSON: {source}", path.display())]
    InvalidJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// JSON, but not in the docker config shape (a field of the wrong type, for example).
    #[error("{} is not a docker config: {reason}", path.display())]
    InvalidConfig { path: PathBuf, reason: String },
    /// The `auth` field of the registry's entry is not base64 of `username:password`.
    #[error(
        "{}: the \"auth\" field for registry {registry} is not base64 of username:password \
         ({reason})",
        path.display()
    )]
    InvalidAuthField { path: PathBuf, registry: String, reason: &'static str },
    /// The registry's credentials are kept by a credential helper (its `credHelpers` entry, or
    /// the `credsStore`), and the helper gave none: `reason` says why (never its answer).
    #[error(
        "{}: credentials for registry {registry} are kept by the credential helper \
         docker-credential-{helper}, {reason}",
        path.display()
    )]
    CredentialHelper { path: PathBuf, registry: String, helper: String, reason: String },
    /// A Secret directory lacks a key its type needs (`password` next to `username`).
    #[error("{}: Secret key {key:?} is missing", path.display())]
    MissingKey { path: PathBuf, key: String },
    /// A Secret key's file has a value that cannot be used.
    #[error("{}: Secret key {key:?} {reason}", path.display())]
    InvalidSecretValue { path: PathBuf, key: String, reason: &'static str },
    /// A directory that holds none of the keys of the supported Secret types.
    #[error(
        "{} holds no registry credentials: expected key .dockerconfigjson \
         (kubernetes.io/dockerconfigjson), .dockercfg (kubernetes.io/dockercfg) or username and \
         password (kubernetes.io/basic-auth)",
        path.display()
    )]
    UnrecognizedSecret { path: PathBuf },
}

impl Error {
    /// Whether retrying could help. Never: a credentials file stays wrong until someone fixes it
    /// (a changed Secret comes with a changed spec or a new push).
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json` (`None` if neither variable is
/// set; an empty variable counts as unset, as in docker).
pub fn default_docker_config_path() -> Option<PathBuf> {
    docker_config_path_from(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
}

fn docker_config_path_from(
    docker_config: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let non_empty = |value: Option<OsString>| value.filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(docker_config) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    non_empty(home).map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// Looks up `registry` (host[:port], e.g. `127.0.0.1:5000` or `registry.example.com`) in a docker
/// `config.json`, a Kubernetes `.dockerconfigjson` (the same format), or a legacy `.dockercfg`
/// (whose top level is the map of registries).
///
/// Keys match as in docker: the exact key, or a key written as a URL (`https://host/v1/`,
/// `http://host`) whose host part is `registry`. `docker.io`, `index.docker.io` and
/// `registry-1.docker.io` are one registry, stored by docker under `https://index.docker.io/v1/`.
/// From the entry: `identitytoken` if set, else `auth` (base64 of `username:password`), else
/// `username` and `password`. No entry, or an entry without credentials, is
/// [`Credential::Anonymous`]. A `credHelpers` entry for the registry, or a `credsStore` when the
/// registry's entry holds no credentials of its own, sends the question to that helper
/// (`docker-credential-<name>` on `PATH`); a `credsStore` whose program is missing is passed over
/// for a registry the file has no entry for (anonymous), as most registries need none.
pub fn from_docker_config(path: &Path, registry: &str) -> Result<Credential, Error> {
    let bytes = fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    from_docker_config_bytes(path, &bytes, registry)
}

/// Like `from_docker_config`, from the file's bytes (`path` only names it in errors).
pub fn from_docker_config_bytes(
    path: &Path,
    bytes: &[u8],
    registry: &str,
) -> Result<Credential, Error> {
    let search = std::env::var_os("PATH");
    credential_from_config_bytes(path, bytes, registry, Helpers::Path(search.as_deref()))
}

/// A mounted Kubernetes Secret directory: key `.dockerconfigjson` (type
/// `kubernetes.io/dockerconfigjson`), `.dockercfg` (`kubernetes.io/dockercfg`), or `username` and
/// `password` (`kubernetes.io/basic-auth`; one trailing newline is stripped from each, and the
/// credential is used for `registry` whatever it is).
pub fn from_secret_dir(dir: &Path, registry: &str) -> Result<Credential, Error> {
    for key in [".dockerconfigjson", ".dockercfg"] {
        if let Some(bytes) = read_key(dir, key)? {
            let path = dir.join(key);
            return credential_from_config_bytes(&path, &bytes, registry, Helpers::Refused);
        }
    }
    let username = read_key(dir, "username")?;
    let password = read_key(dir, "password")?;
    let (username, password) = match (username, password) {
        (Some(username), Some(password)) => (username, password),
        (Some(_), None) => return Err(missing_key(dir, "password")),
        (None, Some(_)) => return Err(missing_key(dir, "username")),
        (None, None) => return Err(Error::UnrecognizedSecret { path: dir.to_owned() }),
    };
    let username = secret_value(dir, "username", username)?;
    let password = secret_value(dir, "password", password)?;
    if username.is_empty() {
        return Err(Error::InvalidSecretValue {
            path: dir.to_owned(),
            key: "username".to_owned(),
            reason: "is empty",
        });
    }
    tracing::debug!(path = %dir.display(), registry, "using kubernetes.io/basic-auth Secret");
    Ok(Credential::Basic { username, password: Secret::new(password) })
}

/// `--registry-config PATH`: PATH may be a docker config.json file or a mounted Secret directory.
pub fn from_path(path: &Path, registry: &str) -> Result<Credential, Error> {
    let metadata =
        fs::metadata(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    if metadata.is_dir() {
        from_secret_dir(path, registry)
    } else {
        from_docker_config(path, registry)
    }
}

fn missing_key(dir: &Path, key: &str) -> Error {
    Error::MissingKey { path: dir.to_owned(), key: key.to_owned() }
}

/// The content of a Secret key's file, `None` when the key is absent.
fn read_key(dir: &Path, key: &str) -> Result<Option<Vec<u8>>, Error> {
    let path = dir.join(key);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// A basic-auth value: UTF-8, one trailing newline removed.
fn secret_value(dir: &Path, key: &str, bytes: Vec<u8>) -> Result<String, Error> {
    let mut value = String::from_utf8(bytes).map_err(|_| Error::InvalidSecretValue {
        path: dir.to_owned(),
        key: key.to_owned(),
        reason: "is not valid UTF-8",
    })?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

fn credential_from_config_bytes(
    path: &Path,
    bytes: &[u8],
    registry: &str,
    helpers: Helpers<'_>,
) -> Result<Credential, Error> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // Untyped first: serde_json's syntax errors carry a position only, never content.
    let config: Value = serde_json::from_slice(bytes)
        .map_err(|source| Error::InvalidJson { path: path.to_owned(), source })?;
    let invalid = |reason: String| Error::InvalidConfig { path: path.to_owned(), reason };
    let Value::Object(config) = config else {
        return Err(invalid("the top level is not a JSON object".to_owned()));
    };

    // config.json has `auths`; a legacy .dockercfg is the map of registries itself.
    let modern = ["auths", "credsStore", "credHelpers"].iter().any(|k| config.contains_key(*k));
    let empty = Map::new();
    let auths = if modern {
        match config.get("auths") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(auths)) => auths,
            Some(_) => return Err(invalid("\"auths\" is not a JSON object".to_owned())),
        }
    } else {
        &config
    };

    let hosts = registry_hosts(registry);
    // An empty credHelpers entry means the file, whatever the credsStore (as in docker).
    let mut store_applies = true;
    if modern && let Some(named) = config.get("credHelpers") {
        let Value::Object(named) = named else {
            return Err(invalid("\"credHelpers\" is not a JSON object".to_owned()));
        };
        if let Some((key, helper)) = find_entry(named, registry, &hosts) {
            let Value::String(helper) = helper else {
                return Err(invalid(format!("\"credHelpers\" entry {key:?} is not a string")));
            };
            if !helper.is_empty() {
                return Ask { path, registry, helper, helpers }.helper(true);
            }
            store_applies = false;
        }
    }

    let entry = find_entry(auths, registry, &hosts);
    let credential = match entry {
        None => Credential::Anonymous,
        Some((key, entry)) => {
            let Value::Object(entry) = entry else {
                return Err(invalid(format!("the entry for {key:?} is not a JSON object")));
            };
            credential_from_entry(path, registry, key, entry)?
        }
    };

    // `docker login` with a credsStore leaves an empty entry behind: the secret is in the store,
    // which docker also asks about registries the file does not name. A program that is missing
    // matters only for a registry that has an entry.
    if credential == Credential::Anonymous
        && modern
        && store_applies
        && let Some(store) = config.get("credsStore")
    {
        let Value::String(store) = store else {
            return Err(invalid("\"credsStore\" is not a string".to_owned()));
        };
        if !store.is_empty() {
            return Ask { path, registry, helper: store, helpers }.helper(entry.is_some());
        }
    }

    tracing::debug!(
        path = %path.display(),
        registry,
        key = entry.map(|(key, _)| key.as_str()),
        kind = match &credential {
            Credential::Anonymous => "anonymous",
            Credential::Basic { .. } => "basic",
            Credential::IdentityToken(_) => "identity token",
        },
        "resolved registry credentials from docker config"
    );
    Ok(credential)
}

/// Whether a docker config may have its credential helpers run.
#[derive(Clone, Copy)]
enum Helpers<'a> {
    /// Yes, found in these directories (`$PATH`'s syntax).
    Path(Option<&'a OsStr>),
    /// No: a Kubernetes Secret, which kubelet reads without running any helper. In a worker it
    /// is the tenant's, and must not choose which of the worker image's programs runs for which
    /// host; helpers for workload identity are named by the worker's own docker config.
    Refused,
}

/// A question to a credential helper about one registry.
struct Ask<'a> {
    path: &'a Path,
    registry: &'a str,
    helper: &'a str,
    helpers: Helpers<'a>,
}

impl Ask<'_> {
    /// The helper's answer; `required`: whether a missing program is an error (else anonymous).
    fn helper(&self, required: bool) -> Result<Credential, Error> {
        let found = match self.helpers {
            Helpers::Path(search) => helper::find(self.helper, search),
            Helpers::Refused => Err(helper::Failure::FromSecret),
        };
        let program = match found {
            Ok(program) => program,
            Err(helper::Failure::Missing | helper::Failure::FromSecret) if !required => {
                tracing::debug!(
                    registry = self.registry,
                    helper = self.helper,
                    "credsStore not asked (program missing, or a Secret's); anonymous"
                );
                return Ok(Credential::Anonymous);
            }
            Err(failure) => return Err(self.error(failure)),
        };
        let answer = helper::get(&program, &helper_server_url(self.registry), helper::TIMEOUT)
            .map_err(|failure| self.error(failure))?;
        tracing::debug!(
            registry = self.registry,
            helper = self.helper,
            found = matches!(answer, helper::Answer::Found(_)),
            "asked the credential helper"
        );
        Ok(match answer {
            helper::Answer::Found(credential) => credential,
            helper::Answer::NotFound => Credential::Anonymous,
        })
    }

    fn error(&self, failure: helper::Failure) -> Error {
        let reason = match failure {
            helper::Failure::InvalidName => "which is not a program name".to_owned(),
            helper::Failure::Missing => "which is not on PATH: install it next to imagepush (in a \
                Kubernetes worker: in the worker image), or put the credentials in the file"
                .to_owned(),
            helper::Failure::FromSecret => {
                "which is not run for a Kubernetes Secret (kubelet runs \
                none either): name it in the docker config the worker reads ($DOCKER_CONFIG in \
                its image or environment), or put the credentials in the Secret"
                    .to_owned()
            }
            helper::Failure::Failed(why) => format!("which failed: {why}"),
        };
        Error::CredentialHelper {
            path: self.path.to_owned(),
            registry: self.registry.to_owned(),
            helper: self.helper.to_owned(),
            reason,
        }
    }
}

/// What docker tells a helper the registry is: Docker Hub by its v1 URL, others by host[:port].
fn helper_server_url(registry: &str) -> String {
    if registry_hosts(registry).iter().any(|h| h == "docker.io") {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

/// The credential in one registry entry of `auths`.
fn credential_from_entry(
    path: &Path,
    registry: &str,
    key: &str,
    entry: &Map<String, Value>,
) -> Result<Credential, Error> {
    let field = |name: &str| -> Result<Option<&str>, Error> {
        match entry.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::InvalidConfig {
                path: path.to_owned(),
                reason: format!("field {name:?} of the entry for {key:?} is not a string"),
            }),
        }
    };

    if let Some(token) = field("identitytoken")? {
        return Ok(Credential::IdentityToken(Secret::new(token)));
    }
    if let Some(auth) = field("auth")? {
        let (username, password) = decode_auth(auth).map_err(|reason| Error::InvalidAuthField {
            path: path.to_owned(),
            registry: registry.to_owned(),
            reason,
        })?;
        return Ok(Credential::Basic { username, password: Secret::new(password) });
    }
    match (field("username")?, field("password")?) {
        (Some(username), password) => Ok(Credential::Basic {
            username: username.to_owned(),
            password: Secret::new(password.unwrap_or_default()),
        }),
        (None, _) => Ok(Credential::Anonymous),
    }
}

/// docker's `decodeAuth`: base64 of `username:password`, the password stripped of NULs.
fn decode_auth(auth: &str) -> Result<(String, String), &'static str> {
    let auth = auth.trim();
    let decoded = STANDARD
        .decode(auth)
        .or_else(|_| STANDARD_NO_PAD.decode(auth))
        .map_err(|_| "invalid base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "not UTF-8 after decoding")?;
    let (username, password) = decoded.split_once(':').ok_or("no ':' after decoding")?;
    if username.is_empty() {
        return Err("empty username");
    }
    Ok((username.to_owned(), password.trim_matches('\0').to_owned()))
}

/// The hosts that name the same registry as `registry`, lowercased.
fn registry_hosts(registry: &str) -> Vec<String> {
    const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
    let registry = registry.to_ascii_lowercase();
    if DOCKER_HUB.contains(&registry.as_str()) {
        DOCKER_HUB.iter().map(|h| (*h).to_owned()).collect()
    } else {
        vec![registry]
    }
}

/// docker's `ConvertToHostname`: the host part of a key written as a URL.
fn key_host(key: &str) -> &str {
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// The entry of `map` for `registry`: the exact key first, then docker's key for Docker Hub, then
/// the first key (in key order) whose host part names the registry.
fn find_entry<'m>(
    map: &'m Map<String, Value>,
    registry: &str,
    hosts: &[String],
) -> Option<(&'m String, &'m Value)> {
    const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
    if let Some(found) = map.get_key_value(registry) {
        return Some(found);
    }
    if hosts.iter().any(|h| h == "docker.io")
        && let Some(found) = map.get_key_value(DOCKER_HUB_KEY)
    {
        return Some(found);
    }
    map.iter().find(|(key, _)| {
        let host = key_host(key);
        hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr3t-Pa55";

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    fn basic(username: &str, password: &str) -> Credential {
        Credential::Basic { username: username.to_owned(), password: Secret::new(password) }
    }

    /// Writes `content` to a file in a new temporary directory and returns both.
    fn config_file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs::write(&path, content).unwrap();
        (dir, path)
    }

    /// `content`'s credential for `registry`, with no credential helper on the path.
    fn lookup(content: &str, registry: &str) -> Result<Credential, Error> {
        let helpers = Helpers::Path(None);
        credential_from_config_bytes(
            Path::new("config.json"),
            content.as_bytes(),
            registry,
            helpers,
        )
    }

    fn auths_with(key: &str, entry: &str) -> String {
        format!(r#"{{"auths": {{"{key}": {entry}}}}}"#)
    }

    #[test]
    fn secret_is_redacted() {
        let secret = Secret::new(PASSWORD);
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(secret.expose(), PASSWORD);
        let credential = basic("alice", PASSWORD);
        let debug = format!("{credential:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("alice") && debug.contains("<redacted>"), "{debug}");
        let debug = format!("{:#?}", Credential::IdentityToken(Secret::new(PASSWORD)));
        assert!(!debug.contains(PASSWORD), "{debug}");
    }

    #[test]
    fn reads_each_entry_format() {
        let auth = format!(r#"{{"auth": "{}"}}"#, b64(&format!("alice:{PASSWORD}")));
        let cases: Vec<(String, Credential)> = vec![
            (auth.clone(), basic("alice", PASSWORD)),
            // Unpadded base64, and a password that itself holds ':'.
            (r#"{"auth": "YWxpY2U6YTpi"}"#.to_owned(), basic("alice", "a:b")),
            (
                format!(
                    r#"{{"username": "bob", "password": "{PASSWORD}", "email": "b@example.com"}}"#
                ),
                basic("bob", PASSWORD),
            ),
            // `auth` wins over username/password, as in docker.
            (
                format!(r#"{{"auth": "{}", "username": "bob", "password": "x"}}"#, b64("alice:pw")),
                basic("alice", "pw"),
            ),
            // identitytoken wins over everything.
            (
                format!(r#"{{"auth": "{}", "identitytoken": "{PASSWORD}"}}"#, b64("<token>:")),
                Credential::IdentityToken(Secret::new(PASSWORD)),
            ),
            (
                r#"{"identitytoken": "", "username": "u", "password": "p"}"#.to_owned(),
                basic("u", "p"),
            ),
            (r#"{}"#.to_owned(), Credential::Anonymous),
            (r#"{"auth": "", "email": "x@example.com"}"#.to_owned(), Credential::Anonymous),
        ];
        for (entry, expected) in cases {
            let got = lookup(&auths_with("registry.example.com", &entry), "registry.example.com");
            assert_eq!(got.unwrap(), expected, "entry {entry}");
        }
    }

    #[test]
    fn matches_registry_keys_like_docker() {
        let entry = format!(r#"{{"auth": "{}"}}"#, b64("alice:pw"));
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.1:5000", "127.0.0.1:5000", true),
            ("http://127.0.0.1:5000", "127.0.0.1:5000", true),
            ("https://127.0.0.1:5000/v2/", "127.0.0.1:5000", true),
            ("registry.example.com", "registry.example.com", true),
            ("https://registry.example.com/v1/", "registry.example.com", true),
            ("https://Registry.Example.com", "registry.example.com", true),
            ("registry.example.com:443", "registry.example.com", false),
            ("127.0.0.1:5001", "127.0.0.1:5000", false),
            ("other.example.com", "registry.example.com", false),
            ("registry.example.com.evil", "registry.example.com", false),
            ("https://index.docker.io/v1/", "docker.io", true),
            ("index.docker.io", "docker.io", true),
            ("docker.io", "docker.io", true),
            ("https://index.docker.io/v1/", "index.docker.io", true),
            ("https://index.docker.io/v1/", "registry-1.docker.io", true),
            ("https://index.docker.io/v1/", "registry.example.com", false),
        ];
        for (key, registry, matches) in cases {
            let got = lookup(&auths_with(key, &entry), registry).unwrap();
            let expected = if *matches { basic("alice", "pw") } else { Credential::Anonymous };
            assert_eq!(got, expected, "key {key:?}, registry {registry:?}");
        }
    }

    #[test]
    fn exact_key_beats_url_key() {
        let config = format!(
            r#"{{"auths": {{"https://r.example.com/v1/": {{"auth": "{}"}}, "r.example.com": {{"auth": "{}"}}}}}}"#,
            b64("url:1"),
            b64("exact:2")
        );
        assert_eq!(lookup(&config, "r.example.com").unwrap(), basic("exact", "2"));
    }

    #[test]
    fn no_entry_is_anonymous() {
        for config in [
            "{}",
            r#"{"auths": {}}"#,
            r#"{"auths": null}"#,
            r#"{"auths": {"other.example.com": {"auth": "YTpi"}}}"#,
            r#"{"psFormat": "table {{.ID}}"}"#,
            // A credsStore does not stop anonymous access to registries it has no entry for.
            r#"{"auths": {"other.example.com": {}}, "credsStore": "desktop"}"#,
        ] {
            assert_eq!(
                lookup(config, "127.0.0.1:5000").unwrap(),
                Credential::Anonymous,
                "{config}"
            );
        }
    }

    #[test]
    fn reads_legacy_dockercfg() {
        let config = format!(
            r#"{{"https://index.docker.io/v1/": {{"auth": "{}", "email": "a@example.com"}}, "127.0.0.1:5000": {{"username": "u", "password": "{PASSWORD}"}}}}"#,
            b64("alice:pw")
        );
        assert_eq!(lookup(&config, "docker.io").unwrap(), basic("alice", "pw"));
        assert_eq!(lookup(&config, "127.0.0.1:5000").unwrap(), basic("u", PASSWORD));
        assert_eq!(lookup(&config, "quay.io").unwrap(), Credential::Anonymous);
    }

    #[test]
    fn bad_auth_field_names_registry_and_file_but_not_the_secret() {
        for auth in [
            format!("not base64 {PASSWORD}!"),
            b64(&format!("no-colon-{PASSWORD}")),
            b64(&format!(":{PASSWORD}")),
        ] {
            let (_dir, path) = config_file(&auths_with(
                "registry.example.com",
                &format!(r#"{{"auth": "{auth}"}}"#),
            ));
            let err = from_docker_config(&path, "registry.example.com").unwrap_err();
            assert!(matches!(err, Error::InvalidAuthField { .. }), "{err:?}");
            let message = err.to_string();
            assert!(message.contains("registry.example.com"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert_no_secret(&err, &[PASSWORD, &auth]);
        }
    }

    #[test]
    fn wrong_shapes_are_errors_without_content() {
        let cases = [
            format!(r#"{{"auths": {{"r.example.com": {{"auth": "{}""#, b64(PASSWORD)),
            format!(r#"["{PASSWORD}"]"#),
            format!(r#"{{"auths": ["{PASSWORD}"]}}"#),
            format!(r#"{{"auths": {{"r.example.com": "{PASSWORD}"}}}}"#),
            format!(
                r#"{{"auths": {{"r.example.com": {{"password": ["{PASSWORD}"], "username": "u"}}}}}}"#
            ),
            format!(r#"{{"auths": {{"r.example.com": {{"auth": {{"{PASSWORD}": 1}}}}}}}}"#),
            format!("{{\"auths\": {{\"r.example.com\": {{\"password\": \"{PASSWORD}\u{1}\"}}}}}}"),
        ];
        for config in cases {
            let err = lookup(&config, "r.example.com").expect_err(&config);
            assert!(
                matches!(err, Error::InvalidJson { .. } | Error::InvalidConfig { .. }),
                "{config}: {err:?}"
            );
            assert_no_secret(&err, &[PASSWORD, &b64(PASSWORD)]);
        }
    }

    #[test]
    fn credential_helpers_are_asked_as_docker_asks_them() {
        let dir = tempfile::tempdir().unwrap();
        // Each helper answers with its own name as the username, for the server it was asked about.
        for name in ["ecr-login", "desktop"] {
            helper::tests::script(
                dir.path(),
                &format!("docker-credential-{name}"),
                &format!(
                    "read -r url\ncase \"$url\" in\n  unknown.example.com) echo \
                     'credentials not found in native keychain'; exit 1 ;;\nesac\nprintf \
                     '{{\"Username\":\"{name}\",\"Secret\":\"%s\"}}' \"$url\""
                ),
            );
        }
        let on_path = |config: &str, registry: &str| {
            let path = Path::new("config.json");
            credential_from_config_bytes(
                path,
                config.as_bytes(),
                registry,
                Helpers::Path(Some(dir.path().as_os_str())),
            )
        };
        let table: &[(&str, &str, Credential)] = &[
            // A credHelpers entry wins over inline credentials.
            (
                r#"{"auths": {"r.example.com": {"auth": "YTpi"}}, "credHelpers": {"r.example.com": "ecr-login"}}"#,
                "r.example.com",
                basic("ecr-login", "r.example.com"),
            ),
            // Docker Hub is asked about by docker's v1 URL.
            (
                r#"{"credHelpers": {"https://index.docker.io/v1/": "ecr-login"}}"#,
                "docker.io",
                basic("ecr-login", "https://index.docker.io/v1/"),
            ),
            // The store: for the empty entry docker login leaves, and for registries not named.
            (
                r#"{"auths": {"r.example.com": {}}, "credsStore": "desktop"}"#,
                "r.example.com",
                basic("desktop", "r.example.com"),
            ),
            (r#"{"credsStore": "desktop"}"#, "127.0.0.1:5000", basic("desktop", "127.0.0.1:5000")),
            // Inline credentials beat the store (kubelet reads only those).
            (
                &format!(
                    r#"{{"auths": {{"r.example.com": {{"auth": "{}"}}}}, "credsStore": "desktop"}}"#,
                    b64("alice:pw")
                ),
                "r.example.com",
                basic("alice", "pw"),
            ),
            // What the helper does not know is anonymous.
            (
                r#"{"credHelpers": {"unknown.example.com": "ecr-login"}}"#,
                "unknown.example.com",
                Credential::Anonymous,
            ),
            // An empty credHelpers entry means the file, whatever the store.
            (
                r#"{"auths": {"r.example.com": {}}, "credHelpers": {"r.example.com": ""}, "credsStore": "desktop"}"#,
                "r.example.com",
                Credential::Anonymous,
            ),
        ];
        for (config, registry, want) in table {
            assert_eq!(&on_path(config, registry).unwrap(), want, "{config}");
        }
        // A helper that is not there, or not a program name, is an error naming it and the
        // registry; a missing store is passed over for registries without an entry.
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                r#"{"credHelpers": {"r.example.com": "gcloud"}}"#,
                "r.example.com",
                "gcloud",
                "not on PATH",
            ),
            (
                r#"{"credHelpers": {"r.example.com": "../../bin/sh"}}"#,
                "r.example.com",
                "../../bin/sh",
                "not a program name",
            ),
            (
                r#"{"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "pass"}"#,
                "docker.io",
                "pass",
                "not on PATH",
            ),
        ];
        for (config, registry, helper, reason) in cases {
            let err = on_path(config, registry).unwrap_err();
            let Error::CredentialHelper { registry: r, helper: h, .. } = &err else {
                panic!("{config}: {err:?}")
            };
            assert_eq!((r.as_str(), h.as_str()), (*registry, *helper), "{config}");
            let message = err.to_string();
            assert!(message.contains(&format!("docker-credential-{helper}")), "{message}");
            assert!(message.contains(reason), "{message}");
        }
        assert_eq!(
            on_path(r#"{"credsStore": "pass"}"#, "127.0.0.1:5000").unwrap(),
            Credential::Anonymous
        );
        // A Kubernetes Secret's helpers are never run, even when the program is there.
        let secret = tempfile::tempdir().unwrap();
        let config = r#"{"auths": {"s.example.com": {}}, "credHelpers": {"r.example.com": "ecr-login"}, "credsStore": "desktop"}"#;
        fs::write(secret.path().join(".dockerconfigjson"), config).unwrap();
        let err = from_secret_dir(secret.path(), "r.example.com").unwrap_err();
        assert!(err.to_string().contains("not run for a Kubernetes Secret"), "{err}");
        assert!(from_secret_dir(secret.path(), "s.example.com").is_err());
        assert_eq!(from_secret_dir(secret.path(), "o.example.com").unwrap(), Credential::Anonymous);
    }

    #[test]
    fn secret_dir_dockerconfigjson_and_dockercfg() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(".dockerconfigjson"),
            auths_with(
                "127.0.0.1:5000",
                &format!(r#"{{"auth": "{}"}}"#, b64(&format!("alice:{PASSWORD}"))),
            ),
        )
        .unwrap();
        assert_eq!(
            from_secret_dir(dir.path(), "127.0.0.1:5000").unwrap(),
            basic("alice", PASSWORD)
        );
        assert_eq!(from_path(dir.path(), "127.0.0.1:5000").unwrap(), basic("alice", PASSWORD));
        assert_eq!(from_secret_dir(dir.path(), "other:5000").unwrap(), Credential::Anonymous);

        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(".dockercfg"),
            r#"{"http://127.0.0.1:5000": {"auth": "Ym9iOnB3"}}"#,
        )
        .unwrap();
        assert_eq!(from_path(dir.path(), "127.0.0.1:5000").unwrap(), basic("bob", "pw"));
    }

    #[test]
    fn secret_dir_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".dockerconfigjson"), "{not json").unwrap();
        let err = from_secret_dir(dir.path(), "r.example.com").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidJson { path, .. } if path.ends_with(".dockerconfigjson")),
            "{err:?}"
        );
    }

    #[test]
    fn secret_dir_basic_auth() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("alice", PASSWORD, "alice", PASSWORD),
            ("alice\n", "pw\n", "alice", "pw"),
            ("alice\r\n", "pw\n\n", "alice", "pw\n"),
            ("alice", "", "alice", ""),
        ];
        for (username, password, want_user, want_password) in cases {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("username"), username).unwrap();
            fs::write(dir.path().join("password"), password).unwrap();
            assert_eq!(
                from_path(dir.path(), "registry.example.com").unwrap(),
                basic(want_user, want_password),
                "{username:?} {password:?}"
            );
        }
    }

    #[test]
    fn secret_dir_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("username"), "alice\n").unwrap();
        let err = from_secret_dir(dir.path(), "r.example.com").unwrap_err();
        assert!(matches!(&err, Error::MissingKey { key, .. } if key == "password"), "{err:?}");
        assert!(err.to_string().contains("\"password\""), "{err}");

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("password"), PASSWORD).unwrap();
        let err = from_secret_dir(dir.path(), "r.example.com").unwrap_err();
        assert!(matches!(&err, Error::MissingKey { key, .. } if key == "username"), "{err:?}");
        assert_no_secret(&err, &[PASSWORD]);

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("username"), "\n").unwrap();
        fs::write(dir.path().join("password"), PASSWORD).unwrap();
        let err = from_secret_dir(dir.path(), "r.example.com").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSecretValue { key, .. } if key == "username"),
            "{err:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("password"), b"\xff\xfe").unwrap();
        fs::write(dir.path().join("username"), "alice").unwrap();
        let err = from_secret_dir(dir.path(), "r.example.com").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSecretValue { key, .. } if key == "password"),
            "{err:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("token"), PASSWORD).unwrap();
        let err = from_secret_dir(dir.path(), "r.example.com").unwrap_err();
        assert!(matches!(err, Error::UnrecognizedSecret { .. }), "{err:?}");
    }

    #[test]
    fn from_path_reports_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = from_path(&missing, "r.example.com").unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, source } if path == &missing && source.kind() == io::ErrorKind::NotFound)
        );
        assert!(err.to_string().contains("nope.json"), "{err}");
    }

    #[test]
    fn reads_a_config_with_a_byte_order_mark() {
        let (_dir, path) =
            config_file(&format!("\u{feff}{}", auths_with("r.example.com", r#"{"auth": "YTpi"}"#)));
        assert_eq!(from_docker_config(&path, "r.example.com").unwrap(), basic("a", "b"));
    }

    #[test]
    fn default_config_path() {
        let some = |s: &str| Some(OsString::from(s));
        let cases: &[(Option<OsString>, Option<OsString>, Option<&str>)] = &[
            (some("/etc/docker-cfg"), some("/home/u"), Some("/etc/docker-cfg/config.json")),
            (None, some("/home/u"), Some("/home/u/.docker/config.json")),
            (some(""), some("/home/u"), Some("/home/u/.docker/config.json")),
            (None, None, None),
            (some(""), some(""), None),
        ];
        for (docker_config, home, expected) in cases {
            assert_eq!(
                docker_config_path_from(docker_config.clone(), home.clone()),
                expected.map(PathBuf::from),
                "{docker_config:?} {home:?}"
            );
        }
    }

    fn assert_no_secret(err: &Error, secrets: &[&str]) {
        let mut texts = vec![err.to_string(), format!("{err:?}")];
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            texts.push(cause.to_string());
            source = cause.source();
        }
        for text in texts {
            for secret in secrets {
                assert!(!text.contains(secret), "{text:?} contains {secret:?}");
            }
        }
    }
}
