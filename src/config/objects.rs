//! Where a site keeps object bytes: `--objects-backend disk|s3` (and `GEO_AGENT_OBJECTS_*`),
//! the `[objects]` table with its `[objects.s3]` part, merged like every other setting
//! (flags > environment > file > defaults).
//!
//! Credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or from a file
//! private to its owner (`access_key_id = "…"`, `secret_access_key = "…"`); never from a
//! flag or the configuration file, which are seen by more eyes, and never into a log.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::{check_private, ConfigError};
use crate::objects::bucket::normalise_prefix;
use crate::objects::{Backend, S3Options};

/// The region when none is given (most S3-compatible servers accept any).
pub const DEFAULT_REGION: &str = "us-east-1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Files under the data directory.
    Disk,
    /// An S3-compatible bucket (`--objects-s3-*`).
    S3,
}

/// Flags of the object backend.
#[derive(Args, Debug, Default, Clone)]
pub struct ObjectsArgs {
    /// Where object bytes are kept: `disk` (under --data-dir, the default) or `s3` (an
    /// S3-compatible bucket; the registry and logs stay under --data-dir).
    #[arg(long, env = "GEO_AGENT_OBJECTS_BACKEND", value_enum)]
    pub objects_backend: Option<BackendKind>,
    /// The S3 server, e.g. https://s3.example.com or http://127.0.0.1:3900 (none: AWS).
    #[arg(long, env = "GEO_AGENT_OBJECTS_S3_ENDPOINT")]
    pub objects_s3_endpoint: Option<String>,
    /// The bucket.
    #[arg(long, env = "GEO_AGENT_OBJECTS_S3_BUCKET")]
    pub objects_s3_bucket: Option<String>,
    /// Keys start with this; each site needs a bucket or prefix of its own.
    #[arg(long, env = "GEO_AGENT_OBJECTS_S3_PREFIX")]
    pub objects_s3_prefix: Option<String>,
    /// The bucket's region [default: us-east-1].
    #[arg(long, env = "GEO_AGENT_OBJECTS_S3_REGION")]
    pub objects_s3_region: Option<String>,
    /// A file (mode 0600) with `access_key_id` and `secret_access_key`; without it they
    /// come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "GEO_AGENT_OBJECTS_S3_CREDENTIALS_FILE")]
    pub objects_s3_credentials_file: Option<PathBuf>,
}

/// The `[objects]` table.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ObjectsFile {
    pub backend: Option<BackendKind>,
    #[serde(default)]
    pub s3: S3File,
}

/// The `[objects.s3]` table.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct S3File {
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

/// The credentials file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
}

/// The backend the flags, environment and file ask for. `env` reads the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
/// A plain `http://` endpoint beyond loopback needs `allow_plaintext`: object bytes would
/// cross the network in clear text.
pub fn load(
    args: &ObjectsArgs,
    file: ObjectsFile,
    allow_plaintext: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Backend, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(format!("[objects] {m}"));
    let s3 = file.s3;
    match args.objects_backend.or(file.backend) {
        None | Some(BackendKind::Disk) => Ok(Backend::Disk),
        Some(BackendKind::S3) => {
            let bucket = args
                .objects_s3_bucket
                .clone()
                .or(s3.bucket)
                .filter(|b| !b.trim().is_empty())
                .ok_or_else(|| {
                    invalid(
                        "the s3 backend needs a bucket: --objects-s3-bucket or [objects.s3] bucket"
                            .into(),
                    )
                })?;
            let endpoint = args.objects_s3_endpoint.clone().or(s3.endpoint);
            if let Some(e) = &endpoint {
                let fine = (e.starts_with("http://") || e.starts_with("https://"))
                    && !e.chars().any(char::is_whitespace);
                if !fine {
                    return Err(invalid(format!(
                        "the s3 endpoint {e:?} must be an http:// or https:// URL"
                    )));
                }
                if e.split('/')
                    .nth(2)
                    .is_some_and(|authority| authority.contains('@'))
                {
                    return Err(invalid(
                        "the s3 endpoint holds credentials: put them in the credentials file"
                            .into(),
                    ));
                }
                if crate::types::check_plaintext(e, false, allow_plaintext).is_err() {
                    return Err(invalid(format!(
                        "the s3 endpoint {e} is plain HTTP to another host: object bytes would cross the network in clear text. Use https://, or set allow_plaintext = true if the network is trusted"
                    )));
                }
            }
            let prefix = args.objects_s3_prefix.clone().or(s3.prefix);
            let prefix = normalise_prefix(prefix.as_deref().unwrap_or("")).map_err(invalid)?;
            let region = args
                .objects_s3_region
                .clone()
                .or(s3.region)
                .unwrap_or_else(|| DEFAULT_REGION.to_string());
            let file = args
                .objects_s3_credentials_file
                .clone()
                .or(s3.credentials_file);
            let (access_key_id, secret_access_key) = match file {
                Some(path) => read_credentials(&path)?,
                None => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                    (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                        (id, secret)
                    }
                    _ => {
                        return Err(invalid(
                            "the s3 backend needs credentials: --objects-s3-credentials-file FILE (mode 0600), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
                        ))
                    }
                },
            };
            Ok(Backend::S3(S3Options {
                endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
                bucket,
                prefix,
                region,
                access_key_id,
                secret_access_key,
            }))
        }
    }
}

