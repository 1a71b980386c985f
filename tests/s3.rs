//! Objects kept in an S3 bucket instead of the data directory, end to end: real geo-agent
//! processes, a real S3 server (Garage, one per test, fresh buckets) and rclone to look into
//! the bucket as an operator would.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn garage_serves_a_bucket() {
    let Some(mut garage) = Garage::start() else {
        return;
    };
    let bucket = garage.bucket("harness");
    assert!(bucket.keys("").is_empty());
    let bytes = noise(1, 100_000);
    bucket.write("p/objects/ab/one", &bytes);
    bucket.write("p/tmp/two", b"2");
    assert_eq!(bucket.read("p/objects/ab/one"), bytes);
    assert_eq!(bucket.keys("p/objects"), ["p/objects/ab/one"]);
    assert_eq!(bucket.keys(""), ["p/objects/ab/one", "p/tmp/two"]);
    assert!(bucket.keys("q").is_empty());
    assert!(bucket.multipart_uploads().is_empty());
    // An upload cut short stays listed as incomplete.
    let mut upload = bucket.rcat("p/tmp/cut");
    upload
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&noise(2, 6 << 20))
        .unwrap();
    wait_until(
        "an incomplete multipart upload",
        Instant::now() + DEADLINE,
        Duration::from_millis(50),
        || (bucket.multipart_uploads() == ["p/tmp/cut"]).then_some(()),
    );
    upload.kill().unwrap();
    upload.wait().unwrap();
    assert_eq!(bucket.keys("p/tmp"), ["p/tmp/two"]);

    let dir = tempfile::tempdir().unwrap();
    let file = bucket.credentials_file(dir.path());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&bucket.secret), "{text}");

    garage.stop();
    garage.restart();
    assert_eq!(
        bucket.read("p/objects/ab/one"),
        bytes,
        "kept across a restart"
    );
}
