//! The LFS batch row's body check: a batch request is how a git-lfs client asks for
//! download *or* upload URLs, and only the upload kind is a write.
//!
//! Trade-off: the body is read with a streaming visitor that looks at the top-level
//! `operation` key only and skips everything else without building a tree, so a large
//! `objects` array costs no allocation. Every `operation` key counts — a body that repeats
//! the key with `upload` once is treated as an upload, whichever copy the server would keep —
//! and so does `operation` in the query string, which Rails merges into `params`. A body
//! that is not a JSON object is allowed and said to be unparseable: the LFS server cannot
//! run it either, and the actual object upload (`PUT .../gitlab-lfs/objects/...`) is a plain
//! write the gate refuses anyway.

use super::form;
use super::rules::{ids, Check};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// Inspects an LFS batch request that has already passed the size bound.
pub(crate) fn check(body: Option<&[u8]>, query: &str) -> Check {
    let query_upload = form::values(query, "operation").any(|v| is_upload(&v));
    if query_upload {
        return Check::Block {
            rule: ids::LFS_UPLOAD,
            reason: "LFS batch request for an upload (operation=upload in the query string)".into(),
        };
    }
    let Some(body) = body else {
        return Check::Pass {
            rule: ids::LFS_NO_BODY,
            reason: "LFS batch request without a body: cannot tell upload from download; \
                     object uploads themselves are refused as writes"
                .into(),
        };
    };
    match serde_json::from_slice::<Operations>(body) {
        Ok(ops) if ops.upload => Check::Block {
            rule: ids::LFS_UPLOAD,
            reason: "LFS batch request for an upload (\"operation\": \"upload\")".into(),
        },
        Ok(_) => Check::Pass {
            rule: ids::ALLOW_LFS_BATCH,
            reason: "LFS batch request for a download".into(),
        },
        Err(e) => Check::Pass {
            rule: ids::LFS_UNPARSEABLE,
            reason: format!(
                "LFS batch body is not a JSON object ({e}); the LFS server cannot run it either"
            )
            .into(),
        },
    }
}

fn is_upload(v: &str) -> bool {
    v.trim().eq_ignore_ascii_case("upload")
}

/// What the top-level `operation` keys of a batch body say.
#[derive(Debug, Default)]
struct Operations {
    upload: bool,
}

impl<'de> Deserialize<'de> for Operations {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Operations, D::Error> {
        d.deserialize_map(OperationsVisitor)
    }
}

struct OperationsVisitor;

impl<'de> Visitor<'de> for OperationsVisitor {
    type Value = Operations;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an LFS batch request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operations, A::Error> {
        let mut out = Operations::default();
        // Keys are owned so that escaped keys ("oper\u0061tion") compare as they decode.
        while let Some(key) = map.next_key::<String>()? {
            if key == "operation" {
                if let Some(OpValue(Some(v))) = map.next_value::<Option<OpValue>>()? {
                    out.upload |= is_upload(&v);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// A JSON string, or anything else (which cannot name an operation).
struct OpValue(Option<String>);

impl<'de> Deserialize<'de> for OpValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<OpValue, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OpValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OpValue, E> {
                Ok(OpValue(Some(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<OpValue, E> {
                Ok(OpValue(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<OpValue, E> {
                Ok(OpValue(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<OpValue, E> {
                Ok(OpValue(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<OpValue, E> {
                Ok(OpValue(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OpValue, E> {
                Ok(OpValue(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OpValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(OpValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OpValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(OpValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(body: &[u8], query: &str) -> (&'static str, bool) {
        match check(Some(body), query) {
            Check::Pass { rule, .. } => (rule, true),
            Check::Block { rule, .. } => (rule, false),
        }
    }

    #[test]
    fn download_passes_upload_is_blocked() {
        let dl =
            br#"{"operation":"download","objects":[{"oid":"abc","size":1}],"transfers":["basic"]}"#;
        assert_eq!(rule(dl, ""), (ids::ALLOW_LFS_BATCH, true));
        let ul = br#"{"objects":[{"oid":"abc","size":1}],"operation":"upload"}"#;
        assert_eq!(rule(ul, ""), (ids::LFS_UPLOAD, false));
        assert_eq!(
            rule(br#"{"operation":"UPLOAD"}"#, ""),
            (ids::LFS_UPLOAD, false)
        );
    }

    #[test]
    fn every_operation_key_counts() {
        let dup = br#"{"operation":"download","operation":"upload"}"#;
        assert_eq!(rule(dup, ""), (ids::LFS_UPLOAD, false));
        let escaped = br#"{"oper\u0061tion":"upl\u006fad"}"#;
        assert_eq!(rule(escaped, ""), (ids::LFS_UPLOAD, false));
        let nested = br#"{"objects":[{"operation":"upload"}],"operation":"download"}"#;
        assert_eq!(
            rule(nested, ""),
            (ids::ALLOW_LFS_BATCH, true),
            "only top level counts"
        );
        let not_a_string = br#"{"operation":["upload"]}"#;
        assert_eq!(rule(not_a_string, ""), (ids::ALLOW_LFS_BATCH, true));
    }

    #[test]
    fn query_string_operation_counts() {
        let dl = br#"{"operation":"download"}"#;
        assert_eq!(rule(dl, "operation=upload"), (ids::LFS_UPLOAD, false));
        assert_eq!(rule(dl, "oper%61tion=upload"), (ids::LFS_UPLOAD, false));
        assert!(matches!(
            check(None, "operation=upload"),
            Check::Block { .. }
        ));
        assert!(matches!(
            check(None, ""),
            Check::Pass {
                rule: ids::LFS_NO_BODY,
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_unparseable_not_a_panic() {
        for body in [
            &b""[..],
            b"not json",
            b"[1,2]",
            b"\xff\xfe{}",
            b"{\"operation\":\"\xff\"}",
            b"{\"operation\":\"download\"} trailing",
        ] {
            assert_eq!(rule(body, "").0, ids::LFS_UNPARSEABLE, "{body:?}");
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            rule(format!("{{\"objects\":{deep}").as_bytes(), "").0,
            ids::LFS_UNPARSEABLE
        );
    }
}
