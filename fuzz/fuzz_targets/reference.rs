//! Target references and platforms: parse or refuse, never panic; what parses prints back
//! to something that parses to the same thing.
#![no_main]
use imagepush::platform::Platform;
use imagepush::reference::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = Target::parse(text) {
        let again =
            Target::parse(&t.to_string()).expect("a parsed target prints as a valid target");
        assert_eq!(again.repository, t.repository);
        assert_eq!(again.digest, t.digest);
        assert!(!t.repository.chars().any(|c| c.is_ascii_uppercase()));
    }
    if let Ok(p) = text.parse::<Platform>() {
        let again: Platform =
            p.to_string().parse().expect("a parsed platform prints as a valid platform");
        assert!(again.matches_strict(&p));
    }
});
