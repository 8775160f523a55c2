//! Who may use the console, and how a browser proves it.
//!
//! With no principal configured the console is open, as the rest of the
//! server is, but only to requests addressed to an IP address or
//! `localhost`: a page on another site whose name is made to resolve to
//! this host (DNS rebinding) would otherwise count as the console's own
//! origin. Otherwise the console needs the admin role (it shows every
//! queue's tasks and acts on every worker, as the Admin API does): a person
//! signs in once with an admin's token, the server keeps the sign-in and
//! gives the browser a random session id in an HttpOnly, SameSite=Strict
//! cookie, so scripts in the page never see the token and other sites'
//! pages cannot send it; a client certificate whose name maps to an admin
//! principal signs in by itself.
//!
//! Every request that changes something must also carry the
//! `x-contact-console` header, which a cross-site form or image cannot
//! send and a cross-site script cannot add without a CORS preflight the
//! server never grants, and must not come from another origin by the
//! browser's own account (`Origin`, `Sec-Fetch-Site`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::http::{HeaderMap, StatusCode, header};
use tokio::time::Instant;

use crate::auth::{Principal, Principals, Role, token};

/// The cookie that names a console sign-in.
pub(crate) const COOKIE: &str = "contact_console";

/// The header every state-changing request carries.
pub(crate) const CSRF_HEADER: &str = "x-contact-console";

/// How long a sign-in lasts.
const SIGN_IN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Sign-ins kept at most; the oldest goes first.
const MAX_SIGN_INS: usize = 1024;

/// Why a request is refused, with the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: &'static str,
}

impl Refusal {
    fn new(status: StatusCode, reason: &'static str) -> Self {
        Self { status, reason }
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Read what the server holds.
    Look,
    /// Drain, disconnect, cancel, requeue, purge: also guarded against
    /// cross-site requests.
    Act,
}

#[derive(Debug)]
struct SignIn {
    principal: Arc<Principal>,
    until: Instant,
}

/// The console's gate.
#[derive(Debug)]
pub(crate) struct Access {
    principals: Arc<Principals>,
    /// Sign-ins by the SHA-256 of their session id.
    sign_ins: Mutex<HashMap<[u8; 32], SignIn>>,
    /// Whether the listener speaks TLS (the cookie is then `Secure`).
    secure: bool,
}

impl Access {
    pub(crate) fn new(principals: Arc<Principals>, secure: bool) -> Self {
        Self {
            principals,
            sign_ins: Mutex::new(HashMap::new()),
            secure,
        }
    }

    /// Whether signing in is needed at all.
    pub(crate) fn required(&self) -> bool {
        self.principals.enabled()
    }

    /// The principal a request comes from: its sign-in's (what the person
    /// chose), or else its client certificate's. `None` when there is none.
    pub(crate) fn principal(
        &self,
        headers: &HeaderMap,
        identities: &[String],
    ) -> Option<Arc<Principal>> {
        self.signed_in(headers)
            .or_else(|| self.principals.by_certificate(identities))
    }

    fn signed_in(&self, headers: &HeaderMap) -> Option<Arc<Principal>> {
        let session = cookie(headers, COOKIE)?;
        let key = token::sha256(session.as_bytes());
        let mut sign_ins = self.sign_ins.lock().unwrap_or_else(PoisonError::into_inner);
        match sign_ins.get(&key) {
            Some(sign_in) if sign_in.until > Instant::now() => Some(sign_in.principal.clone()),
            Some(_) => {
                sign_ins.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether a request may do what it asks.
    pub(crate) fn check(
        &self,
        need: Need,
        headers: &HeaderMap,
        identities: &[String],
    ) -> Result<Option<Arc<Principal>>, Refusal> {
        if need == Need::Act {
            same_origin(headers)?;
        }
        if !self.required() {
            local_host(headers)?;
            return Ok(None);
        }
        let Some(principal) = self.principal(headers, identities) else {
            refused("missing_credentials");
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "sign in with an admin's token first",
            ));
        };
        if !principal.roles.contains(&Role::Admin) {
            refused("missing_role");
            return Err(Refusal::new(StatusCode::FORBIDDEN, NEEDS_ADMIN));
        }
        Ok(Some(principal))
    }

    /// Signs a token's principal in: the `Set-Cookie` value for the browser.
    pub(crate) fn sign_in(&self, presented: &str) -> Result<(Arc<Principal>, String), Refusal> {
        let Some(principal) = self.principals.authenticate(presented) else {
            refused("bad_credentials");
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, "unknown token"));
        };
        if !principal.roles.contains(&Role::Admin) {
            refused("missing_role");
            return Err(Refusal::new(StatusCode::FORBIDDEN, NEEDS_ADMIN));
        }
        let session = token::generate().map_err(|_| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no random bytes for a session id",
            )
        })?;
        let now = Instant::now();
        let mut sign_ins = self.sign_ins.lock().unwrap_or_else(PoisonError::into_inner);
        sign_ins.retain(|_, sign_in| sign_in.until > now);
        while sign_ins.len() >= MAX_SIGN_INS {
            let Some(oldest) = sign_ins
                .iter()
                .min_by_key(|(_, sign_in)| sign_in.until)
                .map(|(key, _)| *key)
            else {
                break;
            };
            sign_ins.remove(&oldest);
        }
        sign_ins.insert(
            token::sha256(session.as_bytes()),
            SignIn {
                principal: principal.clone(),
                until: now + SIGN_IN_LIFETIME,
            },
        );
        let cookie = format!(
            "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SIGN_IN_LIFETIME.as_secs(),
            if self.secure { "; Secure" } else { "" }
        );
        Ok((principal, cookie))
    }

    /// Forgets the request's sign-in: the `Set-Cookie` value that clears it.
    pub(crate) fn sign_out(&self, headers: &HeaderMap) -> String {
        if let Some(session) = cookie(headers, COOKIE) {
            let key = token::sha256(session.as_bytes());
            self.sign_ins
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
        }
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

const NEEDS_ADMIN: &str = "the console needs the admin role";

/// Counted with the gRPC API's refusals, by the same reasons.
fn refused(reason: &'static str) {
    metrics::counter!(crate::metrics::AUTH_REFUSALS, "reason" => reason).increment(1);
}

/// Without authentication, a request must name this host by an IP address
/// or `localhost`: a name that resolves here only because someone made it
/// (DNS rebinding) would make a hostile page same-origin with the console.
pub(crate) fn local_host(headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let local = name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok();
    if local {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::MISDIRECTED_REQUEST,
            "without [[auth.principals]] the console answers only requests addressed to an IP \
             address or localhost",
        ))
    }
}

