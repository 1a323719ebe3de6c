//! Pushing to CNCF distribution with token authentication (`auth: token`), our own JWT issuer
//! in front: the bearer flow end to end, mounts asking for pull on their source, and the
//! fallback to an upload when the issuer refuses that scope.

mod common;

use common::token_registry::TokenRegistry;
use common::{blob_outcomes, imagepush_with_stdin, report, simple_image};

const PASSWORD: &str = "token-pass-9x";

fn push(
    reg: &TokenRegistry,
    layout: &std::path::Path,
    target: &str,
    extra: &[&str],
    password: &str,
    report_to: &std::path::Path,
) -> common::Run {
    let mut args = vec![
        "push",
        "--plain-http",
        "--username",
        "alice",
        "--password-stdin",
        "--report",
        report_to.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let t = format!("{}/{target}", reg.host());
    args.push(layout.to_str().unwrap());
    args.push(&t);
    imagepush_with_stdin(&args, Some(password))
}

#[tokio::test]
async fn token_auth_push_mount_with_source_pull_scope_and_fallback_when_refused() {
    let reg = TokenRegistry::start("alice", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let (_b, image) = simple_image(&layout, "v1", &[300_000, 2000], 31);
    let r = |n: &str| dir.path().join(n);

    // A plain push with a token for pull,push on the target.
    push(&reg, &layout, "team/app:v1", &[], PASSWORD, &r("1.json")).ok();
    assert_eq!(report(&r("1.json"))["digest"], image.digest.as_str());
    assert!(
        reg.scope_requests().iter().any(|s| s == &["repository:team/app:pull,push".to_string()]),
        "{:?}",
        reg.scope_requests()
    );

    // Promotion: the mount's token asks for pull on the source as well, and the registry mounts.
    push(&reg, &layout, "prod/app:v1", &["--mount-from", "team/app"], PASSWORD, &r("2.json")).ok();
    let outcomes = blob_outcomes(&report(&r("2.json")));
    assert!(outcomes.values().all(|(o, _)| o == "mounted"), "{outcomes:?}");
    assert!(
        reg.scope_requests()
            .iter()
            .any(|s| s.contains(&"repository:prod/app:pull,push".to_string())
                && s.contains(&"repository:team/app:pull".to_string())),
        "{:?}",
        reg.scope_requests()
    );

    // The same image under denied/ is never readable: mounting from there is refused by the
    // registry, and the blobs are uploaded instead.
    push(&reg, &layout, "denied/base:v1", &[], PASSWORD, &r("3.json")).expect_code(4);
    push(&reg, &layout, "other/app:v1", &["--mount-from", "denied/base"], PASSWORD, &r("4.json"))
        .ok();
    let outcomes = blob_outcomes(&report(&r("4.json")));
    assert!(outcomes.values().all(|(o, _)| o == "uploaded"), "{outcomes:?}");
    assert!(
        reg.scope_requests().iter().any(|s| s.contains(&"repository:denied/base:pull".to_string()))
    );
    // The registry did refuse those mounts for lack of pull scope on the source (401).
    let refused = reg
        .log()
        .lines()
        .filter(|l| {
            l.contains("from=denied%2Fbase")
                && l.contains("insufficient scope")
                && l.contains("method=POST")
        })
        .count();
    assert!(refused >= 2, "mounts refused with 401:\n{}", reg.log());

    // A wrong password: the token service refuses, exit 4, and the password is nowhere.
    let run = push(&reg, &layout, "team/app:v2", &[], "wrong-pass-77", &r("5.json"));
    run.expect_code(4);
    let rep = std::fs::read_to_string(r("5.json")).unwrap();
    assert!(rep.contains("AuthenticationFailed"), "{rep}");
    for text in [&run.stdout, &run.stderr, &rep] {
        assert!(!text.contains("wrong-pass-77") && !text.contains(PASSWORD));
    }
}
