//! The distribution API, as far as a push needs it.
//!
//! Every request goes through one reqwest client with our own authorization (`token.rs`:
//! multi-scope bearer tokens, renewed when refused) and our own retries (`retry.rs`, which
//! honour `Retry-After`). oci-client 0.18 covered only blob `HEAD` and raw manifest `PUT`
//! for us, and both lost the response headers (so `Retry-After`) in its errors and fetched
//! their own tokens; `upload.rs` holds mounts and verified, resumable uploads. Manifest
//! bytes are sent exactly as in the layout, so digests never change. This module never
//! reads a layout; it is handed open files and verifiers.

mod error;
pub mod retry;
mod tls;
mod token;
mod upload;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use tokio::sync::OnceCell;

pub use error::Error;
pub use token::Challenge;
pub use upload::{MountOutcome, UploadSession};

use crate::auth::Credential;
use crate::digest::Digest;
use crate::reference::{TagOrDigest, Target};

/// Media types we accept when asking whether a manifest exists.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// How to reach the registry.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Talk plain HTTP to this registry (only when the user named it so).
    pub plain_http: bool,
    /// Extra CA certificates (PEM) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Only for registries the user named.
    pub insecure_skip_tls_verify: bool,
    /// Connect timeout for every request.
    pub connect_timeout: Duration,
    /// Time allowed for a request that carries no blob (HEAD, manifests, tokens).
    pub request_timeout: Duration,
    /// Retries of transient failures (network, 408, 429, 5xx), every request kind.
    pub retry: retry::RetryPolicy,
    /// An upload whose body does not move for this long is abandoned and retried.
    pub stall_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            plain_http: false,
            ca_file: None,
            insecure_skip_tls_verify: false,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            retry: retry::RetryPolicy::default(),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Installs ring as rustls' process-wide crypto provider (kube and reqwest share it), unless
/// one is installed already; returns the one installed.
pub fn install_crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    rustls::crypto::CryptoProvider::get_default().cloned().expect("a provider was installed above")
}

/// A connection to one registry, authenticated for pushes to the repositories it is built
/// for (one target, or every repository of a mirror). One token cache serves them all.
pub struct RegistryClient {
    registry: String,
    /// The repositories pushes go to: tokens for them carry push scope, others only pull.
    push_repositories: HashSet<String>,
    base: String,
    http: reqwest::Client,
    credential: Credential,
    challenge: OnceCell<Challenge>,
    tokens: token::TokenCache,
    request_timeout: Duration,
    retry: retry::RetryPolicy,
    observer: Option<retry::RetryObserver>,
    stall_timeout: Duration,
}

impl RegistryClient {
    /// A client for pushes to `target`'s repository.
    pub fn new(
        target: &Target,
        credential: Credential,
        opts: &ConnectOptions,
    ) -> Result<RegistryClient, Error> {
        let repositories = [target.repository.clone()];
        Self::for_repositories(&target.registry, &target.endpoint, repositories, credential, opts)
    }

