//! The GraphQL body check, case by case.

use super::*;

fn json(query: &str, name: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "query": query, "operationName": name })).unwrap()
}

/// (rule, passes)
fn run(body: &[u8], ct: Option<&str>, qs: &str) -> (&'static str, bool) {
    match check(Some(body), ct, qs) {
        Check::Pass { rule, .. } => (rule, true),
        Check::Block { rule, .. } => (rule, false),
    }
}

fn q(query: &str, name: Option<&str>) -> (&'static str, bool) {
    run(&json(query, name), Some("application/json"), "")
}

const PASS_QUERY: (&str, bool) = (ids::ALLOW_GRAPHQL, true);
const BLOCK_MUTATION: (&str, bool) = (ids::GRAPHQL_MUTATION, false);

#[test]
fn queries_pass_mutations_are_blocked() {
    assert_eq!(q("{ currentUser { id } }", None), PASS_QUERY);
    assert_eq!(
        q("query Q { project(fullPath: \"a/b\") { id } }", None),
        PASS_QUERY
    );
    assert_eq!(
        q("subscription S { issueUpdated { id } }", None),
        PASS_QUERY
    );
    assert_eq!(
        q("mutation { destroyProject(input: {}) { errors } }", None),
        BLOCK_MUTATION
    );
    assert_eq!(
        q(
            "mutation M { createIssue(input: {}) { errors } }",
            Some("M")
        ),
        BLOCK_MUTATION
    );
}

#[test]
fn the_operation_that_would_run_decides() {
    let doc = "query Q { a } mutation M { createIssue { id } }";
    assert_eq!(q(doc, Some("Q")), PASS_QUERY);
    assert_eq!(q(doc, Some("M")), BLOCK_MUTATION);
    // No name and two operations: GitLab cannot pick, but one is a mutation.
    assert_eq!(q(doc, None), BLOCK_MUTATION);
    assert_eq!(
        q("query A { a } query B { b }", None),
        (ids::GRAPHQL_NO_OPERATION, true)
    );
    assert_eq!(
        q("query A { a }", Some("Nope")),
        (ids::GRAPHQL_NO_OPERATION, true)
    );
    assert_eq!(
        q("query A { a }", Some("")),
        PASS_QUERY,
        "empty name = no name"
    );
    assert_eq!(
        q("fragment F on Query { a }", None),
        (ids::GRAPHQL_NO_OPERATION, true)
    );
}

#[test]
fn mutation_keyword_in_strings_or_comments_is_not_a_mutation() {
    let doc = "# mutation { destroyProject }\nquery { search(q: \"mutation { x }\") { id } }";
    assert_eq!(q(doc, None), PASS_QUERY);
}

#[test]
fn geo_registries_update_is_the_only_allowed_mutation() {
    let geo = "mutation { geoRegistriesUpdate(input: {registryId: \"1\", action: RESYNC, registryClass: PROJECT_REPOSITORY_REGISTRY}) { errors } }";
    assert_eq!(q(geo, None), (ids::GRAPHQL_GEO_MUTATION, true));
    let aliased = "mutation { r: geoRegistriesUpdate(input: {}) { errors } __typename }";
    assert_eq!(q(aliased, None), (ids::GRAPHQL_GEO_MUTATION, true));
    let alias_hides_other =
        "mutation { geoRegistriesUpdate: destroyProject(input: {}) { errors } }";
    assert_eq!(q(alias_hides_other, None), BLOCK_MUTATION);
    let mixed =
        "mutation { geoRegistriesUpdate(input: {}) { errors } createIssue(input: {}) { errors } }";
    assert_eq!(q(mixed, None), BLOCK_MUTATION);
    let skipped =
        "mutation { geoRegistriesUpdate { errors } createIssue @skip(if: true) { errors } }";
    assert_eq!(
        q(skipped, None),
        BLOCK_MUTATION,
        "directives do not hide a field"
    );
    assert_eq!(q("mutation { __typename }", None), BLOCK_MUTATION);
}

