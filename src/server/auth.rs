//! Bearer tokens: the admin token guards `AdminService`, the site token guards
//! `ReplicationService`, and `ObjectService` takes either (sites forward writes to it).
//! Compared in constant time; never printed, not even by `Debug`.

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

/// Which token a service wants, and which one it must not mistake for it.
#[derive(Clone)]
pub struct Guard {
    pub wanted: Token,
    pub wanted_name: &'static str,
    pub other: Token,
    pub service: &'static str,
}

impl Guard {
    /// Checks `authorization: Bearer <token>`: missing or unknown → UNAUTHENTICATED; the
    /// other kind of token (a site token at the admin API, say) → PERMISSION_DENIED.
    pub fn check<T>(&self, req: Request<T>) -> Result<Request<T>, Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated(format!(
                "{} needs the {}: send `authorization: Bearer <token>`",
                self.service, self.wanted_name
            )));
        };
        let presented = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        if self.wanted.matches(presented) {
            Ok(req)
        } else if self.other.matches(presented) {
            Err(Status::permission_denied(format!(
                "{} needs the {}; this token is not allowed here",
                self.service, self.wanted_name
            )))
        } else {
            Err(Status::unauthenticated(format!(
                "invalid token for {}",
                self.service
            )))
        }
    }
}

/// Which token a call to a service that takes either one presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: an admin, or a front end acting for users.
    Admin,
    /// The site token: another site of the deployment.
    Site,
}

/// Accepts the admin or the site token (`ObjectService`), and records which one in the
/// request's extensions as a [`Caller`].
#[derive(Clone)]
pub struct EitherGuard {
    pub admin: Token,
    pub site: Token,
    pub service: &'static str,
}

impl EitherGuard {
    pub fn check<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let caller = {
            let Some(value) = req.metadata().get("authorization") else {
                return Err(Status::unauthenticated(format!(
                    "{} needs the admin token or the site token: send `authorization: Bearer <token>`",
                    self.service
                )));
            };
            let presented = value
                .as_bytes()
                .strip_prefix(b"Bearer ")
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            if self.admin.matches(presented) {
                Caller::Admin
            } else if self.site.matches(presented) {
                Caller::Site
            } else {
                return Err(Status::unauthenticated(format!(
                    "invalid token for {}",
                    self.service
                )));
            }
        };
        req.extensions_mut().insert(caller);
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> (Guard, Token, Token) {
        let admin = Token::generate();
        let site = Token::generate();
        let g = Guard {
            wanted: admin.clone(),
            wanted_name: "admin token",
            other: site.clone(),
            service: "AdminService",
        };
        (g, admin, site)
    }

    fn with(value: Option<String>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    #[test]
    fn tokens_are_told_apart() {
        let (g, admin, site) = guard();
        assert!(g
            .check(with(Some(format!("Bearer {}", admin.expose()))))
            .is_ok());
        let code = |r: Result<Request<()>, Status>| r.unwrap_err().code();
        assert_eq!(code(g.check(with(None))), tonic::Code::Unauthenticated);
        assert_eq!(
            code(g.check(with(Some(admin.expose().into())))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(g.check(with(Some(format!("Bearer {}x", admin.expose()))))),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(g.check(with(Some(format!("Bearer {}", site.expose()))))),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn no_error_or_debug_output_contains_the_token() {
        let (g, admin, site) = guard();
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
    fn either_token_is_accepted_and_recorded() {
        let (_, admin, site) = guard();
        let g = EitherGuard {
            admin: admin.clone(),
            site: site.clone(),
            service: "ObjectService",
        };
        let caller = |t: &Token| {
            let r = g
                .check(with(Some(format!("Bearer {}", t.expose()))))
                .unwrap();
            *r.extensions().get::<Caller>().unwrap()
        };
        assert_eq!(caller(&admin), Caller::Admin);
        assert_eq!(caller(&site), Caller::Site);
        let err = g
            .check(with(Some("Bearer nope-nope-nope-nope".into())))
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            g.check(with(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn weak_tokens_are_refused() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in the middle").is_err());
        assert!(Token::new(" 0123456789abcdef\n").is_ok());
    }
}
