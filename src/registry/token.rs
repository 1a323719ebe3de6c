//! Registry authentication: the `WWW-Authenticate` challenge of `/v2/`, basic credentials,
//! and bearer tokens for a set of scopes (a mount needs pull on the source repository as
//! well as push on the target, which oci-client's single-scope tokens cannot carry).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::error::{Error, network};
use crate::auth::Credential;

/// How the registry asked us to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `/v2/` answered 200: no authentication.
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` header value.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let realm = params.get("realm")?.clone();
        Some(Challenge::Bearer { realm, service: params.get("service").cloned() })
    }
}

/// `key="value", key2=value2` pairs of an auth challenge.
pub fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

struct CachedToken {
    token: String,
    expires: Instant,
}

/// One scope set's token. Its lock is held while the token is fetched, so requests that
/// miss together wait for one fetch instead of each making their own.
type Slot = std::sync::Arc<Mutex<Option<CachedToken>>>;

/// Bearer tokens by scope set, renewed before they expire.
#[derive(Default)]
pub struct TokenCache {
    slots: std::sync::Mutex<HashMap<String, Slot>>,
}

/// Tokens without `expires_in` are valid for 60 seconds (distribution token spec).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Renew a token this long before it expires, so a request never carries a dead one.
const RENEW_MARGIN: Duration = Duration::from_secs(10);

impl TokenCache {
    fn slot(&self, scopes: &[String]) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(scopes.join(" ")).or_default().clone()
    }

    /// Forgets the token for `scopes`, whichever it is.
    pub async fn forget(&self, scopes: &[String]) {
        *self.slot(scopes).lock().await = None;
    }

    /// Forgets the token for `scopes` if it is still `refused` (requests refused together
    /// with one stale token renew it once, not once each).
    pub async fn invalidate(&self, scopes: &[String], refused: &str) {
        let slot = self.slot(scopes);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|t| t.token == refused) {
            *cached = None;
        }
    }

    /// A token for `scopes`, from the cache or from the realm.
    pub async fn get(
        &self,
        http: &reqwest::Client,
        registry: &str,
        realm: &Realm<'_>,
        credential: &Credential,
        scopes: &[String],
    ) -> Result<String, Error> {
        let slot = self.slot(scopes);
        let mut cached = slot.lock().await;
        if let Some(t) = cached.as_ref()
            && t.expires > Instant::now() + RENEW_MARGIN
        {
            return Ok(t.token.clone());
        }
        let (token, lifetime) = fetch(http, registry, realm, credential, scopes).await?;
        *cached = Some(CachedToken { token: token.clone(), expires: Instant::now() + lifetime });
        Ok(token)
    }
}

/// The token service a registry's challenge names.
pub struct Realm<'a> {
    pub url: &'a str,
    pub service: Option<&'a str>,
    /// Longest a token request may take (it holds back every request needing that token).
    pub timeout: Duration,
    /// Credentials may go to a plain-HTTP realm (only when the registry itself is HTTP).
    pub plain_http: bool,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

async fn fetch(
    http: &reqwest::Client,
    registry: &str,
    realm_of: &Realm<'_>,
    credential: &Credential,
    scopes: &[String],
) -> Result<(String, Duration), Error> {
    let (realm, service) = (realm_of.url, realm_of.service);
    if realm.starts_with("http://")
        && !realm_of.plain_http
        && !matches!(credential, Credential::Anonymous)
    {
        return Err(Error::InvalidResponse {
            url: realm.to_string(),
            reason: format!(
                "the token service of {registry} is plain HTTP; credentials are not sent there \
                 (with --plain-http, for a registry that is itself plain HTTP, they are)"
            ),
        });
    }
    let request = match credential {
        Credential::IdentityToken(refresh) => {
            // OAuth2 refresh-token grant, as docker does with an identity token.
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.expose()),
                ("client_id", "imagepush"),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            let scope = scopes.join(" ");
            form.push(("scope", &scope));
            let body =
                url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
            http.post(realm)
                .timeout(realm_of.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
        }
        other => {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = service {
                query.push(("service", s));
            }
            for s in scopes {
                query.push(("scope", s));
            }
            let mut req = http.get(realm).timeout(realm_of.timeout).query(&query);
            if let Credential::Basic { username, password } = other {
                req = req.basic_auth(username, Some(password.expose()));
            }
            req.send().await
        }
    };
    let response = request.map_err(|e| network("GET", realm, e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| network("GET", realm, e))?;
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Error::Unauthorized {
            registry: registry.to_string(),
            scope: Some(scopes.join(" ")),
            detail: format!("the token service {realm} answered {status}"),
        });
    }
    if !status.is_success() {
        return Err(super::error::from_response_body("GET", realm, status.as_u16(), &body));
    }
    let parsed: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
            url: realm.to_string(),
            reason: format!("token response is not JSON: {e}"),
        })?;
    let token =
        parsed.token.or(parsed.access_token).filter(|t| !t.is_empty()).ok_or_else(|| {
            Error::InvalidResponse {
                url: realm.to_string(),
                reason: "token response has no token".into(),
            }
        })?;
    let lifetime = parsed
        .expires_in
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(Challenge::parse("Basic realm=\"test\""), Some(Challenge::Basic));
        assert_eq!(
            Challenge::parse(
                "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\",scope=\"repository:a:pull\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into())
            })
        );
        assert_eq!(
            Challenge::parse("bearer realm=https://a/t, service=reg"),
            Some(Challenge::Bearer { realm: "https://a/t".into(), service: Some("reg".into()) })
        );
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        let p = parse_params(r#"realm="a\"b", error="insufficient_scope""#);
        assert_eq!(p["realm"], "a\"b");
        assert_eq!(p["error"], "insufficient_scope");
    }
}
