//! docker's credential helper protocol: `docker-credential-<name> get`, the registry's server
//! URL on standard input, `{"ServerURL", "Username", "Secret"}` on standard output (username
//! `<token>`: the secret is an identity token), or a non-zero exit with the reason on standard
//! output (`credentials not found in native keychain`: no credentials for that registry).
//!
//! This is how credentials that are not in a file reach a push: Docker Desktop's store, and the
//! cloud helpers (`docker-credential-ecr-login`, `-gcr`, `-acr-env`) that turn a pod's workload
//! identity into registry credentials. The helper's answer is held in [`Secret`]; neither its
//! output nor its error text is logged.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Credential, Secret};

/// How long a helper may take (a cloud helper makes a few HTTPS calls).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What the helper's own message is cut to in errors.
const MESSAGE_LIMIT: usize = 300;

/// What a helper said.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Found(Credential),
    /// The helper has nothing for this registry.
    NotFound,
}

/// Why a helper gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The name would leave `docker-credential-`: it holds a path separator or is empty.
    InvalidName,
    /// No `docker-credential-<name>` in `PATH`.
    Missing,
    /// It ran and failed, or did not answer in time: its message (cut), or what went wrong.
    Failed(String),
}

/// The helper's name is a suffix of a program name, never a path.
pub fn program_name(helper: &str) -> Result<String, Failure> {
    if helper.is_empty() || helper.contains(['/', '\\', '\0']) {
        return Err(Failure::InvalidName);
    }
    Ok(format!("docker-credential-{helper}"))
}

/// `docker-credential-<helper>` in one of `path`'s directories (`$PATH`'s syntax).
pub fn find(helper: &str, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, Failure> {
    let name = program_name(helper)?;
    let path = path.ok_or(Failure::Missing)?;
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(&name))
        .find(|p| is_executable(p))
        .ok_or(Failure::Missing)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program get` for `server_url`, waiting at most `timeout`.
pub fn get(program: &Path, server_url: &str, timeout: Duration) -> Result<Answer, Failure> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::Failed(format!("cannot start it: {e}")))?;
    // The URL is short: it fits the pipe, so writing cannot wait for the helper.
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(server_url.as_bytes());
    drop(stdin);
    let stdout = reader(child.stdout.take().expect("piped"));
    let stderr = reader(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Failed(format!(
                    "it did not answer within {} s",
                    timeout.as_secs()
                )));
            }
            Err(e) => return Err(Failure::Failed(format!("cannot wait for it: {e}"))),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if status.success() {
        return parse(&out);
    }
    let said = String::from_utf8_lossy(if out.trim_ascii().is_empty() { &err } else { &out });
    let said = said.trim();
    if said == "credentials not found in native keychain" {
        return Ok(Answer::NotFound);
    }
    Err(Failure::Failed(format!("{status}: {}", cut(said))))
}

fn reader(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[derive(Deserialize)]
struct Output {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The helper's standard output after a successful `get`. A parse error never quotes it.
pub fn parse(stdout: &[u8]) -> Result<Answer, Failure> {
    let not_json = || {
        Failure::Failed("its answer is not the JSON object {ServerURL, Username, Secret}".into())
    };
    if !stdout.trim_ascii_start().starts_with(b"{") {
        return Err(not_json());
    }
    let out: Output = serde_json::from_slice(stdout).map_err(|_| not_json())?;
    Ok(Answer::Found(match (out.username.as_str(), out.secret) {
        (_, secret) if secret.is_empty() => Credential::Anonymous,
        ("<token>", secret) => Credential::IdentityToken(Secret::new(secret)),
        ("", _) => {
            return Err(Failure::Failed("its answer has a Secret but no Username".into()));
        }
        (username, secret) => {
            Credential::Basic { username: username.to_owned(), password: Secret::new(secret) }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-from-helper";

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn answers_are_read_like_docker() {
        let table: &[(&str, Result<Answer, Failure>)] = &[
            (
                r#"{"ServerURL":"r","Username":"ci","Secret":"hunter2-from-helper"}"#,
                Ok(Answer::Found(Credential::Basic {
                    username: "ci".into(),
                    password: Secret::new(SECRET),
                })),
            ),
            (
                r#"{"Username":"<token>","Secret":"hunter2-from-helper"}"#,
                Ok(Answer::Found(Credential::IdentityToken(Secret::new(SECRET)))),
            ),
            (r#"{"Username":"ci","Secret":""}"#, Ok(Answer::Found(Credential::Anonymous))),
        ];
        for (out, want) in table {
            assert_eq!(&parse(out.as_bytes()), want, "{out}");
        }
        for bad in [r#"{"Secret":"hunter2-from-helper"}"#, "hunter2-from-helper", "[]"] {
            let Err(Failure::Failed(why)) = parse(bad.as_bytes()) else { panic!("{bad}") };
            assert!(!why.contains(SECRET), "{why}");
        }
    }

    #[test]
    fn names_stay_program_names() {
        assert_eq!(program_name("ecr-login").unwrap(), "docker-credential-ecr-login");
        for bad in ["", "../../bin/sh", "a/b", "a\\b"] {
            assert_eq!(program_name(bad), Err(Failure::InvalidName), "{bad:?}");
        }
    }

    #[test]
    fn runs_the_program_found_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        // It gets `get` and the server URL on standard input, and answers for that server only.
        script(
            dir.path(),
            "docker-credential-fake",
            r#"[ "$1" = get ] || exit 9
read -r url
case "$url" in
  reg.example.com:5000) printf '{"ServerURL":"%s","Username":"ci","Secret":"hunter2-from-helper"}' "$url" ;;
  slow.example.com) sleep 5 ;;
  broken.example.com) echo "no IAM role bound to this pod" >&2; exit 1 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#,
        );
        let path = std::env::join_paths(["/nonexistent".as_ref(), dir.path()]).unwrap();
        let program = find("fake", Some(&path)).unwrap();
        assert_eq!(find("other", Some(&path)), Err(Failure::Missing));
        assert_eq!(
            get(&program, "reg.example.com:5000", TIMEOUT).unwrap(),
            Answer::Found(Credential::Basic {
                username: "ci".into(),
                password: Secret::new(SECRET)
            })
        );
        assert_eq!(get(&program, "other.example.com", TIMEOUT).unwrap(), Answer::NotFound);
        let Err(Failure::Failed(why)) = get(&program, "broken.example.com", TIMEOUT) else {
            panic!()
        };
        assert!(why.contains("no IAM role bound to this pod"), "{why}");
        let started = Instant::now();
        let Err(Failure::Failed(why)) =
            get(&program, "slow.example.com", Duration::from_millis(300))
        else {
            panic!()
        };
        assert!(why.contains("did not answer"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(4), "the helper was killed");
    }
}