/// Reads a private credentials file. Its text is never quoted in an error.
fn read_credentials(path: &Path) -> Result<(String, String), ConfigError> {
    let what = "object storage credentials";
    check_private(path, what)?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        what: "cannot read the object storage credentials file",
        path: path.to_path_buf(),
        source,
    })?;
    let parsed: CredentialsFile = toml::from_str(&text).map_err(|e| {
        ConfigError::Invalid(format!(
            "the {what} file {} is not `access_key_id = \"…\"` and `secret_access_key = \"…\"`{}",
            path.display(),
            // The parser's message can quote the secret: only where it failed is said.
            e.span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default()
        ))
    })?;
    if parsed.access_key_id.trim().is_empty() || parsed.secret_access_key.trim().is_empty() {
        return Err(ConfigError::Invalid(format!(
            "the {what} file {} has an empty key",
            path.display()
        )));
    }
    Ok((
        parsed.access_key_id.trim().to_string(),
        parsed.secret_access_key.trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn s3_args(dir: &Path, text: &str, mode: u32) -> ObjectsArgs {
        let path = dir.join("creds");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        ObjectsArgs {
            objects_backend: Some(BackendKind::S3),
            objects_s3_bucket: Some("b".into()),
            objects_s3_credentials_file: Some(path),
            ..ObjectsArgs::default()
        }
    }

    const CREDS: &str = "access_key_id = \"GK1\"\nsecret_access_key = \"sekrit\"\n";

    #[test]
    fn disk_is_the_default() {
        let backend = load(
            &ObjectsArgs::default(),
            ObjectsFile::default(),
            false,
            |_| None,
        )
        .unwrap();
        assert!(matches!(backend, Backend::Disk));
    }

    #[test]
    fn s3_takes_a_private_credentials_file() {
        let dir = tempfile::tempdir().unwrap();
        let args = s3_args(dir.path(), CREDS, 0o600);
        let Backend::S3(o) = load(&args, ObjectsFile::default(), false, |_| None).unwrap() else {
            panic!("not s3");
        };
        assert_eq!(
            (o.access_key_id.as_str(), o.secret_access_key.as_str()),
            ("GK1", "sekrit")
        );
        assert_eq!((o.region.as_str(), o.prefix.as_str()), (DEFAULT_REGION, ""));

        let args = s3_args(dir.path(), CREDS, 0o644);
        let e = load(&args, ObjectsFile::default(), false, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0644") && e.contains("creds"), "{e}");
    }

    #[test]
    fn a_broken_credentials_file_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let args = s3_args(
            dir.path(),
            "access_key_id = \"GK1\"\nsecret = \"sekrit\"\n",
            0o600,
        );
        let e = load(&args, ObjectsFile::default(), false, |_| None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("sekrit"), "{e}");
        assert!(e.contains("access_key_id"), "{e}");
    }

    #[test]
    fn s3_needs_a_bucket_and_credentials() {
        let args = ObjectsArgs {
            objects_backend: Some(BackendKind::S3),
            ..ObjectsArgs::default()
        };
        let e = load(&args, ObjectsFile::default(), false, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a bucket"), "{e}");
        let file = ObjectsFile {
            backend: Some(BackendKind::S3),
            s3: S3File {
                bucket: Some("b".into()),
                prefix: Some("../x".into()),
                ..S3File::default()
            },
        };
        let e = load(&ObjectsArgs::default(), file, false, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix"), "{e}");
        let file = ObjectsFile {
            backend: Some(BackendKind::S3),
            s3: S3File {
                bucket: Some("b".into()),
                ..S3File::default()
            },
        };
        let e = load(&ObjectsArgs::default(), file, false, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs credentials"), "{e}");
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("GK2".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("s2".to_string()),
            _ => None,
        };
        let file = ObjectsFile {
            backend: Some(BackendKind::S3),
            s3: S3File {
                bucket: Some("b".into()),
                endpoint: Some("http://127.0.0.1:3900/".into()),
                prefix: Some("site-a".into()),
                ..S3File::default()
            },
        };
        let Backend::S3(o) = load(&ObjectsArgs::default(), file, false, env).unwrap() else {
            panic!("not s3");
        };
        assert_eq!(o.access_key_id, "GK2");
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(o.prefix, "site-a/");
    }

    #[test]
    fn an_endpoint_is_plain_http_only_on_loopback_and_holds_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = s3_args(dir.path(), CREDS, 0o600);
        for (endpoint, allow, ok) in [
            ("http://127.0.0.1:3900", false, true),
            ("http://localhost:3900", false, true),
            ("https://s3.example.com", false, true),
            ("http://s3.example.com", false, false),
            ("http://s3.example.com", true, true),
            ("https://GK1:sekrit@s3.example.com", false, false),
            ("s3.example.com", false, false),
        ] {
            args.objects_s3_endpoint = Some(endpoint.into());
            let got = load(&args, ObjectsFile::default(), allow, |_| None);
            assert_eq!(got.is_ok(), ok, "{endpoint}: {got:?}");
            if let Err(e) = got {
                assert!(!e.to_string().contains("sekrit"), "{e}");
            }
        }
    }
}