    /// A client for pushes to every repository of `repositories` on `registry` (reached at
    /// `endpoint`); credentials and tokens still go only to the registry itself.
    pub fn for_repositories(
        registry: &str,
        endpoint: &str,
        repositories: impl IntoIterator<Item = String>,
        credential: Credential,
        opts: &ConnectOptions,
    ) -> Result<RegistryClient, Error> {
        let provider = install_crypto_provider();
        let extra_roots = match &opts.ca_file {
            Some(path) => tls::read_ca_file(path)?,
            None => Vec::new(),
        };
        let user_agent = concat!("imagepush/", env!("CARGO_PKG_VERSION"));
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.request_timeout)
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::limited(5));
        if opts.insecure_skip_tls_verify {
            // reqwest's own verifier that accepts anything: no trust store is read.
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else {
            builder = builder.tls_backend_preconfigured(tls::client_config(provider, extra_roots)?);
        }
        let http = builder.build().map_err(|e| Error::Client(e.to_string()))?;

        let scheme = if opts.plain_http { "http" } else { "https" };
        Ok(RegistryClient {
            registry: registry.to_string(),
            push_repositories: repositories.into_iter().collect(),
            base: format!("{scheme}://{endpoint}"),
            http,
            credential,
            challenge: OnceCell::new(),
            tokens: token::TokenCache::default(),
            request_timeout: opts.request_timeout,
            retry: opts.retry.clone(),
            observer: None,
            stall_timeout: opts.stall_timeout,
        })
    }

    /// Who hears about retries (the push's progress output).
    pub fn set_retry_observer(&mut self, observer: retry::RetryObserver) {
        self.observer = Some(observer);
    }

    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        retry::retrying(&self.retry, self.observer.as_ref(), what, op).await
    }

    /// The registry's name as the user wrote it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `GET /v2/`: learns how the registry authenticates, and checks that our credentials
    /// can push to `repository`, so a wrong password fails before anything is read or sent.
    pub async fn check_push_access(&self, repository: &str) -> Result<(), Error> {
        self.retrying("GET /v2/", || self.check_push_access_once(repository)).await
    }

    async fn check_push_access_once(&self, repository: &str) -> Result<(), Error> {
        match self.challenge().await? {
            Challenge::None => Ok(()),
            Challenge::Basic => {
                let url = format!("{}/v2/", self.base);
                let (req, _) = self.authorize(self.http.get(&url), &url, &[]).await?;
                let resp = req.send().await.map_err(|e| error::network("GET", &url, e))?;
                match resp.status().as_u16() {
                    200..=299 => Ok(()),
                    401 | 403 => Err(self.unauthorized(None, resp.status().as_u16())),
                    s => Err(error::from_response_body(
                        "GET",
                        &url,
                        s,
                        &resp.bytes().await.unwrap_or_default(),
                    )),
                }
            }
            Challenge::Bearer { .. } => {
                self.token(&[push_scope(repository)]).await?;
                Ok(())
            }
        }
    }

    async fn challenge(&self) -> Result<&Challenge, Error> {
        self.challenge
            .get_or_try_init(|| async {
                let url = format!("{}/v2/", self.base);
                let resp = self
                    .http
                    .get(&url)
                    .timeout(self.request_timeout)
                    .send()
                    .await
                    .map_err(|e| error::network("GET", &url, e))?;
                let status = resp.status().as_u16();
                if status == 401 {
                    let header = resp
                        .headers()
                        .get(reqwest::header::WWW_AUTHENTICATE)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default();
                    return Challenge::parse(header).ok_or_else(|| Error::InvalidResponse {
                        url: url.clone(),
                        reason: format!(
                            "401 with an unsupported WWW-Authenticate challenge {header:?}"
                        ),
                    });
                }
                if (200..300).contains(&status) {
                    return Ok(Challenge::None);
                }
                let body = resp.bytes().await.unwrap_or_default();
                Err(error::from_response_body("GET", &url, status, &body))
            })
            .await
    }

    async fn token(&self, scopes: &[String]) -> Result<String, Error> {
        match self.challenge().await? {
            Challenge::Bearer { realm, service } => {
                let realm = token::Realm {
                    url: realm,
                    service: service.as_deref(),
                    timeout: self.request_timeout,
                    plain_http: self.base.starts_with("http://"),
                };
                self.tokens.get(&self.http, &self.registry, &realm, &self.credential, scopes).await
            }
            _ => Err(Error::InvalidResponse {
                url: self.base.clone(),
                reason: "registry does not use bearer tokens".into(),
            }),
        }
    }

    /// Whether `url` is on the registry itself (scheme, host and port): the only place its
    /// credentials and tokens go. A `Location` the registry hands out may name any host.
    fn is_registry(&self, url: &str) -> bool {
        match (url::Url::parse(url), url::Url::parse(&self.base)) {
            (Ok(u), Ok(base)) => u.origin() == base.origin(),
            _ => false,
        }
    }

    /// Adds whatever the registry's challenge asks for to a request to `url`: nothing when
    /// `url` is not on the registry. Returns the bearer token it added, if any.
    async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        scopes: &[String],
    ) -> Result<(reqwest::RequestBuilder, Option<String>), Error> {
        if !self.is_registry(url) {
            tracing::debug!(url, registry = %self.base, "not sending credentials to another host");
            return Ok((req, None));
        }
        Ok(match self.challenge().await? {
            Challenge::None => (req, None),
            Challenge::Basic => match &self.credential {
                Credential::Basic { username, password } => {
                    (req.basic_auth(username, Some(password.expose())), None)
                }
                _ => (req, None),
            },
            Challenge::Bearer { .. } => {
                let token = self.token(scopes).await?;
                (req.bearer_auth(&token), Some(token))
            }
        })
    }

    /// The error for a 401 or 403 that `answered_url` gave (after any redirect): refused
    /// credentials on the registry, or a host elsewhere that got none.
    fn refused(&self, answered_url: &str, scopes: &[String], status: u16) -> Error {
        if self.is_registry(answered_url) {
            self.unauthorized(Some(scopes.join(" ")), status)
        } else {
            self.elsewhere_unauthorized(answered_url, status)
        }
    }

    /// A host the registry sent us to (an upload `Location`) asked for credentials, which
    /// are only ever sent to the registry itself.
    fn elsewhere_unauthorized(&self, url: &str, status: u16) -> Error {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| {
                u.host_str().map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
            })
            .unwrap_or_else(|| url.to_string());
        Error::CredentialsWithheld { registry: self.registry.clone(), host, status }
    }

    fn unauthorized(&self, scope: Option<String>, status: u16) -> Error {
        let detail = match (&self.credential, status) {
            (Credential::Anonymous, _) => {
                format!(
                    "the registry answered {status} and no credentials were found for {}",
                    self.registry
                )
            }
            (_, 403) => "the registry answered 403: the credentials may not push here".to_string(),
            _ => format!("the registry answered {status}: the credentials were refused"),
        };
        Error::Unauthorized { registry: self.registry.clone(), scope, detail }
    }

    /// `HEAD /v2/<repository>/blobs/<digest>`.
    pub async fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<bool, Error> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let scopes = [self.scope_for(repository)];
        self.retrying(&format!("HEAD blob {digest}"), || async {
            let resp = self.send_with_auth("HEAD", &url, &scopes, |c| c.head(&url)).await?;
            match resp.status().as_u16() {
                200..=299 => Ok(true),
                404 => Ok(false),
                _ => Err(error::from_response("HEAD", &url, resp).await),
            }
        })
        .await
    }

    /// Push scope on a repository pushed to, pull scope on any other.
    fn scope_for(&self, repository: &str) -> String {
        if self.push_repositories.contains(repository) {
            push_scope(repository)
        } else {
            pull_scope(repository)
        }
    }

    /// `HEAD /v2/<repository>/manifests/<reference>`: `None` when absent, else the
    /// `Docker-Content-Digest` the registry reports (if it sends one).
    async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Option<Digest>>, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let scopes = [push_scope(repository)];
        self.retrying(&format!("HEAD manifest {reference}"), || async {
            let resp = self
                .send_with_auth("HEAD", &url, &scopes, |c| {
                    c.head(&url).header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            match resp.status().as_u16() {
                200..=299 => Ok(Some(
                    resp.headers()
                        .get("docker-content-digest")
                        .and_then(|h| h.to_str().ok())
                        .and_then(|d| d.parse::<Digest>().ok()),
                )),
                404 => Ok(None),
                _ => Err(error::from_response("HEAD", &url, resp).await),
            }
        })
        .await
    }

    /// The digest `tag` points at, if any.
    pub async fn tag_digest(&self, repository: &str, tag: &str) -> Result<Option<Digest>, Error> {
        Ok(self.head_manifest(repository, tag).await?.flatten())
    }

    /// Whether the manifest `digest` is there already.
    pub async fn manifest_exists(&self, repository: &str, digest: &Digest) -> Result<bool, Error> {
        Ok(self.head_manifest(repository, &digest.to_string()).await?.is_some())
    }

    /// `PUT /v2/<repository>/manifests/<tag or digest>` with the layout's bytes, unchanged.
    pub async fn put_manifest(
        &self,
        target: &Target,
        at: TagOrDigest<'_>,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), Error> {
        self.put_manifest_watched(target, at, bytes, media_type, None).await.map(|_| ())
    }

    /// `put_manifest`, with `on_wire` true exactly while a request is sent and unanswered (a
    /// caller that drops this future then knows whether the registry may still commit it).
    pub async fn put_manifest_watched(
        &self,
        target: &Target,
        at: TagOrDigest<'_>,
        bytes: &[u8],
        media_type: &str,
        on_wire: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<PutAnswer, Error> {
        use std::sync::atomic::Ordering;
        let url = match at {
            TagOrDigest::Tag(t) => format!("{}/v2/{}/manifests/{t}", self.base, target.repository),
            TagOrDigest::Digest(d) => {
                format!("{}/v2/{}/manifests/{d}", self.base, target.repository)
            }
        };
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|_| {
            Error::InvalidResponse {
                url: url.clone(),
                reason: format!("media type {media_type:?} is not a valid header value"),
            }
        })?;
        let scopes = [push_scope(&target.repository)];
        self.retrying(&format!("PUT manifest {url}"), || async {
            on_wire.inspect(|w| w.store(true, Ordering::SeqCst));
            let sent = self
                .send_with_auth("PUT", &url, &scopes, |c| {
                    c.put(&url)
                        .header(reqwest::header::CONTENT_TYPE, content_type.clone())
                        .body(bytes.to_vec())
                })
                .await;
            on_wire.inspect(|w| w.store(false, Ordering::SeqCst));
            let resp = sent?;
            match resp.status().as_u16() {
                200..=299 => Ok(PutAnswer {
                    subject: resp
                        .headers()
                        .get("oci-subject")
                        .and_then(|h| h.to_str().ok())
                        .and_then(|d| d.parse::<Digest>().ok()),
                }),
                _ => Err(error::from_response("PUT", &url, resp).await),
            }
        })
        .await
    }

    /// `GET /v2/<repository>/manifests/<reference>`: the manifest's bytes and media type,
    /// `None` when absent. At most `limit` bytes are read (a referrers index, say).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, String)>, Error> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let scopes = [push_scope(repository)];
        self.retrying(&format!("GET manifest {reference}"), || async {
            let resp = self
                .send_with_auth("GET", &url, &scopes, |c| {
                    c.get(&url).header(reqwest::header::ACCEPT, MANIFEST_ACCEPT)
                })
                .await?;
            match resp.status().as_u16() {
                200..=299 => {}
                404 => return Ok(None),
                _ => return Err(error::from_response("GET", &url, resp).await),
            }
            let media_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let too_large = || Error::InvalidResponse {
                url: url.clone(),
                reason: format!("the manifest is larger than {limit} bytes"),
            };
            if resp.content_length().is_some_and(|n| n > limit as u64) {
                return Err(too_large());
            }
            // Read chunk by chunk: an answer without a length stops at the limit, not in memory.
            let mut resp = resp;
            let mut bytes = Vec::new();
            while let Some(chunk) =
                resp.chunk().await.map_err(|e| error::network("GET", &url, e))?
            {
                if bytes.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some((bytes, media_type)))
        })
        .await
    }

    /// Sends a request built by `build` with authorization; on a 401 with bearer tokens,
    /// renews the token once and sends again.
    async fn send_with_auth(
        &self,
        method: &'static str,
        url: &str,
        scopes: &[String],
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        for attempt in 0..2 {
            let (req, token) = self
                .authorize(build(&self.http).timeout(self.request_timeout), url, scopes)
                .await?;
            let resp = req.send().await.map_err(|e| error::network(method, url, e))?;
            let status = resp.status().as_u16();
            if status == 401 || status == 403 {
                let answered = resp.url().to_string();
                if let Some(token) = token.filter(|_| attempt == 0 && self.is_registry(&answered)) {
                    self.tokens.invalidate(scopes, &token).await;
                    continue;
                }
                return Err(self.refused(&answered, scopes, status));
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }
}

/// What a registry answered to a manifest PUT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutAnswer {
    /// The `OCI-Subject` header: the registry indexed the manifest as a referrer of this
    /// digest (it offers the referrers API).
    pub subject: Option<Digest>,
}

/// `repository:<name>:pull,push`
pub fn push_scope(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// `repository:<name>:pull`
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

#[cfg(test)]
mod tests;
