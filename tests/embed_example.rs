//! The facade's embedding example (`crates/escrow-sync/examples/
//! embed_s3_dynamodb.rs`) run as an embedder runs it: its own process, its
//! own `SdkConfig`s from the environment, against the emulator's two
//! accounts. It escrows one bucket and one table; a second run copies
//! nothing.

use std::path::PathBuf;
use std::process::Command;

use escrow_sync_e2e::{
    BucketPair, ESCROW, ESCROW_ROLE, PRIMARY, READER_ROLE, admin, ddb, endpoint, unique,
};

/// The example's binary, built by `cargo build --all-targets` beside the
/// tests.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin =
        dir.join("examples").join(format!("embed_s3_dynamodb{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --workspace --all-targets` (cargo xtask test \
         does)",
        bin.display()
    );
    bin
}

fn run(pair: &BucketPair, source_table: &str, escrow_table: &str) -> (i32, String, String) {
    let out = Command::new(example())
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/escrow-sync-test-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/escrow-sync-test-credentials")
        .env("ESCROW_ROLE_ARN", ESCROW_ROLE)
        .env("PRIMARY_ROLE_ARN", READER_ROLE)
        .env("EXTERNAL_ID", "test-external-id")
        .env("SOURCE_BUCKET", &pair.source_bucket)
        .env("ESCROW_BUCKET", &pair.dest_bucket)
        .env("SOURCE_TABLE", source_table)
        .env("ESCROW_TABLE", escrow_table)
        .output()
        .expect("run the example");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedding_example_escrows_a_bucket_and_a_table() {
    let pair = BucketPair::new("embed").await;
    for i in 0..5 {
        pair.put(&format!("data/{i}.bin"), vec![i as u8; 100 + i]).await;
    }
    let primary_ddb = aws_sdk_dynamodb::Client::new(admin(PRIMARY).await.sdk_config());
    let escrow_ddb = aws_sdk_dynamodb::Client::new(admin(ESCROW).await.sdk_config());
    let table = ddb::create_source(&primary_ddb).await;
    ddb::put_items(&primary_ddb, &table, (0..40).map(ddb::item)).await;
    let escrow_table = unique("escrow-embed");

    let (code, stdout, stderr) = run(&pair, &table, &escrow_table);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains(&format!("s3:{} (s3): copied 5,", pair.source_bucket)), "{stdout}");
    assert!(stdout.contains("(dynamodb): copied 40,"), "{stdout}");
    let mut keys = pair.escrow_keys().await;
    keys.sort();
    assert_eq!(keys, (0..5).map(|i| format!("data/{i}.bin")).collect::<Vec<_>>());
    assert_eq!(pair.escrow_get("data/3.bin").await.as_deref(), Some(&[3u8; 103][..]));
    let source_items = ddb::all_items(&primary_ddb, &table).await;
    assert_eq!(source_items.len(), 40);
    assert_eq!(ddb::all_items(&escrow_ddb, &escrow_table).await, source_items);

    // Nothing changed in the primary: the second run copies nothing.
    let (code, stdout, stderr) = run(&pair, &table, &escrow_table);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("(s3): copied 0, already in escrow 5"), "{stdout}");
    assert!(stdout.contains("(dynamodb): copied 0,"), "{stdout}");
}
