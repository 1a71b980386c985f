//! The `/api/graphql` row's body check: queries pass, mutations are blocked, except
//! `geoRegistriesUpdate` (Geo's own bookkeeping). The query is parsed with a real GraphQL
//! parser (`apollo-parser`), never pattern-matched: `mutation` can hide behind comments,
//! strings, aliases, fragments and operation names.
//!
//! Trade-off: the gate reads every place Rails would take the operation from — a JSON body
//! (one operation or a batch), a form body, a multipart body's `operations` or `query` part,
//! and the query string — and picks the operation GitLab would run (by `operationName`, or
//! the only one). It fails closed: a body that is present but cannot be judged is refused,
//! never guessed at, because a parser more lenient than the gate's (JSON with comments or
//! trailing commas, case-insensitive part names) could run what the gate could not read.
//! That covers bodies that do not parse, media types the gate does not read, and ambiguous
//! requests: `query`/`operationName` given twice, keys Rails may read as them (case
//! variants, nested `query[...]`, `_json`, which GitLab runs as a batch), more than one
//! candidate multipart part. Also refused: a mutation in the query string beside a query in
//! the body (Rails reads the body only for some content types), documents past the parser's
//! nesting limit or batches past [`MAX_BATCH`], a document with a mutation but no selectable
//! operation, and a mutation whose fields cannot all be proven to be `geoRegistriesUpdate`.
//! The parser's recursion limit also keeps hostile nesting from overflowing the stack. Only a
//! request without a body (nginx's `auth_request` sends none) is decided on its URL alone.

use super::form;
use super::form::media_type;
use super::rules::{ids, Check};
use apollo_parser::cst;
use apollo_parser::Parser;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

/// The one mutation that may run on a read-only site.
const GEO_REGISTRIES_UPDATE: &str = "geoRegistriesUpdate";
/// Deepest nesting the parser follows. Real GitLab queries nest a dozen levels.
const RECURSION_LIMIT: usize = 128;
/// Deepest chain of fragment spreads followed when collecting a mutation's fields.
const FRAGMENT_DEPTH_LIMIT: usize = 32;
/// Most operations in one batched request the gate inspects. The GitLab UI batches a
/// handful; a body of thousands of tiny operations only costs parse time.
const MAX_BATCH: usize = 100;
/// Longest multipart boundary (RFC 2046).
const MAX_BOUNDARY: usize = 70;

/// One GraphQL request as Rails would see it in `params`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Op {
    query: Option<String>,
    operation_name: Option<String>,
    /// `query` or `operationName` given more than once, or a key Rails might read as one or
    /// as a batch (`Query`, `query[]`, `_json`).
    duplicate: bool,
    /// Why this request cannot run (a non-string `query`, a non-object batch element).
    bad: Option<&'static str>,
}

/// What one operation would do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Read,
    GeoMutation,
    Mutation(String),
    TooComplex(String),
    Unparseable(String),
    NoOperation(String),
}

/// Inspects a GraphQL request that has already passed the size bound.
pub(crate) fn check(body: Option<&[u8]>, content_type: Option<&str>, query_string: &str) -> Check {
    let url = url_op(query_string);
    // An empty body is no body: front ends that cannot send one send nothing.
    let body = body.filter(|b| !b.is_empty());
    let ops = match body {
        None => match url {
            Some(op) if op.query.is_some() || op.duplicate => vec![op],
            _ => {
                return Check::Pass {
                    rule: ids::GRAPHQL_NO_BODY,
                    reason: "GraphQL request without a body: cannot tell a query from a mutation"
                        .into(),
                };
            }
        },
        Some(b) => match parse_body(b, content_type) {
            Err(Unreadable::Unparseable(why)) => return unparseable(why),
            Err(Unreadable::Ambiguous(why)) => return ambiguous(&why),
            Err(Unreadable::MediaType(media)) => {
                return Check::Block {
                    rule: ids::GRAPHQL_MEDIA_TYPE,
                    reason: format!(
                        "GraphQL request body of media type {media:?}, which the gate does not \
                         read: it cannot tell a query from a mutation, so it is refused"
                    )
                    .into(),
                };
            }
            Ok(Payload::Single(mut op)) => {
                let mut ops = Vec::with_capacity(2);
                // Rails merges query-string params under body params: the body wins.
                if let Some(u) = url {
                    op.duplicate |= u.duplicate;
                    if op.operation_name.is_none() {
                        op.operation_name.clone_from(&u.operation_name);
                    }
                    if op.query.is_none() {
                        op.query = u.query;
                    } else if u.query.is_some() {
                        // But Rails reads the body only for some content types, so the URL's
                        // query may be the one that runs: inspect both.
                        ops.push(u);
                    }
                }
                ops.push(op);
                ops
            }
            Ok(Payload::Batch(ops)) => ops,
        },
    };
    if ops.is_empty() {
        return unparseable("an empty batch".into());
    }
    if ops.len() > MAX_BATCH {
        return Check::Block {
            rule: ids::GRAPHQL_TOO_COMPLEX,
            reason: format!(
                "GraphQL batch of {} operations is more than the {MAX_BATCH} the gate inspects",
                ops.len()
            )
            .into(),
        };
    }
    if ops.iter().any(|op| op.duplicate) {
        return ambiguous(
            "it repeats \"query\" or \"operationName\", or has a key a parser may read as one \
             (a case variant, a nested key, \"_json\")",
        );
    }
    let outcomes: Vec<Outcome> = ops.iter().map(evaluate_op).collect();
    summarise(&outcomes)
}