/// A request that changes something must carry the console's header and
/// must not come from another site.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let cross_site = || {
        Refusal::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused: actions come from the console's own pages",
        )
    };
    if headers.get(CSRF_HEADER).is_none() {
        return Err(cross_site());
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(cross_site());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, host)| host);
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if origin_host.is_none() || origin_host != host {
            return Err(cross_site());
        }
    }
    Ok(())
}

/// A cookie's value from the `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn principals() -> Arc<Principals> {
        let principal = |name: &str, roles: Vec<Role>, queues: Option<Vec<String>>| Principal {
            name: name.into(),
            roles,
            queues,
            client_id: None,
        };
        Arc::new(Principals::new([
            (
                Some(token::sha256(b"ct_admin")),
                Some("ops.example".to_owned()),
                principal("ops", vec![Role::Admin], None),
            ),
            (
                Some(token::sha256(b"ct_producer")),
                None,
                principal("app", vec![Role::Producer], None),
            ),
            (
                Some(token::sha256(b"ct_scoped")),
                None,
                principal("img", vec![Role::Producer], Some(vec!["images".into()])),
            ),
        ]))
    }

    fn with_cookie(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, format!("other=1; {pair}").parse().unwrap());
        headers.insert(CSRF_HEADER, "1".parse().unwrap());
        headers
    }

    #[test]
    fn only_admins_sign_in_look_and_act() {
        let access = Access::new(principals(), false);
        let none = HeaderMap::new();
        assert_eq!(
            access.check(Need::Look, &none, &[]).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(access.sign_in("ct_wrong").is_err());
        assert_eq!(
            access.sign_in("ct_producer").unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert!(access.sign_in("ct_scoped").is_err());

        let (_, cookie) = access.sign_in("ct_admin").unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!cookie.contains("ct_admin"), "the cookie is not the token");
        let admin = with_cookie(&cookie);
        assert!(access.check(Need::Look, &admin, &[]).is_ok());
        assert_eq!(
            access
                .check(Need::Act, &admin, &[])
                .unwrap()
                .unwrap()
                .name
                .as_ref(),
            "ops"
        );
        access.sign_out(&admin);
        assert!(access.check(Need::Look, &admin, &[]).is_err());

        // A client certificate's name signs in by itself.
        let mut bare = HeaderMap::new();
        bare.insert(CSRF_HEADER, "1".parse().unwrap());
        assert!(
            access
                .check(Need::Act, &bare, &["ops.example".into()])
                .is_ok()
        );
        assert!(
            access
                .check(Need::Look, &bare, &["nobody.example".into()])
                .is_err()
        );
    }

    #[test]
    fn without_principals_only_local_host_names_are_answered() {
        let access = Access::new(Arc::new(Principals::default()), false);
        for (host, answered) in [
            ("127.0.0.1:9464", true),
            ("localhost:9464", true),
            ("LOCALHOST", true),
            ("[::1]:9464", true),
            ("10.1.2.3:9464", true),
            ("evil.example:9464", false),
            ("localhost.evil.example", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            if !host.is_empty() {
                headers.insert(header::HOST, host.parse().unwrap());
            }
            assert_eq!(
                access.check(Need::Look, &headers, &[]).is_ok(),
                answered,
                "{host}"
            );
        }
    }

    #[test]
    fn actions_from_other_sites_are_refused() {
        let access = Access::new(Arc::new(Principals::default()), false);
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:9464".parse().unwrap());
        assert!(access.check(Need::Look, &headers, &[]).is_ok());
        assert!(access.check(Need::Act, &headers, &[]).is_err(), "no header");
        headers.insert(CSRF_HEADER, "1".parse().unwrap());
        assert!(access.check(Need::Act, &headers, &[]).is_ok());
        headers.insert(header::ORIGIN, "http://127.0.0.1:9464".parse().unwrap());
        assert!(access.check(Need::Act, &headers, &[]).is_ok());
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(access.check(Need::Act, &headers, &[]).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(access.check(Need::Act, &headers, &[]).is_err());
    }
}
