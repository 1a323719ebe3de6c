//! Blob uploads and cross-repository mounts, on reqwest: what oci-client 0.18 lacks
//! (a mount's `202` session reused for the upload, a token with pull scope on the mount
//! source, a streamed body verified against its digest before the registry commits it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream;
use std::io::Read;

use futures_util::StreamExt;

use super::error::{self, Error};
use super::{Challenge, RegistryClient, pull_scope, push_scope};
use crate::digest::Digest;
use crate::layout::BlobVerifier;
use crate::source::BlobStream;

/// Bytes read from disk per body chunk.
const CHUNK: usize = 256 * 1024;
/// Blobs up to this size are read and verified whole, then sent in the commit `PUT` itself
/// (one request instead of a `PATCH` and an empty `PUT`), as the distribution spec allows.
const SMALL_BLOB: u64 = 1024 * 1024;

/// An upload the registry has opened (its `Location`).
#[derive(Debug, Clone)]
pub struct UploadSession {
    pub(super) location: String,
}

impl UploadSession {
    /// A session for tests of what sits above the registry client.
    #[cfg(test)]
    pub fn for_tests(location: String) -> UploadSession {
        UploadSession { location }
    }
}

/// What a mount request did.
#[derive(Debug)]
pub enum MountOutcome {
    /// 201: the registry linked the blob from the source repository.
    Mounted,
    /// 202: the registry could not mount and opened an upload session instead.
    Started(UploadSession),
}