fn unparseable(why: String) -> Check {
    Check::Block {
        rule: ids::GRAPHQL_UNPARSEABLE,
        reason: format!(
            "GraphQL request cannot be judged: unparseable ({why}); refused, as a more lenient \
             parser might run a mutation in it"
        )
        .into(),
    }
}

fn ambiguous(why: &str) -> Check {
    Check::Block {
        rule: ids::GRAPHQL_AMBIGUOUS,
        reason: format!(
            "GraphQL request is ambiguous: {why}; which copy runs depends on the parser, so it \
             is refused"
        )
        .into(),
    }
}

/// The strongest outcome decides: any mutation blocks the whole (batched) request.
fn summarise(outcomes: &[Outcome]) -> Check {
    let find = |f: fn(&Outcome) -> Option<&String>| outcomes.iter().find_map(f);
    if let Some(field) = find(|o| match o {
        Outcome::Mutation(f) => Some(f),
        _ => None,
    }) {
        return Check::Block {
            rule: ids::GRAPHQL_MUTATION,
            reason: format!("GraphQL mutation ({field}) on a read-only instance").into(),
        };
    }
    if let Some(why) = find(|o| match o {
        Outcome::TooComplex(w) => Some(w),
        _ => None,
    }) {
        return Check::Block {
            rule: ids::GRAPHQL_TOO_COMPLEX,
            reason: format!("GraphQL document is too complex to inspect ({why})").into(),
        };
    }
    if let Some(why) = find(|o| match o {
        Outcome::Unparseable(w) => Some(w),
        _ => None,
    }) {
        return unparseable(why.clone());
    }
    if let Some(why) = find(|o| match o {
        Outcome::NoOperation(w) => Some(w),
        _ => None,
    }) {
        return Check::Pass {
            rule: ids::GRAPHQL_NO_OPERATION,
            reason: format!("GraphQL request selects no operation ({why}); GitLab cannot run it")
                .into(),
        };
    }
    if outcomes.contains(&Outcome::GeoMutation) {
        return Check::Pass {
            rule: ids::GRAPHQL_GEO_MUTATION,
            reason: "GraphQL mutation geoRegistriesUpdate (Geo bookkeeping) is allowed".into(),
        };
    }
    Check::Pass {
        rule: ids::ALLOW_GRAPHQL,
        reason: "GraphQL query".into(),
    }
}

fn evaluate_op(op: &Op) -> Outcome {
    if let Some(why) = op.bad {
        return Outcome::Unparseable(why.into());
    }
    match &op.query {
        None => Outcome::Unparseable("no \"query\"".into()),
        Some(q) => evaluate(q, op.operation_name.as_deref()),
    }
}

