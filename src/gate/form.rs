//! `application/x-www-form-urlencoded` parameters, as found in query strings and form bodies.
//! Rails merges both into `params`, so a GraphQL query or an LFS `operation` can arrive
//! there as well as in a JSON body; the gate has to read them the way Rack does.
//!
//! Trade-off: only the few keys the gate asks for are decoded, lazily, one at a time; an
//! invalid escape is kept literally (as Rack's lenient decoder does) rather than failing the
//! whole request, since an undecodable value cannot be the key or value the gate looks for.

use super::path::hex;
use std::borrow::Cow;

/// The media type of a header value: `application/json; charset=utf-8` → `application/json`.
pub(crate) fn media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

/// All values of parameter `key`, decoded, in order of appearance.
pub(crate) fn values<'a>(input: &'a str, key: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    input
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == key).then(|| decode(v))
        })
}

/// Decodes `+` as space and `%XX` escapes; invalid UTF-8 becomes U+FFFD.
pub(crate) fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_value_of_a_key() {
        let q = "operation=upload&x=1&oper%61tion=down+load&operation";
        let got: Vec<_> = values(q, "operation").collect();
        assert_eq!(got, ["upload", "down load", ""]);
        assert_eq!(values("", "operation").count(), 0);
        assert_eq!(values("&&=&", "operation").count(), 0);
    }

    #[test]
    fn keeps_bad_escapes_literally() {
        assert_eq!(decode("a%zzb%4"), "a%zzb%4");
        assert_eq!(decode("%FF"), "\u{fffd}");
        assert!(matches!(decode("plain"), Cow::Borrowed("plain")));
    }
}
