//! Bearer tokens: the admin token guards `AdminService`; a registered site's token (its
//! sha256 in the settings log's site registry) guards `ReplicationService` and makes the
//! call that site's; `ObjectService` takes either (sites forward writes to it). Compared in
//! constant time; never printed, not even by `Debug`.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// A secret token. `Debug` and `Display` show only that it is redacted.
#[derive(Clone)]
pub struct Token(String);

pub const MIN_TOKEN_LEN: usize = 16;
pub const MAX_TOKEN_LEN: usize = 512;

impl Token {
    /// Validates a token read from a file or given by a user.
    pub fn new(raw: &str) -> Result<Token, String> {
        let t = raw.trim();
        if t.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "a token must be at least {MIN_TOKEN_LEN} characters (found {})",
                t.len()
            ));
        }
        if t.len() > MAX_TOKEN_LEN {
            return Err(format!(
                "a token must be at most {MAX_TOKEN_LEN} characters"
            ));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token must be printable ASCII without spaces".into());
        }
        Ok(Token(t.to_string()))
    }

    /// A fresh random token (256 bits, hex).
    pub fn generate() -> Token {
        let bytes: [u8; 32] = rand::random();
        Token(hex::encode(bytes))
    }

    /// The secret itself, for writing to a token file or an `authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether two tokens hold the same secret (in constant time).
    pub fn same_secret(&self, other: &Token) -> bool {
        self.matches(other.0.as_bytes())
    }

    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// Whether an HTTP request's `authorization: Bearer` header carries this token.
    pub fn is_presented_in(&self, headers: &http::HeaderMap) -> bool {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|presented| self.matches(presented))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Who may hold a token other than the admin token: the registered sites, looked up in
/// the site registry of the settings log (a `watch` borrow, no I/O).
pub trait Sites: Send + Sync + 'static {
    /// The site whose registered token hash is the sha256 of `presented`.
    fn site_with_token(&self, presented: &[u8]) -> Option<String>;
}

impl Sites for crate::settings::Settings {
    fn site_with_token(&self, presented: &[u8]) -> Option<String> {
        crate::settings::Settings::site_with_token(self, presented)
    }
}

fn bearer<T>(req: &Request<T>, service: &str, wanted: &str) -> Result<Vec<u8>, Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Err(Status::unauthenticated(format!(
            "{service} needs {wanted}: send `authorization: Bearer <token>`"
        )));
    };
    value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))
}

/// The admin token's guard (`AdminService`). A registered site's token is told apart:
/// PERMISSION_DENIED, where an unknown token is UNAUTHENTICATED.
#[derive(Clone)]
pub struct AdminGuard {
    pub admin: Token,
    pub sites: Arc<dyn Sites>,
    pub service: &'static str,
}

impl AdminGuard {
    pub fn check<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let presented = bearer(&req, self.service, "the admin token")?;
        if self.admin.matches(&presented) {
            req.extensions_mut().insert(Caller::Admin);
            Ok(req)
        } else if self.sites.site_with_token(&presented).is_some() {
            Err(Status::permission_denied(format!(
                "{} needs the admin token; a site's token is not allowed here",
                self.service
            )))
        } else {
            Err(Status::unauthenticated(format!(
                "invalid token for {}",
                self.service
            )))
        }
    }
}

/// Who a call presented a token for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: an admin, or a front end acting for users.
    Admin,
    /// A registered site's token: that site, and no other.
    Site(String),
}

impl Caller {
    /// The site the caller is, if it is one.
    pub fn site(&self) -> Option<&str> {
        match self {
            Caller::Site(id) => Some(id),
            Caller::Admin => None,
        }
    }
}

/// The registered sites' guard (`ReplicationService`; `ObjectService` with `admin_too`):
/// the token's sha256 must be a registered site's, and the call is then that site's
/// ([`Caller::Site`] in the request's extensions). The admin token is PERMISSION_DENIED
/// where only sites are wanted.
#[derive(Clone)]
pub struct SiteGuard {
    pub admin: Token,
    pub sites: Arc<dyn Sites>,
    pub service: &'static str,
    /// Whether the admin token is accepted too ([`Caller::Admin`]).
    pub admin_too: bool,
}