/// Parses a document and classifies the operation that would run.
fn evaluate(query: &str, operation_name: Option<&str>) -> Outcome {
    let tree = Parser::new(query).recursion_limit(RECURSION_LIMIT).parse();
    if let Some(e) = tree.errors().find(|e| e.is_limit()) {
        return Outcome::TooComplex(e.message().to_string());
    }
    if let Some(e) = tree.errors().next() {
        return Outcome::Unparseable(format!("{} at byte {}", e.message(), e.index()));
    }
    let doc = tree.document();
    let mut ops = Vec::new();
    let mut fragments = Vec::new();
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(o) => ops.push(o),
            cst::Definition::FragmentDefinition(f) => fragments.push(f),
            _ => {}
        }
    }
    let name = operation_name.filter(|n| !n.is_empty());
    let selected = match name {
        Some(n) => ops
            .iter()
            .find(|o| name_text(o.name()).as_deref() == Some(n)),
        None if ops.len() == 1 => ops.first(),
        None => None,
    };
    let Some(op) = selected else {
        if ops.iter().any(is_mutation) {
            // GitLab would refuse to pick one; if some server did pick, it could be the
            // mutation. Nothing legitimate sends this, so refuse.
            return Outcome::Mutation("no operation selected in a document with a mutation".into());
        }
        return Outcome::NoOperation(match name {
            Some(n) => format!("no operation named {n:?}"),
            None if ops.is_empty() => "the document has no operation".into(),
            None => "several operations and no operationName".into(),
        });
    };
    if !is_mutation(op) {
        return Outcome::Read;
    }
    let mut fields = Vec::new();
    let mut visited = Vec::new();
    if let Err(why) = collect_fields(op.selection_set(), &fragments, &mut visited, 0, &mut fields) {
        return Outcome::Mutation(why);
    }
    let geo_only = fields
        .iter()
        .all(|f| f == GEO_REGISTRIES_UPDATE || f == "__typename");
    if geo_only && fields.iter().any(|f| f == GEO_REGISTRIES_UPDATE) {
        Outcome::GeoMutation
    } else {
        let first = fields
            .iter()
            .find(|f| *f != GEO_REGISTRIES_UPDATE && *f != "__typename");
        Outcome::Mutation(match first {
            Some(f) => f.clone(),
            None => "a mutation without fields".into(),
        })
    }
}

fn is_mutation(op: &cst::OperationDefinition) -> bool {
    op.operation_type()
        .is_some_and(|t| t.mutation_token().is_some())
}

/// Avoids `Name::text`, which panics on a name without a token.
fn name_text(name: Option<cst::Name>) -> Option<String> {
    name.and_then(|n| n.ident_token())
        .map(|t| t.text().to_string())
}