#[test]
fn fragments_are_followed() {
    let via_fragment = "mutation { ...F } fragment F on Mutation { createIssue { id } }";
    assert_eq!(q(via_fragment, None), BLOCK_MUTATION);
    let geo_fragment =
        "mutation { ...F } fragment F on Mutation { geoRegistriesUpdate { errors } }";
    assert_eq!(q(geo_fragment, None), (ids::GRAPHQL_GEO_MUTATION, true));
    let inline =
        "mutation { ... on Mutation { geoRegistriesUpdate { errors } destroyProject { errors } } }";
    assert_eq!(q(inline, None), BLOCK_MUTATION);
    let unknown = "mutation { ...Missing }";
    assert_eq!(
        q(unknown, None),
        BLOCK_MUTATION,
        "cannot prove it is geo-only"
    );
    let cycle = "mutation { ...A } fragment A on Mutation { ...B geoRegistriesUpdate { e } } fragment B on Mutation { ...A }";
    assert_eq!(q(cycle, None), (ids::GRAPHQL_GEO_MUTATION, true));
    // A long chain of fragments is cut off, and that refuses the mutation.
    let mut chain = String::from("mutation { ...F0 }");
    for i in 0..100 {
        chain.push_str(&format!(" fragment F{i} on Mutation {{ ...F{} }}", i + 1));
    }
    chain.push_str(" fragment F100 on Mutation { geoRegistriesUpdate { e } }");
    assert_eq!(q(&chain, None), BLOCK_MUTATION);
    // A fan-out bomb is expanded once per fragment, not exponentially.
    let mut bomb = String::from("mutation { ...F0 }");
    for i in 0..30 {
        bomb.push_str(&format!(
            " fragment F{i} on Mutation {{ ...F{n} ...F{n} ...F{n} }}",
            n = i + 1
        ));
    }
    bomb.push_str(" fragment F30 on Mutation { geoRegistriesUpdate { e } }");
    assert_eq!(q(&bomb, None), (ids::GRAPHQL_GEO_MUTATION, true));
}

