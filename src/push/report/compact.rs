//! The compact report: a [`PushReport`] as JSON that fits a Kubernetes termination message
//! (kubelet keeps its last 4096 bytes, so a longer one would be cut into invalid JSON).
//!
//! Whatever the report holds (long messages of multi-byte characters, thousands of tags, a
//! hostile layout's media types and platform features), the result is a valid `PushReport`
//! of at most the limit in bytes. It gives up what the controller needs least first and keeps
//! the error's reason, exit code, `transient` and `retryAfterSeconds`, the digest, the
//! totals and the number of tags (`tags` plus `tagsOmitted`) and of a mirror's images
//! (`images` plus `imagesOmitted`).

use super::PushReport;

/// What a cut string ends with.
const ELLIPSIS: &str = "…";
/// Strings shorter than this in JSON (bytes, escapes counted) are never cut...
const MIN_CUT: usize = 16;
/// ...nor are names (the error's reason, `apiVersion`, `kind`) shorter than this.
const MIN_CUT_NAME: usize = 64;
/// The smallest limit the guarantee holds for: a report without lists, tags or index
/// fallback, every string shorter than its floor, is about 850 bytes.
pub const MIN_LIMIT: usize = 1024;

impl PushReport {
    /// The report as JSON of at most `limit` bytes (at least [`MIN_LIMIT`]). Dropped in this
    /// order until it fits: the per-blob, per-manifest and per-referrer lists (the totals keep
    /// the counts),
    /// the per-tag and per-image copies of the index fallback, the tags and then the images
    /// that do not fit (counted in `tagsOmitted` and `imagesOmitted`), the tail of the longest
    /// strings (the error message first, as a rule; cut strings end with `…`), then the index
    /// fallback and every tag and image.
    pub fn compact_json(&self, limit: usize) -> String {
        debug_assert!(limit >= MIN_LIMIT, "a compact report needs {MIN_LIMIT} bytes");
        let full = json(self);
        if full.len() <= limit {
            return full;
        }
        let mut small = self.clone();
        small.blobs.clear();
        small.manifests.clear();
        small.referrers.clear();
        for tag in &mut small.tags {
            tag.manifest_pushed_instead_of_index = None;
        }
        for image in &mut small.images {
            image.manifest_pushed_instead_of_index = None;
        }
        let text = json(&small);
        if text.len() <= limit {
            return text;
        }
        keep_lists_that_fit(&mut small, limit);
        if let Some(text) = cut_strings_to_fit(&mut small, limit) {
            return text;
        }
        small.manifest_pushed_instead_of_index = None;
        keep_lists_that_fit(&mut small, 0);
        cut_strings_to_fit(&mut small, limit).unwrap_or_else(|| json(&small))
    }
}

/// The tags, then the images, that fit within `limit` (none for 0); the others counted.
fn keep_lists_that_fit(report: &mut PushReport, limit: usize) {
    keep_first_that_fit(report, limit, |r| (&mut r.tags, &mut r.tags_omitted));
    keep_first_that_fit(report, limit, |r| (&mut r.images, &mut r.images_omitted));
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("a report serializes")
}

/// One of the report's lists and its count of omitted entries.
type List<T> = fn(&mut PushReport) -> (&mut Vec<T>, &mut Option<u64>);

/// Keeps the first entries of a list that fit beside the rest of the report within `limit`
/// (none for 0) and counts the others.
fn keep_first_that_fit<T: serde::Serialize>(report: &mut PushReport, limit: usize, list: List<T>) {
    let (entries, omitted) = list(report);
    let entries = std::mem::take(entries);
    let total = entries.len() as u64 + omitted.unwrap_or(0);
    *omitted = Some(total);
    let mut room = limit.saturating_sub(json(report).len());
    let mut kept = 0;
    for entry in entries {
        let len = json(&entry).len() + usize::from(kept > 0); // and a comma
        if len > room {
            break;
        }
        room -= len;
        list(report).0.push(entry);
        kept += 1;
    }
    let omitted = total - kept;
    *list(report).1 = (omitted > 0).then_some(omitted);
}