impl RegistryClient {
    fn resolve_location(&self, url: &str, resp: &reqwest::Response) -> Result<String, Error> {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| Error::InvalidResponse {
                url: url.to_string(),
                reason: format!("{} without a Location header", resp.status().as_u16()),
            })?;
        let base = url::Url::parse(url)
            .map_err(|e| Error::InvalidResponse { url: url.to_string(), reason: e.to_string() })?;
        base.join(location).map(|u| u.to_string()).map_err(|e| Error::InvalidResponse {
            url: url.to_string(),
            reason: format!("bad Location {location:?}: {e}"),
        })
    }

    /// `POST /v2/<repository>/blobs/uploads/?mount=<digest>&from=<source>`, retried on
    /// transient failures.
    ///
    /// The token asks for pull on `source` as well as push on `repository`. When the token
    /// service refuses that scope, the mount is tried with the target's scope alone, where the
    /// registry answers 202 and the blob is uploaded instead.
    pub async fn mount(
        &self,
        repository: &str,
        digest: &Digest,
        source: &str,
    ) -> Result<MountOutcome, Error> {
        self.retrying(&format!("mount {digest} from {source}"), || {
            self.mount_once(repository, digest, source)
        })
        .await
    }

    async fn mount_once(
        &self,
        repository: &str,
        digest: &Digest,
        source: &str,
    ) -> Result<MountOutcome, Error> {
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let digest_text = digest.to_string();
        let query = [("mount", digest_text.as_str()), ("from", source)];
        let with_source = [push_scope(repository), pull_scope(source)];
        let resp = match self
            .send_with_auth("POST", &url, &with_source, |c| c.post(&url).query(&query))
            .await
        {
            Err(Error::Unauthorized { .. })
                if matches!(self.challenge().await?, Challenge::Bearer { .. }) =>
            {
                tracing::debug!(%digest, source, "no pull scope on the mount source; trying without it");
                self.send_with_auth("POST", &url, &[push_scope(repository)], |c| {
                    c.post(&url).query(&query)
                })
                .await?
            }
            other => other?,
        };
        match resp.status().as_u16() {
            201 => Ok(MountOutcome::Mounted),
            202 => Ok(MountOutcome::Started(UploadSession {
                location: self.resolve_location(&url, &resp)?,
            })),
            _ => Err(error::from_response("POST", &url, resp).await),
        }
    }

    /// `POST /v2/<repository>/blobs/uploads/`: opens an upload session.
    pub async fn start_upload(&self, repository: &str) -> Result<UploadSession, Error> {
        self.retrying("POST upload", || async {
            let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
            let resp = self
                .send_with_auth("POST", &url, &[push_scope(repository)], |c| c.post(&url))
                .await?;
            match resp.status().as_u16() {
                202 => Ok(UploadSession { location: self.resolve_location(&url, &resp)? }),
                _ => Err(error::from_response("POST", &url, resp).await),
            }
        })
        .await
    }

    /// `DELETE` on an upload session we will not use (best effort).
    pub async fn cancel_upload(&self, repository: &str, session: UploadSession) {
        let url = session.location;
        let _ = self
            .send_with_auth("DELETE", &url, &[push_scope(repository)], |c| c.delete(&url))
            .await;
    }

    /// `GET` on an upload session: the location to continue at, and how many bytes the
    /// registry holds (its `Range`, `0-<last byte>`). `None` when the session is gone. The
    /// count is `None` when it cannot be known: no `Range`, or `0-0`, which CNCF distribution
    /// sends for an empty session and a registry following the spec for one byte.
    async fn upload_status(
        &self,
        repository: &str,
        location: &str,
    ) -> Result<Option<(String, Option<u64>)>, Error> {
        let resp = self
            .send_with_auth("GET", location, &[push_scope(repository)], |c| c.get(location))
            .await?;
        match resp.status().as_u16() {
            204 | 200 => {
                let received = resp
                    .headers()
                    .get(reqwest::header::RANGE)
                    .and_then(|h| h.to_str().ok())
                    .and_then(|r| {
                        r.trim()
                            .trim_start_matches("bytes=")
                            .split_once('-')
                            .map(|(_, end)| end.to_string())
                    })
                    .and_then(|end| end.parse::<u64>().ok())
                    .filter(|end| *end > 0)
                    .map(|end| end + 1);
                let next =
                    self.resolve_location(location, &resp).unwrap_or_else(|_| location.to_string());
                Ok(Some((next, received)))
            }
            404 => Ok(None),
            _ => Err(error::from_response("GET", location, resp).await),
        }
    }

    /// Streams the blob into `session` and commits it with `PUT ?digest=` (a blob of at most
    /// 1 MiB goes in the commit itself, see `upload_small`).
    ///
    /// Every byte goes through the verifier; a blob whose size or digest is wrong fails before
    /// its last chunk is sent, so the registry never commits it. When the connection breaks
    /// or the registry fails transiently mid-upload, the upload **resumes** from the offset the
    /// registry reports (`GET` on the session, `Range`), re-sending nothing it already has;
    /// when the session is gone, a fresh one starts. An expired token is renewed on the way.
    /// `open` opens the blob afresh for each try; `progress` gets the bytes sent so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload(
        &self,
        repository: &str,
        session: UploadSession,
        open: &(dyn Fn() -> Result<BlobStream, crate::layout::Error> + Sync),
        digest: &Digest,
        size: u64,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<(), Error> {
        if size <= SMALL_BLOB {
            return self.upload_small(repository, session, open, digest, size, progress).await;
        }
        let scopes = [push_scope(repository)];
        let mut location = session.location;
        let mut offset: u64 = 0;
        let mut attempt = 1;
        let started = Instant::now();
        loop {
            let stream = match open() {
                Ok(opened) => opened,
                Err(e) => {
                    self.cancel_upload(repository, UploadSession { location }).await;
                    return Err(Error::Content(e));
                }
            };
            // (An empty blob is small: `upload_small` has it.)
            let result =
                self.patch(repository, &location, stream, offset, size, progress.clone()).await;
            let failure = match result {
                Ok(next) => {
                    location = next;
                    break;
                }
                Err(Error::Content(e)) => {
                    // Nothing was committed; tell the registry to drop what it received.
                    self.cancel_upload(repository, UploadSession { location }).await;
                    return Err(Error::Content(e));
                }
                // A dropped session is found gone by the status check below: a new one starts.
                Err(e) => e,
            };
            let what = format!("upload {digest} at byte {offset}");
            self.pause_before_retry(&scopes, &what, &mut attempt, started, failure).await?;
            match self.upload_status(repository, &location).await {
                Ok(Some((next, Some(received)))) if received <= size => {
                    tracing::info!(%digest, received, size, "resuming the upload where the registry left it");
                    location = next;
                    offset = received;
                }
                other => {
                    let why = match &other {
                        Ok(Some((_, Some(received)))) => {
                            format!("the registry reports {received} bytes of {size}")
                        }
                        Ok(Some((_, None))) => "the registry does not say how much it has".into(),
                        Ok(None) => "the registry no longer knows the session".into(),
                        Err(e) => e.to_string(),
                    };
                    tracing::info!(%digest, why, "cannot resume; starting a new upload");
                    if let Ok(Some((old, _))) = other {
                        self.cancel_upload(repository, UploadSession { location: old }).await;
                    }
                    location = self.start_upload(repository).await?.location;
                    offset = 0;
                }
            }
        }
        let commit = commit_url(&location, digest)?;
        let committed = self
            .retrying(&format!("commit {digest}"), || async {
                let resp = self
                    .send_with_auth("PUT", &commit, &scopes, |c| {
                        c.put(&commit).header(reqwest::header::CONTENT_LENGTH, 0)
                    })
                    .await?;
                match resp.status().as_u16() {
                    201 | 204 => Ok(()),
                    _ => Err(error::from_response("PUT", &commit, resp).await),
                }
            })
            .await;
        match committed {
            Ok(()) => Ok(()),
            // A commit whose answer got lost may have happened: the registry is the judge.
            Err(e)
                if e.is_transient()
                    && self.blob_exists(repository, digest).await.unwrap_or(false) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A small blob: verified whole before anything is sent, then committed with its bytes in
    /// the `PUT ?digest=`. A failed try starts over in a new session (there is nothing to
    /// resume in a single request); a commit whose answer got lost is looked up first.
    async fn upload_small(
        &self,
        repository: &str,
        session: UploadSession,
        open: &(dyn Fn() -> Result<BlobStream, crate::layout::Error> + Sync),
        digest: &Digest,
        size: u64,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<(), Error> {
        let read = match open() {
            Ok((reader, verifier)) => {
                tokio::task::spawn_blocking(move || read_verified(reader, verifier, size))
                    .await
                    .expect("reading a blob does not panic")
            }
            Err(e) => Err(e),
        };
        let bytes = match read {
            Ok(bytes) => bytes::Bytes::from(bytes),
            Err(e) => {
                self.cancel_upload(repository, session).await;
                return Err(Error::Content(e));
            }
        };
        let scopes = [push_scope(repository)];
        let mut location = session.location;
        let mut attempt = 1;
        let started = Instant::now();
        loop {
            let commit = commit_url(&location, digest)?;
            let result = async {
                let resp = self
                    .send_with_auth("PUT", &commit, &scopes, |c| {
                        c.put(&commit)
                            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                            .body(bytes.clone())
                    })
                    .await?;
                match resp.status().as_u16() {
                    201 | 204 => Ok(()),
                    _ => Err(error::from_response("PUT", &commit, resp).await),
                }
            }
            .await;
            let failure = match result {
                Ok(()) => {
                    progress(size);
                    return Ok(());
                }
                Err(e) => e,
            };
            if failure.is_transient() && self.blob_exists(repository, digest).await.unwrap_or(false)
            {
                progress(size);
                return Ok(());
            }
            let what = format!("upload {digest}");
            self.pause_before_retry(&scopes, &what, &mut attempt, started, failure).await?;
            self.cancel_upload(repository, UploadSession { location }).await;
            location = self.start_upload(repository).await?.location;
        }
    }

    /// After a failed try of an upload: gives `failure` back unless another try may fix it (a
    /// transient failure, a refused token — renewed here, e.g. one that expired during a long
    /// upload — or a dropped session) and the retry policy allows one; else tells the observer
    /// and waits before that try.
    async fn pause_before_retry(
        &self,
        scopes: &[String],
        what: &str,
        attempt: &mut u32,
        started: Instant,
        failure: Error,
    ) -> Result<(), Error> {
        if !(failure.is_transient() || failure.is_unauthorized() || failure.is_upload_unknown()) {
            return Err(failure);
        }
        if failure.is_unauthorized() {
            self.tokens.forget(scopes).await;
        }
        let Some(delay) = self.retry.next_delay(*attempt, started, failure.retry_after()) else {
            return Err(failure);
        };
        super::retry::notify(self.observer.as_ref(), what, *attempt, &self.retry, delay, &failure);
        tokio::time::sleep(delay).await;
        *attempt += 1;
        Ok(())
    }

    /// One `PATCH` carrying bytes `offset..size`; returns the next location.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        repository: &str,
        location: &str,
        (reader, verifier): BlobStream,
        offset: u64,
        size: u64,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<String, Error> {
        let scopes = [push_scope(repository)];
        let failure: Arc<Mutex<Option<crate::layout::Error>>> = Arc::default();
        // The watchdog: a body that stops moving for `stall_timeout` is abandoned (and retried),
        // since nothing else bounds a streamed request.
        let moved = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let moved_by_body = moved.clone();
        let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |done| {
            moved_by_body.store(done, std::sync::atomic::Ordering::Relaxed);
            progress(done)
        });
        let body = verified_body(reader, verifier, offset, size, failure.clone(), progress);
        let mut req = self
            .http
            .patch(location)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size - offset);
        if offset > 0 {
            req = req.header(reqwest::header::CONTENT_RANGE, format!("{offset}-{}", size - 1));
        }
        let (req, _) = self.authorize(req.body(body), location, &scopes).await?;
        let stall_timeout = self.stall_timeout;
        let watchdog = async {
            let mut last = (moved.load(std::sync::atomic::Ordering::Relaxed), Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(250).min(stall_timeout)).await;
                let now = moved.load(std::sync::atomic::Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() >= stall_timeout {
                    return now;
                }
            }
        };
        let sent = tokio::select! {
            sent = req.send() => sent,
            at = watchdog => {
                return Err(Error::Network {
                    method: "PATCH",
                    url: location.to_string(),
                    detail: format!("the upload stalled at byte {at} for {}s", stall_timeout.as_secs()),
                });
            }
        };
        let content_failure = failure.lock().unwrap().take();
        if let Some(e) = content_failure {
            return Err(Error::Content(e));
        }
        let resp = sent.map_err(|e| error::network("PATCH", location, e))?;
        match resp.status().as_u16() {
            202 | 204 => self.resolve_location(location, &resp),
            401 | 403 => Err(self.refused(resp.url().as_str(), &scopes, resp.status().as_u16())),
            _ => Err(error::from_response("PATCH", location, resp).await),
        }
    }
}

