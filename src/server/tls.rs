//! TLS for the gRPC listener and for the connections a site or the CLI opens (rustls).
//!
//! A site with a certificate serves only TLS on its gRPC port. The same certificate is what
//! it presents as a client to other sites, so one certificate per site serves mutual TLS in
//! both directions: when it lists extended key usages, it must list both serverAuth and
//! clientAuth (rustls refuses a client certificate that is for servers only). The CA bundle verifies other sites' certificates, and client
//! certificates when they are required. Files are read once, at start: a renewed
//! certificate takes effect at the next restart.

use std::fmt;
use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};

/// How long a client may take over the TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads a PEM file, saying which setting named it when it cannot.
fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{what} {}: not a PEM file", path.display()));
    }
    Ok(pem)
}

/// The gRPC listener's TLS: this site's certificate and key, and who may connect.
#[derive(Clone)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
    require_client_cert: bool,
    /// When the leaf certificate expires (Unix seconds), for `/metrics`; `None` when
    /// x509-parser cannot read a certificate rustls accepted.
    not_after: Option<i64>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The identity holds the private key: never print it.
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca.is_some())
            .field("require_client_cert", &self.require_client_cert)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads and checks the files: a certificate that does not match its key, or a CA that
    /// is not one, is an error now rather than a failed handshake later.
    pub fn load(
        cert: &Path,
        key: &Path,
        ca: Option<&Path>,
        require_client_cert: bool,
    ) -> Result<ServerTls, String> {
        if require_client_cert && ca.is_none() {
            return Err(
                "require_client_cert needs tls_ca, the CA that signs client certificates".into(),
            );
        }
        let cert_pem = read_pem(cert, "tls_cert")?;
        let not_after = leaf_not_after(&cert_pem);
        let tls = ServerTls {
            not_after,
            identity: Identity::from_pem(cert_pem, read_pem(key, "tls_key")?),
            client_ca: ca
                .map(|p| read_pem(p, "tls_ca").map(Certificate::from_pem))
                .transpose()?,
            require_client_cert,
        };
        Server::builder().tls_config(tls.config()).map_err(|e| {
            format!(
                "tls_cert {} with tls_key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
        Ok(tls)
    }

    /// When this site's certificate expires (Unix seconds), as read at start.
    pub fn not_after(&self) -> Option<i64> {
        self.not_after
    }

    pub fn config(&self) -> ServerTlsConfig {
        // A client that opens a connection and never finishes the handshake is dropped.
        let config = ServerTlsConfig::new()
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.client_ca {
            None => config,
            // With a CA, a client certificate is verified whenever one is presented, and
            // required when so configured.
            Some(ca) => config
                .client_ca_root(ca.clone())
                .client_auth_optional(!self.require_client_cert),
        }
    }
}

/// The notAfter of the first certificate in a PEM chain (the leaf, which `tls_cert` lists
/// first). Only a figure for monitoring: rustls has already checked the certificate.
fn leaf_not_after(pem: &[u8]) -> Option<i64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = block.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// How to connect to `https://` sites: the CA to trust (else the system's roots) and the
/// certificate to present when the server asks for one.
#[derive(Clone, Default)]
pub struct ClientTls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// `cert` and `key` come together or not at all.
    pub fn load(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ClientTls, String> {
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem(cert, "client certificate")?,
                read_pem(key, "client key")?,
            )),
            _ => return Err("a client certificate and its key come together".into()),
        };
        let tls = ClientTls {
            ca: ca
                .map(|p| read_pem(p, "CA certificate").map(Certificate::from_pem))
                .transpose()?,
            identity,
        };
        tonic::transport::Endpoint::from_static("https://localhost")
            .tls_config(tls.config())
            .map_err(|e| format!("the client's TLS files: {e}"))?;
        Ok(tls)
    }

    pub fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(ca.clone()),
            None => config.with_native_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        config
    }
}
