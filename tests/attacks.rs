//! What a hostile client gets, sent by a generic gRPC client that knows nothing of our
//! types (Python grpcio, messages built from the server's reflection): each call is an
//! attack that once worked, and each answer is checked, as is the deployment afterwards.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use common::*;
use serde_json::{json, Value};

/// Runs `calls` through `tests/grpc_call.py` against `site`; one answer per call.
fn generic_calls(site: &SiteProc, calls: &Value) -> Vec<Value> {
    if !have(&["python3", "-c", "import grpc, grpc_reflection"], "grpcio") {
        return Vec::new();
    }
    let mut child = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_call.py"))
        .arg(site.grpc.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(calls.to_string().as_bytes())
        .expect("write the calls");
    let out = child.wait_with_output().expect("the generic client ends");
    assert!(
        out.status.success(),
        "the generic client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON answers")
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_calls_get_clear_refusals_and_change_nothing() {
    let cluster = Cluster::new();
    let primary = cluster.primary("p");
    let s1 = cluster.secondary("s1", &primary);
    let admin = cluster.admin_token.clone();
    set_maintenance(&primary, &admin, true, "upgrading")
        .await
        .expect("maintenance on");

    let actor = "a".repeat(3 << 20);
    let calls = json!([
        // A push whose actor is just under the message limit: once committed, its event
        // was larger than a stream message and stopped replication for good.
        {"method": "geo.v1.ObjectService/Push", "token": admin, "requests": [
            {"header": {"name": "big-actor", "actor": actor}},
            {"chunk": b64(b"x")},
        ]},
        // GraphQL the gate cannot parse (JSON with a trailing comma) hiding a mutation.
        {"method": "geo.v1.GateService/Check", "request": {"http": {
            "method": "POST", "path": "/api/graphql", "content_type": "application/json",
            "body": b64(br#"{"query": "mutation { destroyProject(id: 1) { id } }",}"#),
        }}},
        // A decoy multipart part named Operations beside operations.
        {"method": "geo.v1.GateService/Check", "request": {"http": {
            "method": "POST", "path": "/api/graphql",
            "content_type": "multipart/form-data; boundary=b",
            "body": b64(concat!(
                "--b\r\nContent-Disposition: form-data; name=\"Operations\"\r\n\r\n",
                "{\"query\": \"query { x }\"}\r\n",
                "--b\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n",
                "{\"query\": \"mutation { destroyProject(id: 1) { id } }\"}\r\n--b--\r\n"
            ).as_bytes()),
        }}},
        // A web "new file" request whose path merely ends like an LFS batch.
        {"method": "geo.v1.GateService/Check", "request": {"http": {
            "method": "POST", "path": "/root/proj/new/master/app/info/lfs/objects/batch",
            "content_type": "application/json", "body": b64(br#"{"operation":"download"}"#),
        }}},
    ]);
    let answers = generic_calls(&primary, &calls);
    if answers.is_empty() {
        return; // grpcio is missing outside CI; `have` said so.
    }
    assert_eq!(answers[0]["code"], "INVALID_ARGUMENT", "{}", answers[0]);
    for (i, a) in answers.iter().enumerate().skip(1) {
        assert_eq!(a["code"], "OK", "call {i}: {a}");
        assert_eq!(
            a["responses"][0]["verdict"], "VERDICT_DENY",
            "call {i}: {a}"
        );
    }

    // A compromised secondary, with its own credential: it claims the last epoch (which
    // once fenced every primary for good), impersonates another site, writes on its own.
    let s1_token = cluster.token_of("s1");
    let max = u64::MAX.to_string();
    let report = |site: &str| {
        json!({"site_id": site, "role": "ROLE_SECONDARY", "epoch": max,
               "settings": {}, "events": {}, "objects": {}})
    };
    let calls = json!([
        {"method": "geo.v1.ReplicationService/StreamSettings", "token": s1_token,
         "request": {"from_index": 1, "site_id": "s1", "epoch": max}},
        {"method": "geo.v1.ReplicationService/StreamEvents", "token": s1_token,
         "request": {"from_index": 1, "site_id": "s1", "epoch": max}},
        {"method": "geo.v1.ReplicationService/ReportStatus", "token": s1_token,
         "request": report("s1")},
        {"method": "geo.v1.ReplicationService/Fence", "token": s1_token,
         "request": {"site_id": "s1", "epoch": max}},
        {"method": "geo.v1.ReplicationService/ReportStatus", "token": s1_token,
         "request": report("s2")},
        {"method": "geo.v1.ObjectService/Push", "token": s1_token, "requests": [
            {"header": {"name": "own-account"}}, {"chunk": b64(b"x")},
        ]},
    ]);
    let answers = generic_calls(&primary, &calls);
    for a in &answers[..4] {
        assert_eq!(a["code"], "FAILED_PRECONDITION", "{a}");
        assert!(
            a["message"]
                .as_str()
                .is_some_and(|m| m.contains("not proven by an admin's promotion")),
            "{a}"
        );
    }
    for a in &answers[4..] {
        assert_eq!(a["code"], "PERMISSION_DENIED", "{a}");
    }
    let m = primary.get_mode().await;
    assert_eq!((m.epoch, m.fenced.as_str()), (1, ""), "{m:?}");

    // Nothing of the refused push was stored, and replication goes on: a later change
    // reaches the secondary.
    let err = stat(&primary, &admin, "big-actor").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    set_maintenance(&primary, &admin, false, "").await.unwrap();
    eventually("s1 out of maintenance", || async {
        (!s1.try_get_mode().await?.maintenance_mode).then_some(())
    })
    .await;
}
