//! The restore pair under the conformance suite, on the emulator: an
//! escrow bucket read back as of now ([`S3RestoreSource`], escrow
//! credentials, keys without the job's `escrow/` prefix) into a restore
//! target bucket in the primary ([`S3Sink`]).
//!
//! The "primary" of the suite is here the versioned escrow bucket: seeding
//! or changing an item puts a new version under `escrow/`, deleting one
//! puts a delete marker (the restore source then skips the key, and the
//! target keeps what it restored), and breaking one deletes its versions for
//! good (its read by version id then fails, naming the key).

use async_trait::async_trait;
use bytes::Bytes;

use escrow_sync_core::{Result, Sink, Source};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_bucket, get, s3, unique};
use escrow_sync_s3::{S3RestoreSource, S3Sink};
use escrow_sync_testkit::conformance::{self, Fixture};

struct RestoreFixture {
    escrow: aws_sdk_s3::Client,
    target: aws_sdk_s3::Client,
    escrow_bucket: String,
    target_bucket: String,
    source: S3RestoreSource,
    sink: S3Sink,
}

impl RestoreFixture {
    async fn new() -> Self {
        let escrow = s3(&admin(ESCROW).await);
        let target = s3(&admin(PRIMARY).await);
        let escrow_bucket = unique("conf-restore-esc");
        let target_bucket = unique("conf-restore-dst");
        create_bucket(&escrow, &escrow_bucket, true).await;
        create_bucket(&target, &target_bucket, false).await;
        RestoreFixture {
            source: S3RestoreSource::from_client(escrow.clone(), &escrow_bucket)
                .with_dest_prefix("escrow/")
                .with_expected_owner(Some(ESCROW.into())),
            sink: S3Sink::from_client(target.clone(), &target_bucket)
                .with_expected_owner(Some(PRIMARY.into())),
            escrow,
            target,
            escrow_bucket,
            target_bucket,
        }
    }
}

#[async_trait]
impl Fixture for RestoreFixture {
    fn source(&self) -> &dyn Source {
        &self.source
    }
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }
    async fn put_source(&self, key: &str, data: Bytes) -> Result<()> {
        self.escrow
            .put_object()
            .bucket(&self.escrow_bucket)
            .key(format!("escrow/{key}"))
            .body(aws_sdk_s3::primitives::ByteStream::from(data))
            .send()
            .await
            .expect("put an escrow object");
        Ok(())
    }
    async fn delete_source(&self, key: &str) -> Result<()> {
        // Right after the put, often in the same second: the restore source
        // orders a key's entries by the listing (IsLatest), not by time.
        self.escrow
            .delete_object()
            .bucket(&self.escrow_bucket)
            .key(format!("escrow/{key}"))
            .send()
            .await
            .expect("put a delete marker");
        Ok(())
    }
    async fn break_item(&self, key: &str) -> Result<()> {
        let key = format!("escrow/{key}");
        let versions = self
            .escrow
            .list_object_versions()
            .bucket(&self.escrow_bucket)
            .prefix(&key)
            .send()
            .await
            .expect("list versions")
            .versions
            .unwrap_or_default();
        for v in versions.iter().filter(|v| v.key() == Some(key.as_str())) {
            self.escrow
                .delete_object()
                .bucket(&self.escrow_bucket)
                .key(&key)
                .set_version_id(v.version_id().map(str::to_string))
                .send()
                .await
                .expect("delete a version");
        }
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(get(&self.target, &self.target_bucket, key).await)
    }
}

#[tokio::test]
async fn the_restore_pair_conforms() {
    let summary = conformance::run_all(RestoreFixture::new).await;
    assert!(summary.all_ran(), "{summary:?}");
}
