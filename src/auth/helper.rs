//! docker's credential helper protocol: `docker-credential-<name> get`, the registry's server
//! URL on standard input, `{"ServerURL", "Username", "Secret"}` on standard output (username
//! `<token>`: the secret is an identity token), or a non-zero exit with the reason on standard
//! output (`credentials not found in native keychain`: no credentials for that registry).
//!
//! This is how credentials that are not in a file reach a push: Docker Desktop's store, and the
//! cloud helpers (`docker-credential-ecr-login`, `-gcr`, `-acr-env`) that turn a pod's workload
//! identity into registry credentials. The helper's answer is held in [`Secret`] and never
//! logged; when it fails, the reason it gives is quoted in the error (cut to 300 characters),
//! unless that looks like an answer (JSON), which is withheld.
//!
//! The helper runs in its own process group: on a timeout the whole group is killed, and
//! reading its output stops at the deadline even when a process it left behind keeps the pipes
//! open.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Credential, Secret};

/// How long a helper may take (a cloud helper makes a few HTTPS calls).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What the helper's own message is cut to in errors.
const MESSAGE_LIMIT: usize = 300;

/// The most of a helper's output that is read (an answer is a few KiB).
const OUTPUT_LIMIT: u64 = 1 << 20;

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
    /// Named by a Kubernetes Secret, whose helpers are not run (as kubelet runs none).
    FromSecret,
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

/// `docker-credential-<helper>` in one of `path`'s directories (`$PATH`'s syntax). Relative
/// directories are passed over (as Go's `exec.LookPath`, which docker uses, refuses them): a
/// helper is never run from wherever the command happens to be started.
pub fn find(helper: &str, path: Option<&std::ffi::OsStr>) -> Result<PathBuf, Failure> {
    let name = program_name(helper)?;
    let path = path.ok_or(Failure::Missing)?;
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
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
    let deadline = Instant::now() + timeout;
    let mut child = spawn(program)?;
    // The URL is short: it fits the pipe, so writing cannot wait for the helper.
    let mut stdin = child.stdin.take().expect("piped");
    let _ = stdin.write_all(server_url.as_bytes());
    drop(stdin);
    let stdout = reader(child.stdout.take().expect("piped"));
    let stderr = reader(child.stderr.take().expect("piped"));
    let late = || Failure::Failed(format!("it did not answer within {} s", timeout.as_secs()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return Err(stop(&mut child, late())),
            Err(e) => return Err(stop(&mut child, Failure::Failed(format!("cannot wait: {e}")))),
        }
    };
    // A process the helper left behind may hold the pipes open: read until the deadline only.
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let out = stdout.recv_timeout(remaining()).map_err(|_| stop(&mut child, late()))?;
    let err = stderr.recv_timeout(remaining()).unwrap_or_default();
    if status.success() {
        return parse(&out);
    }
    let said = if out.trim_ascii().is_empty() { &err } else { &out };
    let said = String::from_utf8_lossy(said);
    let said = said.trim();
    if said == "credentials not found in native keychain" {
        return Ok(Answer::NotFound);
    }
    if said.starts_with('{') {
        return Err(Failure::Failed(format!(
            "{status} (its output withheld: it looks like an answer)"
        )));
    }
    Err(Failure::Failed(format!("{status}: {}", cut(said))))
}

/// Starts the helper in a process group of its own. A program just written may still be open
/// for writing in a process another thread forked meanwhile (ETXTBSY): try again briefly.
fn spawn(program: &Path) -> Result<Child, Failure> {
    let mut tries = 0;
    loop {
        let started = Command::new(program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        match started {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.map_err(|e| Failure::Failed(format!("cannot start it: {e}"))),
        }
    }
}

/// Kills the helper's whole process group and reaps the helper; passes `failure` through.
fn stop(child: &mut Child, failure: Failure) -> Failure {
    kill_group(child);
    let _ = child.kill();
    let _ = child.wait();
    failure
}

/// Whatever the helper left running in its group goes with it.
fn kill_group(child: &Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Reads at most `OUTPUT_LIMIT` bytes on a thread; the result comes over the channel.
fn reader(from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.take(OUTPUT_LIMIT).read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
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
    // The first JSON value; what follows it is ignored, as docker's decoder ignores it.
    let out: Output = serde_json::Deserializer::from_slice(stdout)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .ok_or_else(not_json)?;
    Ok(Answer::Found(match (out.username.as_str(), out.secret) {
        ("" | "<token>", secret) if secret.is_empty() => Credential::Anonymous,
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
pub(super) mod tests {
    use super::*;

    const SECRET: &str = "hunter2-from-helper";

    /// An executable `#!/bin/sh` script `name` in `dir` running `body`.
    pub(in crate::auth) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
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
            (
                r#"{"Username":"ci","Secret":""}"#,
                Ok(Answer::Found(Credential::Basic {
                    username: "ci".into(),
                    password: Secret::new(""),
                })),
            ),
            (r#"{"Username":"","Secret":""}"#, Ok(Answer::Found(Credential::Anonymous))),
            (
                "{\"Username\":\"<token>\",\"Secret\":\"hunter2-from-helper\"}\nwarning: cached\n",
                Ok(Answer::Found(Credential::IdentityToken(Secret::new(SECRET)))),
            ),
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
  leaky.example.com) printf '{"Username":"ci","Secret":"hunter2-from-helper"}'; exit 1 ;;
  daemon.example.com) sleep 5 & printf '{"Username":"ci","Secret":"x"}' ;;
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
        let Err(Failure::Failed(why)) = get(&program, "leaky.example.com", TIMEOUT) else {
            panic!()
        };
        assert!(why.contains("withheld") && !why.contains(SECRET), "{why}");
        // Relative directories of PATH are not searched, even one that leads to the helper.
        let cwd = std::env::current_dir().unwrap();
        let up = "../".repeat(cwd.components().count());
        let relative = Path::new(&up).join(dir.path().strip_prefix("/").unwrap());
        assert!(relative.join("docker-credential-fake").is_file());
        assert_eq!(find("fake", Some(relative.as_os_str())), Err(Failure::Missing));
        // Neither a slow helper nor one that leaves a process holding its output holds us up:
        // the helper, and its whole group, are killed.
        for server in ["daemon.example.com", "slow.example.com"] {
            let started = Instant::now();
            let Err(Failure::Failed(why)) = get(&program, server, Duration::from_millis(300))
            else {
                panic!("{server}")
            };
            assert!(why.contains("did not answer"), "{server}: {why}");
            assert!(started.elapsed() < Duration::from_secs(4), "{server}: not killed");
        }
    }
}
