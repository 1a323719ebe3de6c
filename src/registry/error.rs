use std::path::PathBuf;

/// A failure talking to a registry. Messages name the registry, repository and request;
/// they never contain credentials or tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry or its token service refused our credentials (401/403).
    #[error("authentication to {registry} failed{}: {detail}", scope_text(.scope))]
    Unauthorized { registry: String, scope: Option<String>, detail: String },
    /// A host the registry sent a request to (a `Location`, a redirect) refused it without
    /// credentials, which only ever go to the registry itself.
    #[error(
        "authentication to {registry} failed: {host}, where the registry sent the request, answered \
         {status}; credentials for {registry} are never sent to another host"
    )]
    CredentialsWithheld { registry: String, host: String, status: u16 },
    /// The registry answered with a status we did not expect.
    #[error("{method} {url} answered {status}{}", code_text(.code, .message))]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        code: Option<String>,
        message: String,
        /// The registry's `Retry-After`, when it sent one.
        retry_after: Option<std::time::Duration>,
    },
    /// The registry's certificate could not be verified (will not fix itself).
    #[error("{method} {url}: TLS certificate verification failed: {detail}")]
    Tls { method: &'static str, url: String, detail: String },
    /// The server answered our TLS handshake in plain HTTP: it serves HTTP, not HTTPS.
    #[error(
        "{method} {url}: the server answered the TLS handshake in plain HTTP; if the registry \
         serves HTTP, use --plain-http (connection.plainHttp in an ImagePush)"
    )]
    PlainHttpServer { method: &'static str, url: String },
    /// The request did not get an answer (connection refused, reset, timeout).
    #[error("{method} {url} failed: {detail}")]
    Network { method: &'static str, url: String, detail: String },
    /// The registry answered, but not in a form the distribution spec allows.
    #[error("{url}: {reason}")]
    InvalidResponse { url: String, reason: String },
    /// The blob being uploaded did not match its descriptor; the registry was not told to commit it.
    #[error(transparent)]
    Content(#[from] crate::layout::Error),
    /// A TLS setting could not be used.
    #[error("CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

fn scope_text(scope: &Option<String>) -> String {
    scope.as_ref().map(|s| format!(" for {s}")).unwrap_or_default()
}

fn code_text(code: &Option<String>, message: &str) -> String {
    match (code, message.is_empty()) {
        (Some(c), false) => format!(" ({c}: {message})"),
        (Some(c), true) => format!(" ({c})"),
        (None, false) => format!(" ({message})"),
        (None, true) => String::new(),
    }
}

impl Error {
    /// Whether trying again later may succeed (network failures, 408, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network { .. } => true,
            // 499: the registry saw the client connection close mid-request (distribution, nginx).
            Error::Status { status, .. } => matches!(*status, 408 | 429 | 499) || *status >= 500,
            _ => false,
        }
    }

    /// How long the registry asked us to wait.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// The registry no longer knows an upload session (expired, cancelled, another replica).
    pub fn is_upload_unknown(&self) -> bool {
        matches!(self, Error::Status { status: 404, code: Some(c), .. } if c == "BLOB_UPLOAD_UNKNOWN")
    }
}

/// Whether a rustls error in `e`'s chain says the peer's first bytes were not TLS (a
/// plain-HTTP server answering the ClientHello). An `io::Error` hides what it wraps from
/// `source()` (hyper wraps rustls' error in two of them), so those are opened too.
fn answered_in_plain_http(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(mut err) = next {
        next = err.source();
        while let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            err = inner;
        }
        if matches!(
            err.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType))
        ) {
            return true;
        }
    }
    false
}

/// Turns a reqwest failure into `Error::Network` without leaking URLs with credentials.
pub(crate) fn network(method: &'static str, url: &str, e: reqwest::Error) -> Error {
    if answered_in_plain_http(&e) {
        return Error::PlainHttpServer { method, url: url.to_string() };
    }
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    let lower = detail.to_ascii_lowercase();
    if lower.contains("certificate")
        || lower.contains("unknownissuer")
        || lower.contains("invalid peer")
        || detail.contains(super::tls::NO_TRUST_STORE)
    {
        return Error::Tls { method, url: url.to_string(), detail };
    }
    Error::Network { method, url: url.to_string(), detail }
}

/// The distribution spec's error envelope: `{"errors":[{"code":..,"message":..}]}`.
pub(crate) fn from_response_body(
    method: &'static str,
    url: &str,
    status: u16,
    body: &[u8],
) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let (code, message) = match serde_json::from_slice::<Envelope>(body) {
        Ok(env) if !env.errors.is_empty() => {
            (env.errors[0].code.clone(), env.errors[0].message.clone().unwrap_or_default())
        }
        _ => (None, String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_string()),
    };
    Error::Status { method, url: url.to_string(), status, code, message, retry_after: None }
}

/// Like `from_response_body`, reading the body and `Retry-After` from the response.
pub(crate) async fn from_response(
    method: &'static str,
    url: &str,
    resp: reqwest::Response,
) -> Error {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|h| h.to_str().ok())
        .and_then(super::retry::parse_retry_after);
    let body = resp.bytes().await.unwrap_or_default();
    let mut e = from_response_body(method, url, status, &body);
    if let Error::Status { retry_after: r, .. } = &mut e {
        *r = retry_after;
    }
    e
}