/// The top-level field names of a selection set, through fragments and inline fragments.
/// Each fragment is expanded once: its fields are a set, and re-expanding would let a
/// small document fan out exponentially.
fn collect_fields(
    set: Option<cst::SelectionSet>,
    fragments: &[cst::FragmentDefinition],
    visited: &mut Vec<String>,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<(), String> {
    if depth > FRAGMENT_DEPTH_LIMIT {
        return Err("fragments nested too deeply to inspect".into());
    }
    let Some(set) = set else { return Ok(()) };
    for sel in set.selections() {
        match sel {
            cst::Selection::Field(f) => match name_text(f.name()) {
                Some(n) => out.push(n),
                None => return Err("a field without a name".into()),
            },
            cst::Selection::InlineFragment(i) => {
                collect_fields(i.selection_set(), fragments, visited, depth + 1, out)?;
            }
            cst::Selection::FragmentSpread(s) => {
                let Some(name) = name_text(s.fragment_name().and_then(|n| n.name())) else {
                    return Err("a fragment spread without a name".into());
                };
                if visited.contains(&name) {
                    continue;
                }
                visited.push(name.clone());
                let mut found = false;
                for f in fragments {
                    if name_text(f.fragment_name().and_then(|n| n.name())).as_deref()
                        == Some(name.as_str())
                    {
                        found = true;
                        collect_fields(f.selection_set(), fragments, visited, depth + 1, out)?;
                    }
                }
                if !found {
                    return Err(format!("unknown fragment {name:?}"));
                }
            }
        }
    }
    Ok(())
}

/// `query` / `operationName` from the URL's query string, if it has either.
fn url_op(query_string: &str) -> Option<Op> {
    if query_string.is_empty() {
        return None;
    }
    let op = form_op(query_string);
    (op.query.is_some() || op.operation_name.is_some() || op.duplicate).then_some(op)
}

fn form_op(input: &str) -> Op {
    let lookalike = input
        .split('&')
        .map(|pair| pair.split_once('=').map_or(pair, |(k, _)| k))
        .any(|key| lookalike_key(&form::decode(key)));
    let mut op = Op {
        duplicate: lookalike,
        ..Op::default()
    };
    for (key, slot) in [
        ("query", &mut op.query),
        ("operationName", &mut op.operation_name),
    ] {
        let mut values = form::values(input, key);
        *slot = values.next().map(|v| v.into_owned());
        if values.next().is_some() {
            op.duplicate = true;
        }
    }
    op
}

/// Whether Rails might read `key` as `query`, `operationName` or a batch (`_json`) though
/// it is not exactly `query` or `operationName`: a case variant, a nested key (`query[]`).
fn lookalike_key(key: &str) -> bool {
    if key == "query" || key == "operationName" {
        return false;
    }
    let base = key.split('[').next().unwrap_or(key).trim();
    ["query", "operationName", "_json", "operations"]
        .iter()
        .any(|k| base.eq_ignore_ascii_case(k))
}

#[derive(Debug)]
enum Payload {
    Single(Op),
    Batch(Vec<Op>),
}

/// Why a present body cannot be judged.
#[derive(Debug)]
enum Unreadable {
    Unparseable(String),
    Ambiguous(String),
    MediaType(String),
}

/// Media types Rails parses as JSON parameters (`Mime[:json]` and its synonyms).
const JSON_TYPES: &[&str] = &["application/json", "text/x-json", "application/jsonrequest"];

/// Reads the body the way Rails' parameter parsers would, by content type. A media type it
/// does not know is not guessed at.
fn parse_body(body: &[u8], content_type: Option<&str>) -> Result<Payload, Unreadable> {
    let Some(ct) = content_type else {
        return match parse_json(body) {
            Ok(p) => Ok(p),
            // Rack parses a POST body without a content type as a form.
            Err(_) if !body.starts_with(b"{") && !body.starts_with(b"[") => {
                let op = form_op(&String::from_utf8_lossy(body));
                if op.query.is_some() || op.duplicate {
                    Ok(Payload::Single(op))
                } else {
                    Err(Unreadable::Unparseable(
                        "neither JSON nor a form with a \"query\"".into(),
                    ))
                }
            }
            Err(e) => Err(e),
        };
    };
    let media = media_type(ct);
    let is = |t: &str| media.eq_ignore_ascii_case(t);
    // Rack reads every multipart type as form data, not only multipart/form-data.
    let multipart_prefix = media.as_bytes().get(..10);
    if media.len() > 10 && multipart_prefix.is_some_and(|p| p.eq_ignore_ascii_case(b"multipart/")) {
        return multipart(body, ct);
    }
    if is("application/x-www-form-urlencoded") {
        return Ok(Payload::Single(form_op(&String::from_utf8_lossy(body))));
    }
    if JSON_TYPES.iter().any(|t| is(t)) {
        return parse_json(body);
    }
    let shown: String = media.chars().take(64).collect();
    Err(Unreadable::MediaType(shown))
}

fn parse_json(body: &[u8]) -> Result<Payload, Unreadable> {
    serde_json::from_slice::<Payload>(body)
        .map_err(|e| Unreadable::Unparseable(format!("invalid JSON: {e}")))
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Payload, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GraphQL request object or a batch of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Payload, A::Error> {
                read_op(map).map(Payload::Single)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Payload, A::Error> {
                let mut ops = Vec::new();
                while let Some(BatchElem(op)) = seq.next_element()? {
                    ops.push(op);
                }
                Ok(Payload::Batch(ops))
            }
        }
        d.deserialize_any(V)
    }
}