/// `location` with `digest=` added to its query: where an upload is committed.
fn commit_url(location: &str, digest: &Digest) -> Result<String, Error> {
    let mut commit = url::Url::parse(location)
        .map_err(|e| Error::InvalidResponse { url: location.to_string(), reason: e.to_string() })?;
    commit.query_pairs_mut().append_pair("digest", &digest.to_string());
    Ok(commit.to_string())
}

/// Reads a whole (small) blob through its verifier: its size and digest are checked before
/// a byte of it is sent.
fn read_verified(
    reader: Box<dyn Read + Send>,
    mut verifier: BlobVerifier,
    size: u64,
) -> Result<Vec<u8>, crate::layout::Error> {
    let mut bytes = Vec::with_capacity(size as usize);
    // One byte more than the descriptor says, so a longer file is noticed.
    reader.take(size + 1).read_to_end(&mut bytes).map_err(|e| crate::layout::Error::Io {
        path: std::path::PathBuf::from(format!("blob of {size} bytes")),
        source: e,
    })?;
    verifier.update(&bytes)?;
    verifier.finish()?;
    Ok(bytes)
}

/// Feeds the first `offset` bytes of the blob (which the registry already has) to the
/// verifier, so the digest still covers the whole blob, and leaves the file there.
fn skip_verified(
    reader: &mut (dyn Read + Send),
    verifier: &mut BlobVerifier,
    offset: u64,
) -> Result<(), crate::layout::Error> {
    let mut left = offset;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = reader.read(&mut buf[..want]).map_err(|e| crate::layout::Error::Io {
            path: std::path::PathBuf::from(format!("blob being resumed at byte {offset}")),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        verifier.update(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The bytes of a blob from `offset` to `size` as a request body. They are read and verified
/// on a blocking thread (files and hashing stay off the runtime's threads), at most a few
/// chunks ahead of the network: the first `offset` bytes are only hashed (the registry has
/// them), the rest sent. A verification failure ends the body with an error and is left in
/// `failure`; a body dropped (the request given up) ends the thread.
fn verified_body(
    mut reader: Box<dyn Read + Send>,
    mut verifier: BlobVerifier,
    offset: u64,
    size: u64,
    failure: Arc<Mutex<Option<crate::layout::Error>>>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let fail = |e: crate::layout::Error| {
            let text = e.to_string();
            *failure.lock().unwrap() = Some(e);
            let _ = tx.blocking_send(Err(std::io::Error::other(text)));
        };
        if let Err(e) = skip_verified(reader.as_mut(), &mut verifier, offset) {
            return fail(e);
        }
        let mut sent = offset;
        loop {
            let want = CHUNK.min((size - sent) as usize).max(1);
            let mut buf = BytesMut::zeroed(want);
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if n == 0 {
                // The blob ended (before `size` bytes: the verifier says so).
                if let Err(e) = verifier.finish() {
                    fail(e);
                }
                return;
            }
            buf.truncate(n);
            if let Err(e) = verifier.update(&buf) {
                return fail(e);
            }
            sent += n as u64;
            let last = sent == size;
            // Checked before the last chunk goes, so the registry never commits a bad blob.
            if last {
                if let Err(e) = verifier.finish() {
                    return fail(e);
                }
                let _ = tx.blocking_send(Ok(buf.freeze()));
                return;
            }
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return;
            }
        }
    });
    let mut sent = offset;
    let s = tokio_stream_from(rx).map(move |chunk| {
        if let Ok(c) = &chunk {
            sent += c.len() as u64;
            progress(sent);
        }
        chunk
    });
    reqwest::Body::wrap_stream(s)
}

/// The receiver as a stream.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
