//! Object names and kinds, validated before anything touches disk.
//!
//! A name is a relative path, but it never *becomes* a path: files are stored under a hash
//! of the name (see `files`), so a name cannot escape the data directory whatever it holds.
//! The rules are still strict, because names travel to other sites, into logs and into
//! operators' terminals: no `.` or `..` components, no empty components (`a//b`, a leading or
//! trailing `/`), no NUL, `\` or other control characters, bounded length and depth.

use std::fmt;

/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most `/`-separated components in a name.
pub const MAX_DEPTH: usize = 32;
/// Longest component, in bytes (a common file-system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest kind label.
pub const MAX_KIND_LEN: usize = 32;
/// The kind of an object pushed without one.
pub const DEFAULT_KIND: &str = "blob";

/// A validated object name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectName(String);

impl ObjectName {
    /// Validates `raw`; the error says which rule it breaks, quoting at most a short prefix.
    pub fn parse(raw: &str) -> Result<ObjectName, String> {
        let shown = || {
            let mut s: String = raw.chars().take(64).collect();
            if s.len() < raw.len() {
                s.push('…');
            }
            format!("{s:?}")
        };
        if raw.is_empty() {
            return Err("an object name cannot be empty".into());
        }
        if raw.len() > MAX_NAME_BYTES {
            return Err(format!(
                "object name {} is {} bytes long; the limit is {MAX_NAME_BYTES}",
                shown(),
                raw.len()
            ));
        }
        if raw.starts_with('/') {
            return Err(format!(
                "object name {} is absolute; names are relative paths",
                shown()
            ));
        }
        if let Some(c) = raw.chars().find(|c| c.is_control() || *c == '\\') {
            let what = match c {
                '\0' => "a NUL byte".to_string(),
                '\\' => "a backslash".to_string(),
                c => format!("the control character U+{:04X}", c as u32),
            };
            return Err(format!("object name {} contains {what}", shown()));
        }
        let components: Vec<&str> = raw.split('/').collect();
        if components.len() > MAX_DEPTH {
            return Err(format!(
                "object name {} has {} components; the limit is {MAX_DEPTH}",
                shown(),
                components.len()
            ));
        }
        for c in components {
            match c {
                "" => {
                    return Err(format!(
                        "object name {} has an empty component (`//` or a trailing `/`)",
                        shown()
                    ))
                }
                "." | ".." => {
                    return Err(format!(
                        "object name {} contains a `{c}` component",
                        shown()
                    ))
                }
                c if c.len() > MAX_COMPONENT_BYTES => {
                    return Err(format!(
                        "object name {} has a component of {} bytes; the limit is {MAX_COMPONENT_BYTES}",
                        shown(),
                        c.len()
                    ))
                }
                _ => {}
            }
        }
        Ok(ObjectName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Validates a kind label; empty means [`DEFAULT_KIND`].
pub fn parse_kind(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Ok(DEFAULT_KIND.to_string());
    }
    let ok = raw.len() <= MAX_KIND_LEN
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "kind {:?} is not a label: use at most {MAX_KIND_LEN} lowercase letters, digits, `-` or `_`",
            raw.chars().take(64).collect::<String>()
        ))
    }
}

/// Parses a sha256 given as 64 hex digits.
pub fn parse_sha256(raw: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(raw, &mut out).map_err(|_| {
        format!(
            "{:?} is not a sha256: expected 64 hex digits",
            raw.chars().take(80).collect::<String>()
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "a",
            "group/project.git",
            "lfs/ab/cd/abcdef",
            "uploads/ümlaut file.png",
            ".hidden/x",
            "a..b",
        ] {
            assert!(ObjectName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_could_escape_or_confuse() {
        let long = "x".repeat(10_000);
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        let wide = "y".repeat(MAX_COMPONENT_BYTES + 1);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("./x", "`.`"),
            ("/etc/passwd", "absolute"),
            ("a\0b", "NUL"),
            ("a\\b", "backslash"),
            ("a\nb", "U+000A"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            (&long, "10000 bytes"),
            (&deep, "33 components"),
            (&wide, "256 bytes"),
        ];
        for (name, why) in cases {
            let err = ObjectName::parse(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
            assert!(err.len() < 300, "the error quotes too much: {err}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(parse_kind("").unwrap(), "blob");
        assert_eq!(parse_kind("lfs").unwrap(), "lfs");
        assert!(parse_kind("LFS").is_err());
        assert!(parse_kind("a b").is_err());
        assert!(parse_kind(&"k".repeat(33)).is_err());
    }

    proptest! {
        /// Whatever is accepted, no component could step out of a directory.
        #[test]
        fn accepted_names_never_escape(raw in "[a-z./\\\\\0]{0,12}") {
            if let Ok(name) = ObjectName::parse(&raw) {
                for c in name.as_str().split('/') {
                    prop_assert!(!c.is_empty() && c != "." && c != "..");
                    prop_assert!(!c.contains('\0') && !c.contains('\\'));
                }
                prop_assert!(!name.as_str().starts_with('/'));
            }
        }

        #[test]
        fn never_panics(raw in any::<String>()) {
            let _ = ObjectName::parse(&raw);
            let _ = parse_kind(&raw);
            let _ = parse_sha256(&raw);
        }
    }
}
