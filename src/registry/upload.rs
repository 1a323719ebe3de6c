//! Blob uploads and cross-repository mounts, on reqwest: what oci-client 0.18 lacks
//! (a mount's `202` session reused for the upload, a token with pull scope on the mount
//! source, a streamed body verified against its digest before the registry commits it).

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures_util::stream;
use tokio::io::AsyncReadExt;

use super::error::{self, Error};
use super::{Challenge, RegistryClient, pull_scope, push_scope};
use crate::digest::Digest;
use crate::layout::BlobVerifier;

/// Bytes read from disk per body chunk.
const CHUNK: usize = 256 * 1024;

/// An upload the registry has opened (its `Location`).
#[derive(Debug, Clone)]
pub struct UploadSession {
    pub(super) location: String,
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
        let base = url::Url::parse(url).map_err(|e| Error::InvalidResponse {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        base.join(location)
            .map(|u| u.to_string())
            .map_err(|e| Error::InvalidResponse {
                url: url.to_string(),
                reason: format!("bad Location {location:?}: {e}"),
            })
    }

    /// `POST /v2/<repository>/blobs/uploads/?mount=<digest>&from=<source>`.
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
            s => {
                let body = resp.bytes().await.unwrap_or_default();
                Err(error::from_response_body("POST", &url, s, &body))
            }
        }
    }

    /// `POST /v2/<repository>/blobs/uploads/`: opens an upload session.
    pub async fn start_upload(&self, repository: &str) -> Result<UploadSession, Error> {
        let url = format!("{}/v2/{repository}/blobs/uploads/", self.base);
        let resp = self
            .send_with_auth("POST", &url, &[push_scope(repository)], |c| c.post(&url))
            .await?;
        match resp.status().as_u16() {
            202 => Ok(UploadSession {
                location: self.resolve_location(&url, &resp)?,
            }),
            s => {
                let body = resp.bytes().await.unwrap_or_default();
                Err(error::from_response_body("POST", &url, s, &body))
            }
        }
    }

    /// `DELETE` on an upload session we will not use (best effort).
    pub async fn cancel_upload(&self, repository: &str, session: UploadSession) {
        let url = session.location;
        let _ = self
            .send_with_auth("DELETE", &url, &[push_scope(repository)], |c| c.delete(&url))
            .await;
    }

    /// Streams `file` into `session` with one `PATCH`, then commits it with
    /// `PUT ?digest=`. Every byte goes through `verifier`; a blob whose size or digest is
    /// wrong fails before its last chunk is sent, so the registry never commits it.
    /// `progress` is called with the bytes sent so far.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload(
        &self,
        repository: &str,
        session: UploadSession,
        file: std::fs::File,
        verifier: BlobVerifier,
        digest: &Digest,
        size: u64,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<(), Error> {
        let scopes = [push_scope(repository)];
        let failure: Arc<Mutex<Option<crate::layout::Error>>> = Arc::default();
        let mut location = session.location;
        if size > 0 {
            let body = verified_body(file, verifier, size, failure.clone(), progress);
            let req = self
                .authorize(
                    self.http
                        .patch(&location)
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_LENGTH, size)
                        .body(body),
                    &scopes,
                )
                .await?;
            let sent = req.send().await;
            let content_failure = failure.lock().unwrap().take();
            if let Some(e) = content_failure {
                // Nothing was committed; tell the registry to drop what it received.
                self.cancel_upload(repository, UploadSession { location }).await;
                return Err(Error::Content(e));
            }
            let resp = sent.map_err(|e| error::network("PATCH", &location, e))?;
            match resp.status().as_u16() {
                202 | 204 => location = self.resolve_location(&location, &resp)?,
                401 | 403 => return Err(self.unauthorized(Some(scopes.join(" ")), resp.status().as_u16())),
                s => {
                    let body = resp.bytes().await.unwrap_or_default();
                    return Err(error::from_response_body("PATCH", &location, s, &body));
                }
            }
        } else if let Err(e) = verifier.finish() {
            self.cancel_upload(repository, UploadSession { location }).await;
            return Err(Error::Content(e));
        }
        let mut commit = url::Url::parse(&location).map_err(|e| Error::InvalidResponse {
            url: location.clone(),
            reason: e.to_string(),
        })?;
        commit.query_pairs_mut().append_pair("digest", &digest.to_string());
        let commit = commit.to_string();
        let resp = self
            .send_with_auth("PUT", &commit, &scopes, |c| {
                c.put(&commit).header(reqwest::header::CONTENT_LENGTH, 0)
            })
            .await?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            s => {
                let body = resp.bytes().await.unwrap_or_default();
                Err(error::from_response_body("PUT", &commit, s, &body))
            }
        }
    }
}

struct BodyState {
    file: tokio::fs::File,
    verifier: Option<BlobVerifier>,
    size: u64,
    sent: u64,
    failure: Arc<Mutex<Option<crate::layout::Error>>>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

/// A request body that reads `file` in chunks and checks them with `verifier`. The digest is
/// checked when the last byte is read, before that chunk is handed to the connection.
fn verified_body(
    file: std::fs::File,
    verifier: BlobVerifier,
    size: u64,
    failure: Arc<Mutex<Option<crate::layout::Error>>>,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> reqwest::Body {
    let state = BodyState {
        file: tokio::fs::File::from_std(file),
        verifier: Some(verifier),
        size,
        sent: 0,
        failure,
        progress,
    };
    let s = stream::unfold(state, |mut st| async move {
        let verifier = st.verifier.as_mut()?;
        let want = CHUNK.min((st.size - st.sent) as usize).max(1);
        let mut buf = BytesMut::with_capacity(want);
        let fail = |st: BodyState, e: crate::layout::Error| {
            let text = e.to_string();
            *st.failure.lock().unwrap() = Some(e);
            let mut st = st;
            st.verifier = None;
            Some((Err(std::io::Error::other(text)), st))
        };
        match st.file.read_buf(&mut buf).await {
            Ok(0) => {
                // The file ended before `size` bytes (or size was reached already).
                let v = st.verifier.take().expect("checked above");
                match v.finish() {
                    Ok(()) => None,
                    Err(e) => fail(st, e),
                }
            }
            Ok(n) => {
                if let Err(e) = verifier.update(&buf) {
                    return fail(st, e);
                }
                st.sent += n as u64;
                if st.sent == st.size {
                    let v = st.verifier.take().expect("checked above");
                    if let Err(e) = v.finish() {
                        return fail(st, e);
                    }
                }
                (st.progress)(st.sent);
                Some((Ok(buf.freeze()), st))
            }
            Err(e) => {
                st.verifier = None;
                Some((Err(e), st))
            }
        }
    });
    reqwest::Body::wrap_stream(s)
}
