//! What the escrow store reads back is capped: an object of any size costs
//! at most `MAX_STORED_BYTES` + 1 bytes, and says it is over the cap.

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_mocks::{RuleMode, mock, mock_client};

use escrow_sync_cloudtrail::{EscrowTrailStore, MAX_STORED_BYTES, TrailStore};

#[tokio::test]
async fn the_store_stops_reading_one_byte_past_the_cap() {
    let big = mock!(Client::get_object)
        .match_requests(|r| r.key() == Some("trails/logs/big.json.gz"))
        .then_output(|| {
            GetObjectOutput::builder()
                .body(ByteStream::from(vec![7u8; MAX_STORED_BYTES as usize + 4096]))
                .build()
        });
    let small = mock!(Client::get_object)
        .match_requests(|r| r.key() == Some("trails/logs/small.json.gz"))
        .then_output(|| GetObjectOutput::builder().body(ByteStream::from_static(b"ok")).build());
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&big, &small]);
    let store = EscrowTrailStore::from_client(client, "escrow", "trails/");

    let got = store.get("logs", "big.json.gz").await.unwrap().unwrap();
    assert_eq!(got.body.len() as u64, MAX_STORED_BYTES + 1, "read up to the cap and one byte");
    assert!(got.over_cap());
    let got = store.get("logs", "small.json.gz").await.unwrap().unwrap();
    assert_eq!(got.body, b"ok");
    assert!(!got.over_cap());
}