fn read_op<'de, A: MapAccess<'de>>(mut map: A) -> Result<Op, A::Error> {
    let mut op = Op::default();
    let (mut seen_query, mut seen_name) = (false, false);
    // Keys are owned so that escaped keys ("qu\u0065ry") compare as they decode.
    while let Some(key) = map.next_key::<String>()? {
        op.duplicate |= lookalike_key(&key);
        let (seen, slot, what) = match key.as_str() {
            "query" => (&mut seen_query, &mut op.query, "\"query\" is not a string"),
            "operationName" => (
                &mut seen_name,
                &mut op.operation_name,
                "\"operationName\" is not a string",
            ),
            _ => {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
        };
        op.duplicate |= *seen;
        *seen = true;
        match map.next_value::<serde_json::Value>()? {
            serde_json::Value::String(s) => *slot = Some(s),
            serde_json::Value::Null => {}
            _ => op.bad = Some(what),
        }
    }
    Ok(op)
}

/// A batch element: an object is a request; anything else cannot run.
struct BatchElem(Op);

impl<'de> Deserialize<'de> for BatchElem {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<BatchElem, D::Error> {
        fn not_object() -> BatchElem {
            BatchElem(Op {
                bad: Some("a batch element is not an object"),
                ..Op::default()
            })
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchElem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BatchElem, A::Error> {
                read_op(map).map(BatchElem)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchElem, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(not_object())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<BatchElem, E> {
                Ok(not_object())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<BatchElem, E> {
                Ok(not_object())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<BatchElem, E> {
                Ok(not_object())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<BatchElem, E> {
                Ok(not_object())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<BatchElem, E> {
                Ok(not_object())
            }
            fn visit_unit<E: de::Error>(self) -> Result<BatchElem, E> {
                Ok(not_object())
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a multipart body. GitLab takes the request from the `operations` part (the upload
/// spec, for multipart/form-data) or, as Rack turns every part into a parameter, from
/// `query` and `operationName` parts. Exactly one candidate may be there, named exactly.
fn multipart(body: &[u8], content_type: &str) -> Result<Payload, Unreadable> {
    let unparseable = |why: &str| Unreadable::Unparseable(why.to_string());
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY)
        .ok_or_else(|| unparseable("multipart body without a valid boundary"))?;
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary.as_bytes());
    let mut rest = body;
    // Skip the preamble up to the first delimiter.
    let start = find(rest, &delim).ok_or_else(|| unparseable("multipart body without a part"))?;
    rest = &rest[start + delim.len()..];
    let (mut operations, mut query, mut name) = (None, None, None);
    while let Some(end) = find(rest, &delim) {
        let part = &rest[..end];
        rest = &rest[end + delim.len()..];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(h) = find(part, b"\r\n\r\n") else {
            continue;
        };
        let content = &part[h + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let headers = String::from_utf8_lossy(&part[..h]);
        let Some(field) = part_name(&headers)? else {
            continue;
        };
        let slot = match field.as_str() {
            "operations" => &mut operations,
            "query" => &mut query,
            "operationName" => &mut name,
            f if lookalike_key(f) => {
                return Err(Unreadable::Ambiguous(format!(
                    "a multipart part named {:?}, which a parser may read as a GraphQL field",
                    f.chars().take(64).collect::<String>()
                )));
            }
            _ => continue,
        };
        if slot.replace(content).is_some() {
            return Err(Unreadable::Ambiguous(format!(
                "more than one multipart part named {field:?}"
            )));
        }
    }
    match (operations, query) {
        (Some(_), Some(_)) => Err(Unreadable::Ambiguous(
            "both an \"operations\" and a \"query\" multipart part".into(),
        )),
        (Some(ops), None) if name.is_none() => parse_json(ops),
        (Some(_), None) => Err(Unreadable::Ambiguous(
            "both an \"operations\" and an \"operationName\" multipart part".into(),
        )),
        (None, Some(q)) => {
            let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
            Ok(Payload::Single(Op {
                query: Some(text(q).ok_or_else(|| unparseable("a query part that is not UTF-8"))?),
                operation_name: match name {
                    Some(n) => {
                        Some(text(n).ok_or_else(|| {
                            unparseable("an operationName part that is not UTF-8")
                        })?)
                    }
                    None => None,
                },
                ..Op::default()
            }))
        }
        (None, None) => Err(unparseable(
            "multipart body without an \"operations\" or \"query\" part",
        )),
    }
}

/// The `name` of a part's `Content-Disposition`, read as a parameter (so `filename="query"`
/// is not a name). A part with two dispositions or two names is ambiguous.
fn part_name(headers: &str) -> Result<Option<String>, Unreadable> {
    let ambiguous = |why: &str| Err(Unreadable::Ambiguous(why.to_string()));
    let mut dispositions = headers.lines().filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    });
    let Some(disposition) = dispositions.next() else {
        return Ok(None);
    };
    if dispositions.next().is_some() {
        return ambiguous("a multipart part with two Content-Disposition headers");
    }
    let mut names = disposition.split(';').skip(1).filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_string())
    });
    let name = names.next();
    if names.next().is_some() {
        return ambiguous("a multipart part with two names");
    }
    Ok(name)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    haystack
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == first)
        .map(|(i, _)| i)
        .find(|&i| haystack[i..].starts_with(needle))
}

#[cfg(test)]
mod tests;