#[test]
fn unparseable_requests_are_refused_and_say_so() {
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"not json", Some("application/json")),
        (b"{\"query\": \"mutation {\"}", Some("application/json")),
        (b"{\"query\": \"{ a } }}}\"}", Some("application/json")),
        (b"{\"query\": 42}", Some("application/json")),
        (b"{\"variables\": {}}", Some("application/json")),
        (b"\"just a string\"", Some("application/json")),
        (b"\xff\xfe\xfd", Some("application/json")),
        (b"{\"query\": \"\xff\"}", Some("application/json")),
        (b"[]", Some("application/json")),
        (b"{\"query\": \"{ a }\"", None),
        (b"x=1", None),
    ];
    for &(body, ct) in cases {
        let got = check(Some(body), ct, "");
        match got {
            Check::Block { rule, reason } => {
                assert_eq!(rule, ids::GRAPHQL_UNPARSEABLE, "{body:?}");
                assert!(reason.contains("cannot be judged"), "{reason}");
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }
    // An empty body is no body: decided on the URL, as before.
    assert!(matches!(
        check(Some(b""), None, ""),
        Check::Pass {
            rule: ids::GRAPHQL_NO_BODY,
            ..
        }
    ));
}

#[test]
fn json_a_lenient_parser_would_read_is_refused() {
    // Trailing commas and comments are not JSON; a lenient parser might still run it.
    for body in [
        &br#"{"query":"mutation { createIssue { id } }",}"#[..],
        br#"{"query":"{ a }", /* hi */ "operationName":null}"#,
        br#"{"query":"{ a }"} // trailing"#,
        br#"[{"query":"{ a }"},]"#,
    ] {
        assert_eq!(
            run(body, Some("application/json"), "").0,
            ids::GRAPHQL_UNPARSEABLE,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(!run(body, Some("application/json"), "").1);
    }
}

#[test]
fn legal_graphql_comments_and_commas_are_judged() {
    assert_eq!(q("query { a, b, } # mutation { x }", None), PASS_QUERY);
    assert_eq!(q("# a comment\n{ a,, b }", None), PASS_QUERY);
    assert_eq!(
        q(
            "# a comment\nmutation { createIssue(input: {a: 1,},) { errors, }, } # more",
            None
        ),
        BLOCK_MUTATION
    );
    assert_eq!(
        q("mutation #\n{ destroyProject(input: {}) { errors } }", None),
        BLOCK_MUTATION
    );
}

#[test]
fn keys_a_parser_may_read_as_query_are_ambiguous() {
    const AMBIGUOUS: (&str, bool) = (ids::GRAPHQL_AMBIGUOUS, false);
    let json = Some("application/json");
    for body in [
        &br#"{"query":"{ a }","Query":"mutation { b }"}"#[..],
        br#"{"query":"{ a }","OPERATIONNAME":"x"}"#,
        // Rails hands `_json` to GitLab as a batch.
        br#"{"query":"{ a }","_json":[{"query":"mutation { b }"}]}"#,
        br#"{"_json":[{"query":"mutation { b }"}]}"#,
    ] {
        assert_eq!(run(body, json, ""), AMBIGUOUS, "{body:?}");
    }
    let form = Some("application/x-www-form-urlencoded");
    for body in [
        &b"_json[][query]=mutation+%7B+b+%7D"[..],
        b"query=%7Ba%7D&Query=mutation+%7Bb%7D",
        b"query[]=mutation+%7Bb%7D",
        b"%5Fjson[][query]=mutation",
    ] {
        assert_eq!(run(body, form, ""), AMBIGUOUS, "{body:?}");
        assert_eq!(run(body, None, ""), AMBIGUOUS, "{body:?}, no content type");
    }
    // In the URL too, body or not.
    let qs = "_json%5B%5D%5Bquery%5D=mutation%7Bx%7D";
    assert_eq!(run(&json_body("{ a }"), json, qs), AMBIGUOUS);
    assert!(matches!(
        check(None, None, qs),
        Check::Block {
            rule: ids::GRAPHQL_AMBIGUOUS,
            ..
        }
    ));
    // Ordinary neighbours are not.
    let ok = br#"{"query":"{ a }","variables":{"query":"x"},"queryId":1}"#;
    assert_eq!(run(ok, json, ""), PASS_QUERY);
}

fn json_body(query: &str) -> Vec<u8> {
    json(query, None)
}

#[test]
fn media_types_the_gate_does_not_read_are_refused() {
    let body = json_body("{ a }");
    for ct in [
        "text/plain",
        "application/graphql",
        "application/graphql-response+json",
        "application/octet-stream",
        "",
        "application/json-patch+json",
    ] {
        assert_eq!(
            run(&body, Some(ct), ""),
            (ids::GRAPHQL_MEDIA_TYPE, false),
            "{ct}"
        );
    }
    for ct in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "text/x-json",
        "application/jsonrequest",
    ] {
        assert_eq!(run(&body, Some(ct), ""), PASS_QUERY, "{ct}");
    }
    match check(Some(&body), Some("text/plain"), "") {
        Check::Block { reason, .. } => assert!(reason.contains("text/plain"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_nesting_is_refused_without_overflowing_the_stack() {
    let deep = format!(
        "mutation {{ {}x{} }}",
        "a { ".repeat(5000),
        " }".repeat(5000)
    );
    assert_eq!(q(&deep, None), (ids::GRAPHQL_TOO_COMPLEX, false));
    let deep_value = format!("{{ a(x: {}1{}) }}", "[".repeat(50_000), "]".repeat(50_000));
    assert_eq!(q(&deep_value, None), (ids::GRAPHQL_TOO_COMPLEX, false));
    let deep_json = "[".repeat(100_000);
    assert_eq!(
        run(deep_json.as_bytes(), None, "").0,
        ids::GRAPHQL_UNPARSEABLE
    );
}

#[test]
fn batches_are_blocked_if_any_operation_mutates() {
    let batch = br#"[{"query":"{ a }"},{"query":"mutation { createIssue { id } }"}]"#;
    assert_eq!(run(batch, Some("application/json"), ""), BLOCK_MUTATION);
    let ok = br#"[{"query":"{ a }"},{"query":"query B { b }","operationName":"B"}]"#;
    assert_eq!(run(ok, Some("application/json"), ""), PASS_QUERY);
    let many = format!("[{}]", vec![r#"{"query":"{ a }"}"#; 101].join(","));
    assert_eq!(
        run(many.as_bytes(), Some("application/json"), ""),
        (ids::GRAPHQL_TOO_COMPLEX, false)
    );
    let enough = format!("[{}]", vec![r#"{"query":"{ a }"}"#; 100].join(","));
    assert_eq!(
        run(enough.as_bytes(), Some("application/json"), ""),
        PASS_QUERY
    );
    let odd = br#"[{"query":"{ a }"}, 5, "x", null, [1]]"#;
    assert_eq!(
        run(odd, Some("application/json"), "").0,
        ids::GRAPHQL_UNPARSEABLE
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let dup = br#"{"query":"{ a }","query":"mutation { createIssue { id } }"}"#;
    assert_eq!(
        run(dup, Some("application/json"), ""),
        (ids::GRAPHQL_AMBIGUOUS, false)
    );
    let escaped = br#"{"query":"{ a }","qu\u0065ry":"{ b }"}"#;
    assert_eq!(
        run(escaped, Some("application/json"), ""),
        (ids::GRAPHQL_AMBIGUOUS, false)
    );
    let dup_name =
        br#"{"query":"query A { a } mutation B { b }","operationName":"A","operationName":"B"}"#;
    assert_eq!(
        run(dup_name, Some("application/json"), ""),
        (ids::GRAPHQL_AMBIGUOUS, false)
    );
    let form = b"query=%7B+a+%7D&query=mutation+%7B+b+%7D";
    assert_eq!(
        run(form, Some("application/x-www-form-urlencoded"), ""),
        (ids::GRAPHQL_AMBIGUOUS, false)
    );
}

#[test]
fn form_bodies_and_query_strings_are_read_like_rails() {
    let form = b"query=mutation+%7B+createIssue+%7B+id+%7D+%7D";
    assert_eq!(
        run(
            form,
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            ""
        ),
        BLOCK_MUTATION
    );
    assert_eq!(
        run(form, None, ""),
        BLOCK_MUTATION,
        "no content type: Rack reads a form"
    );
    let read = b"query=%7B+a+%7D";
    assert_eq!(
        run(read, Some("application/x-www-form-urlencoded"), ""),
        PASS_QUERY
    );
    // No body, the query in the URL.
    let got = check(None, None, "query=mutation%7Bx%7D");
    assert!(
        matches!(
            got,
            Check::Block {
                rule: ids::GRAPHQL_MUTATION,
                ..
            }
        ),
        "{got:?}"
    );
    assert!(matches!(
        check(None, None, "foo=bar"),
        Check::Pass {
            rule: ids::GRAPHQL_NO_BODY,
            ..
        }
    ));
    // Body without a query: the URL's applies; the body's wins when both are there.
    let body = br#"{"operationName":null}"#;
    assert_eq!(
        run(body, Some("application/json"), "query=mutation%7Bx%7D"),
        BLOCK_MUTATION
    );
    let body = json("{ a }", None);
    assert_eq!(
        run(&body, Some("application/json"), "query=%7Bb%7D"),
        PASS_QUERY
    );
    // Whether Rails reads the body depends on the content type: a mutation in either
    // place is refused.
    assert_eq!(
        run(&body, Some("text/plain"), "query=mutation%7Bx%7D"),
        (ids::GRAPHQL_MEDIA_TYPE, false)
    );
    assert_eq!(
        run(&body, Some("application/json"), "query=mutation%7Bx%7D"),
        BLOCK_MUTATION
    );
    let named = json("query A { a } mutation B { b }", None);
    assert_eq!(
        run(&named, Some("application/json"), "operationName=B"),
        BLOCK_MUTATION
    );
    assert_eq!(
        run(&named, Some("application/json"), "operationName=A"),
        PASS_QUERY
    );
}

#[test]
fn multipart_uploads_are_read() {
    let ct = "multipart/form-data; boundary=\"XyZ\"";
    let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n\
{\"query\":\"mutation($f: Upload!) { designManagementUpload(input: {files: [$f]}) { errors } }\"}\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{\"0\":[\"variables.f\"]}\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"0\"; filename=\"a.png\"\r\n\r\n\x89PNG\xff\r\n--XyZ--\r\n";
    assert_eq!(run(body, Some(ct), ""), BLOCK_MUTATION);
    let query = b"--b\r\nContent-Disposition: form-data; name=operations\r\n\r\n{\"query\":\"{ a }\"}\r\n--b--";
    assert_eq!(
        run(query, Some("multipart/form-data; boundary=b"), ""),
        PASS_QUERY
    );
    let bad: &[(&[u8], &str)] = &[
        (b"--b\r\n\r\n--b--", "multipart/form-data; boundary=b"),
        (b"whatever", "multipart/form-data"),
        (b"whatever", "multipart/form-data; boundary="),
    ];
    for &(body, ct) in bad {
        assert_eq!(run(body, Some(ct), "").0, ids::GRAPHQL_UNPARSEABLE, "{ct}");
    }
}

/// A multipart body with boundary `b` and these (name header parameters, content) parts.
fn parts(parts: &[(&str, &str)]) -> Vec<u8> {
    let mut out = String::new();
    for (disposition, content) in parts {
        out +=
            &format!("--b\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{content}\r\n");
    }
    out += "--b--\r\n";
    out.into_bytes()
}

#[test]
fn multipart_bodies_are_read_like_rack_and_ambiguity_is_refused() {
    const FORM: &str = "multipart/form-data; boundary=b";
    const AMBIGUOUS: (&str, bool) = (ids::GRAPHQL_AMBIGUOUS, false);
    let read = r#"{"query":"{ a }"}"#;
    let write = r#"{"query":"mutation { createIssue { id } }"}"#;
    // A decoy in another case beside the real part, in either order.
    for body in [
        parts(&[
            (r#"name="Operations""#, read),
            (r#"name="operations""#, write),
        ]),
        parts(&[
            (r#"name="operations""#, write),
            (r#"name="OPERATIONS""#, read),
        ]),
        parts(&[
            (r#"name="operations""#, read),
            (r#"name="operations""#, write),
        ]),
        parts(&[
            (r#"name="operations""#, read),
            ("name=query", "mutation { b }"),
        ]),
        parts(&[
            (r#"name="operations""#, read),
            (r#"name="operationName""#, "B"),
        ]),
        parts(&[
            (r#"name="Query""#, "mutation { b }"),
            ("name=query", "{ a }"),
        ]),
        parts(&[
            (r#"name="_json[][query]""#, "mutation { b }"),
            ("name=query", "{ a }"),
        ]),
        parts(&[(r#"name="operations"; name="x""#, read)]),
    ] {
        assert_eq!(
            run(&body, Some(FORM), ""),
            AMBIGUOUS,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // Only a case variant: not what Rails reads, but not guessed at either.
    let body = parts(&[(r#"name="Operations""#, read)]);
    assert_eq!(run(&body, Some(FORM), ""), AMBIGUOUS);
    // `filename="operations"` is not a name.
    let body = parts(&[
        (r#"name="x"; filename="operations""#, read),
        (r#"name="operations""#, write),
    ]);
    assert_eq!(run(&body, Some(FORM), ""), BLOCK_MUTATION);
    let body = parts(&[(r#"name="x"; filename="operations""#, read)]);
    assert_eq!(run(&body, Some(FORM), "").0, ids::GRAPHQL_UNPARSEABLE);
    // Rack turns a `query` part into params[:query].
    let body = parts(&[("name=query", "mutation { createIssue { id } }")]);
    assert_eq!(run(&body, Some(FORM), ""), BLOCK_MUTATION);
    let body = parts(&[
        ("name=query", "query A { a } mutation B { b }"),
        ("name=operationName", "B"),
    ]);
    assert_eq!(run(&body, Some(FORM), ""), BLOCK_MUTATION);
    let body = parts(&[("name=query", "{ a }"), ("name=variables", "{}")]);
    assert_eq!(run(&body, Some(FORM), ""), PASS_QUERY);
    // Rack reads every multipart type, not only form-data.
    for ct in [
        "multipart/mixed; boundary=b",
        "Multipart/Related; boundary=\"b\"",
    ] {
        let body = parts(&[(r#"name="operations""#, write)]);
        assert_eq!(run(&body, Some(ct), ""), BLOCK_MUTATION, "{ct}");
        let body = parts(&[("name=query", "mutation { x }")]);
        assert_eq!(run(&body, Some(ct), ""), BLOCK_MUTATION, "{ct}");
        let body = parts(&[(r#"name="operations""#, read)]);
        assert_eq!(run(&body, Some(ct), ""), PASS_QUERY, "{ct}");
    }
}