/// Cuts the longest of the report's own strings until the JSON fits; None when every one is
/// shorter than `MIN_CUT` and it still does not.
fn cut_strings_to_fit(report: &mut PushReport, limit: usize) -> Option<String> {
    loop {
        let text = json(report);
        if text.len() <= limit {
            return Some(text);
        }
        let excess = text.len() - limit;
        let (longest, _) = free_text(report)
            .into_iter()
            .filter(|(s, floor)| escaped_len(s) >= *floor)
            .max_by_key(|(s, _)| escaped_len(s))?;
        let keep = escaped_len(longest).saturating_sub(excess + ELLIPSIS.len());
        *longest = cut(longest, keep);
    }
}

/// The strings of the report itself (not of its lists), which nothing else bounds, each with
/// the length below which it is not cut.
fn free_text(report: &mut PushReport) -> Vec<(&mut String, usize)> {
    let mut strings = vec![
        (&mut report.api_version, MIN_CUT_NAME),
        (&mut report.kind, MIN_CUT_NAME),
        (&mut report.target, MIN_CUT),
        (&mut report.repository, MIN_CUT),
    ];
    strings.extend(report.media_type.as_mut().map(|s| (s, MIN_CUT)));
    if let Some(error) = &mut report.error {
        strings.push((&mut error.message, MIN_CUT));
        strings.push((&mut error.reason, MIN_CUT_NAME));
    }
    strings
}

/// The longest prefix of `s` (less an ellipsis an earlier cut left) of at most `max` bytes
/// in JSON, with an ellipsis.
fn cut(s: &str, max: usize) -> String {
    let s = s.strip_suffix(ELLIPSIS).unwrap_or(s);
    let mut used = 0;
    let end = s
        .char_indices()
        .find(|(_, c)| {
            used += escaped_char_len(*c);
            used > max
        })
        .map_or(s.len(), |(i, _)| i);
    format!("{}{ELLIPSIS}", &s[..end])
}

/// The bytes `s` takes inside a JSON string.
fn escaped_len(s: &str) -> usize {
    s.chars().map(escaped_char_len).sum()
}