impl SiteGuard {
    pub fn check<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let wanted = if self.admin_too {
            "the admin token or a registered site's token"
        } else {
            "a registered site's token"
        };
        let presented = bearer(&req, self.service, wanted)?;
        let caller = if self.admin.matches(&presented) {
            if !self.admin_too {
                return Err(Status::permission_denied(format!(
                    "{} needs {wanted}; the admin token is not allowed here",
                    self.service
                )));
            }
            Caller::Admin
        } else {
            match self.sites.site_with_token(&presented) {
                Some(id) => Caller::Site(id),
                None => {
                    return Err(Status::unauthenticated(format!(
                        "invalid token for {}: not the token of a registered site (geo-agent sites list)",
                        self.service
                    )))
                }
            }
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

/// Refuses a registered site acting as another: `claimed` (a site id in the request) must
/// be the site the token authenticated.
pub fn acting_as<T>(req: &Request<T>, claimed: &str) -> Result<(), Status> {
    match req.extensions().get::<Caller>() {
        Some(Caller::Site(id)) if id == claimed => Ok(()),
        Some(Caller::Site(id)) => Err(Status::permission_denied(format!(
            "this token is site {id}'s; it cannot act as site {claimed:?}"
        ))),
        _ => Err(Status::permission_denied(format!(
            "only site {claimed:?} itself, with its registered token, can send this"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Registry(Vec<(String, Token)>);

    impl Sites for Registry {
        fn site_with_token(&self, presented: &[u8]) -> Option<String> {
            self.0
                .iter()
                .find(|(_, t)| t.matches(presented))
                .map(|(id, _)| id.clone())
        }
    }

    fn setup() -> (Token, Token, Arc<dyn Sites>) {
        let admin = Token::generate();
        let site = Token::generate();
        let sites: Arc<dyn Sites> = Arc::new(Registry(vec![("s1".into(), site.clone())]));
        (admin, site, sites)
    }

    fn with(value: Option<String>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    fn bearing(t: &Token) -> Request<()> {
        with(Some(format!("Bearer {}", t.expose())))
    }

    fn code(r: Result<Request<()>, Status>) -> tonic::Code {
        r.unwrap_err().code()
    }

    #[test]
    fn tokens_are_told_apart() {
        let (admin, site, sites) = setup();
        let g = AdminGuard {
            admin: admin.clone(),
            sites,
            service: "AdminService",
        };
        assert!(g.check(bearing(&admin)).is_ok());
        assert_eq!(code(g.check(with(None))), tonic::Code::Unauthenticated);
        assert_eq!(
            code(g.check(with(Some(admin.expose().into())))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(g.check(with(Some(format!("Bearer {}x", admin.expose()))))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(code(g.check(bearing(&site))), tonic::Code::PermissionDenied);
    }

    #[test]
    fn no_error_or_debug_output_contains_the_token() {
        let (admin, site, sites) = setup();
        let g = AdminGuard {
            admin: admin.clone(),
            sites,
            service: "AdminService",
        };
        assert!(!format!("{admin:?}").contains(admin.expose()));
        for v in [format!("Bearer {}", site.expose()), "Bearer nope".into()] {
            let msg = g.check(with(Some(v))).unwrap_err().message().to_string();
            assert!(
                !msg.contains(admin.expose()) && !msg.contains(site.expose()),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_site_token_makes_the_call_that_sites() {
        let (admin, site, sites) = setup();
        let mut g = SiteGuard {
            admin: admin.clone(),
            sites,
            service: "ReplicationService",
            admin_too: false,
        };
        let r = g.check(bearing(&site)).unwrap();
        assert_eq!(
            r.extensions().get::<Caller>(),
            Some(&Caller::Site("s1".into()))
        );
        assert!(acting_as(&r, "s1").is_ok());
        assert_eq!(
            acting_as(&r, "s2").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(g.check(bearing(&admin))),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(g.check(bearing(&Token::generate()))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(code(g.check(with(None))), tonic::Code::Unauthenticated);
        g.admin_too = true;
        let r = g.check(bearing(&admin)).unwrap();
        assert_eq!(r.extensions().get::<Caller>(), Some(&Caller::Admin));
        assert_eq!(
            acting_as(&r, "s1").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in the middle").is_err());
        assert!(Token::new(" 0123456789abcdef\n").is_ok());
    }
}