/// What serde_json writes for `c` inside a string: two-character escapes for the quote, the
/// backslash and five control characters, `\u00XX` for the other control characters, UTF-8
/// for everything else.
fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        BlobOutcome, BlobReport, DescriptorSummary, ImageReport, IndexFallback, ManifestOutcome,
        ManifestReport, ReportError, TagReport,
    };
    use super::*;
    use crate::digest::Digest;
    use crate::platform::Platform;

    /// xorshift64*: reproducible reports without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        /// A length that is usually small and sometimes far over any limit.
        fn len(&mut self) -> usize {
            match self.below(10) {
                0..=5 => self.below(40) as usize,
                6 | 7 => self.below(600) as usize,
                8 => self.below(5000) as usize,
                _ => 4000 + self.below(20_000) as usize,
            }
        }

        /// Text of `len` characters mixing ASCII, multi-byte characters and everything JSON
        /// escapes.
        fn chars(&mut self, len: usize) -> String {
            const ALPHABETS: [&[char]; 4] = [
                &['a', 'b', '/', ':', '.', '-', '0'],
                &['é', 'ß', '漢', '字', '🦀', '\u{10ffff}'],
                &['"', '\\', '\n', '\t', '\u{1}', '\u{1f}', '\u{7f}'],
                &['a', 'é', '"', '\u{0}', '🦀', ' '],
            ];
            let alphabet = ALPHABETS[self.below(4) as usize];
            (0..len).map(|_| alphabet[self.below(alphabet.len() as u64) as usize]).collect()
        }

        /// Text of a heavy-tailed length.
        fn text(&mut self) -> String {
            let len = self.len();
            self.chars(len)
        }

        /// Text for the entries of long lists: short, now and then long.
        fn word(&mut self) -> String {
            let len = if self.below(50) == 0 { 2000 } else { self.below(40) as usize };
            self.chars(len)
        }

        fn digest(&mut self) -> Digest {
            Digest::sha256(&self.next().to_le_bytes())
        }

        fn summary(&mut self) -> DescriptorSummary {
            let mut platform = Platform::new(self.word(), self.word(), Some("v8"));
            platform.os_features = (0..self.below(100)).map(|_| self.word()).collect();
            DescriptorSummary {
                digest: self.digest(),
                size: self.next(),
                media_type: self.word(),
                platform: (self.below(2) == 0).then_some(platform),
            }
        }

        fn fallback(&mut self) -> Option<IndexFallback> {
            (self.below(3) == 0).then(|| IndexFallback {
                original_index: self.summary(),
                selected_manifest: self.summary(),
            })
        }

        fn report(&mut self) -> PushReport {
            let mut r = PushReport::new(self.text(), self.text());
            if self.below(4) == 0 {
                // Real shapes: a 512-character target, a short reason.
                r.target = format!("registry.example.com:5000/{}:v1", "a".repeat(480));
                r.repository = r.target[..r.target.len() - 3].to_string();
            }
            r.digest = (self.below(5) != 0).then(|| self.digest());
            r.size = Some(self.next());
            r.media_type = Some(self.text());
            r.manifest_pushed_instead_of_index = self.fallback();
            if let Some(f) = &mut r.manifest_pushed_instead_of_index {
                f.original_index.media_type = self.text();
            }
            let tags = [0, 1, 3, 40, 500][self.below(5) as usize];
            r.tags = (0..tags)
                .map(|i| TagReport {
                    tag: format!("{i}-{}", self.word()),
                    digest: self.digest(),
                    size: self.next(),
                    media_type: self.word(),
                    manifest_pushed_instead_of_index: self.fallback(),
                })
                .collect();
            // A mirror has images instead of tags.
            let images =
                if r.tags.is_empty() { [0, 1, 3, 40, 500][self.below(5) as usize] } else { 0 };
            r.images = (0..images)
                .map(|i| ImageReport {
                    repository: format!("reg:5000/m/{i}/{}", self.word()),
                    tag: (self.below(4) != 0).then(|| self.word()),
                    digest: self.digest(),
                    size: self.next(),
                    media_type: self.word(),
                    manifest_pushed_instead_of_index: self.fallback(),
                })
                .collect();
            r.blobs = (0..self.below(100))
                .map(|_| BlobReport {
                    digest: self.digest(),
                    size: self.next(),
                    media_type: self.word(),
                    outcome: BlobOutcome::Mounted,
                    from: Some(self.word()),
                    repository: (images > 0).then(|| self.word()),
                })
                .collect();
            r.manifests = (0..self.below(20))
                .map(|_| ManifestReport {
                    digest: self.digest(),
                    size: self.next(),
                    media_type: self.word(),
                    outcome: ManifestOutcome::Pushed,
                    repository: (images > 0).then(|| self.word()),
                })
                .collect();
            r.recount();
            r.duration_ms = self.next();
            if self.below(2) == 0 {
                let reason = if self.below(5) == 0 { self.text() } else { "Terminated".into() };
                r.error = Some(ReportError {
                    reason,
                    message: self.text(),
                    exit_code: self.next() as i32,
                    transient: self.below(2) == 0,
                    retry_after_seconds: (self.below(2) == 0).then(|| self.next()),
                });
            }
            r
        }
    }

    fn check(report: &PushReport, limit: usize) {
        let text = report.compact_json(limit);
        assert!(text.len() <= limit, "{} bytes: {text}", text.len());
        let back: PushReport = serde_json::from_str(&text).expect("valid JSON of a PushReport");
        let full = serde_json::to_string(report).unwrap();
        if full.len() <= limit {
            assert_eq!(text, full);
            return;
        }
        assert_eq!(back.digest, report.digest);
        assert_eq!(back.size, report.size);
        assert_eq!(back.totals, report.totals);
        assert_eq!(back.duration_ms, report.duration_ms);
        assert_eq!(
            back.tags.len() as u64 + back.tags_omitted.unwrap_or(0),
            report.tags.len() as u64
        );
        assert_eq!(
            back.tags[..],
            report.tags[..back.tags.len()]
                .iter()
                .cloned()
                .map(|mut t| {
                    t.manifest_pushed_instead_of_index = None;
                    t
                })
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(
            back.images.len() as u64 + back.images_omitted.unwrap_or(0),
            report.images.len() as u64
        );
        assert_eq!(
            back.images[..],
            report.images[..back.images.len()]
                .iter()
                .cloned()
                .map(|mut i| {
                    i.manifest_pushed_instead_of_index = None;
                    i
                })
                .collect::<Vec<_>>()[..]
        );
        match (&back.error, &report.error) {
            (None, None) => {}
            (Some(b), Some(r)) => {
                assert_eq!(
                    (b.exit_code, b.transient, b.retry_after_seconds),
                    (r.exit_code, r.transient, r.retry_after_seconds)
                );
                if escaped_len(&r.reason) < MIN_CUT_NAME {
                    assert_eq!(b.reason, r.reason);
                }
                let kept = b.message.strip_suffix(ELLIPSIS).unwrap_or(&b.message);
                assert!(r.message.starts_with(kept));
            }
            _ => panic!("the error went missing: {text}"),
        }
    }

    #[test]
    fn any_report_fits_the_limit_as_a_valid_report() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..400 {
            let report = rng.report();
            check(&report, 4096);
            check(&report, MIN_LIMIT);
        }
    }

    #[test]
    fn a_long_multibyte_message_is_cut_on_a_character_to_what_fits() {
        let mut report = PushReport::new("reg:5000/team/app:v1".into(), "reg:5000/team/app".into());
        report.error = Some(ReportError {
            reason: "Terminated".into(),
            message: "漢".repeat(5000),
            exit_code: 143,
            transient: true,
            retry_after_seconds: Some(30),
        });
        let text = report.compact_json(4096);
        assert!(text.len() <= 4096 && text.len() > 4000, "{}", text.len());
        let back: PushReport = serde_json::from_str(&text).unwrap();
        let error = back.error.unwrap();
        assert!(error.message.ends_with("漢…"), "{}", error.message);
        assert_eq!(
            (error.reason.as_str(), error.exit_code, error.transient),
            ("Terminated", 143, true)
        );
        assert_eq!(error.retry_after_seconds, Some(30));
    }

    #[test]
    fn many_tags_keep_the_first_that_fit_and_count_the_rest() {
        let mut report = PushReport::new("reg:5000/team/app".into(), "reg:5000/team/app".into());
        let digest = Digest::sha256(b"m");
        report.digest = Some(digest.clone());
        report.tags = (0..200)
            .map(|i| TagReport {
                tag: format!("v{i}"),
                digest: digest.clone(),
                size: 500,
                media_type: crate::oci::OCI_MANIFEST.into(),
                manifest_pushed_instead_of_index: None,
            })
            .collect();
        let back: PushReport = serde_json::from_str(&report.compact_json(4096)).unwrap();
        assert!(back.tags.len() > 10, "{}", back.tags.len());
        assert_eq!(back.tags[0].tag, "v0");
        assert_eq!(back.tags.len() as u64 + back.tags_omitted.unwrap(), 200);
        assert_eq!(back.digest, Some(digest.clone()));

        // A mirror of 500 images: the first that fit, and the count.
        let mut report = PushReport::new("reg:5000/m".into(), "reg:5000/m".into());
        report.images = (0..500)
            .map(|i| ImageReport {
                repository: format!("reg:5000/m/library/app{i}"),
                tag: Some("1.0".into()),
                digest: digest.clone(),
                size: 500,
                media_type: crate::oci::OCI_MANIFEST.into(),
                manifest_pushed_instead_of_index: None,
            })
            .collect();
        let back: PushReport = serde_json::from_str(&report.compact_json(4096)).unwrap();
        assert!(back.images.len() > 10, "{}", back.images.len());
        assert_eq!(back.images[0].repository, "reg:5000/m/library/app0");
        assert_eq!(back.images.len() as u64 + back.images_omitted.unwrap(), 500);
    }
}
