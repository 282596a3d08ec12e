//! Full-object checksums: copies carry the source's checksum algorithm, and
//! where the source's full-object checksum is known, S3 checks the copy
//! against it on write.

use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};

/// The SDK algorithm for a listed name (`CRC64NVME`, `CRC32C`, ...).
pub(crate) fn algorithm(name: Option<&str>) -> Option<ChecksumAlgorithm> {
    match name? {
        "CRC64NVME" => Some(ChecksumAlgorithm::Crc64Nvme),
        "CRC32C" => Some(ChecksumAlgorithm::Crc32C),
        "CRC32" => Some(ChecksumAlgorithm::Crc32),
        "SHA1" => Some(ChecksumAlgorithm::Sha1),
        "SHA256" => Some(ChecksumAlgorithm::Sha256),
        _ => None,
    }
}

/// Whether S3 can keep a full-object checksum of this algorithm for a
/// multipart upload (the CRC family can; SHA checksums are per part).
pub(crate) fn full_object(alg: &ChecksumAlgorithm) -> bool {
    matches!(
        alg,
        ChecksumAlgorithm::Crc64Nvme | ChecksumAlgorithm::Crc32C | ChecksumAlgorithm::Crc32
    )
}

/// A source object's full-object checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checksum {
    pub(crate) algorithm: ChecksumAlgorithm,
    pub(crate) value: String,
}

impl Checksum {
    /// The full-object checksum a HeadObject (with checksum mode) reports,
    /// if any: composite multipart checksums (`…-N`) are not full-object.
    pub(crate) fn from_head(
        head: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    ) -> Option<Self> {
        if head.checksum_type() == Some(&ChecksumType::Composite) {
            return None;
        }
        let found = [
            (ChecksumAlgorithm::Crc64Nvme, head.checksum_crc64_nvme()),
            (ChecksumAlgorithm::Crc32C, head.checksum_crc32_c()),
            (ChecksumAlgorithm::Crc32, head.checksum_crc32()),
            (ChecksumAlgorithm::Sha256, head.checksum_sha256()),
            (ChecksumAlgorithm::Sha1, head.checksum_sha1()),
        ];
        found.into_iter().find_map(|(algorithm, v)| {
            v.filter(|v| !v.contains('-')).map(|v| Checksum { algorithm, value: v.to_string() })
        })
    }

    /// As attributes of a streamed payload.
    pub(crate) fn to_attributes(
        &self,
        attributes: &mut std::collections::BTreeMap<String, String>,
    ) {
        attributes.insert(ALGORITHM_ATTR.to_string(), self.algorithm.as_str().to_string());
        attributes.insert(VALUE_ATTR.to_string(), self.value.clone());
    }

    /// From the attributes of a streamed payload.
    pub(crate) fn from_attributes(
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Option<Self> {
        Some(Checksum {
            algorithm: algorithm(attributes.get(ALGORITHM_ATTR).map(String::as_str))?,
            value: attributes.get(VALUE_ATTR)?.clone(),
        })
    }
}

const ALGORITHM_ATTR: &str = "checksum-algorithm";
const VALUE_ATTR: &str = "checksum-value";

/// Sets a known checksum value on a PutObject or CompleteMultipartUpload
/// request builder, so S3 checks what it stores against it.
macro_rules! with_checksum {
    ($builder:expr, $checksum:expr) => {{
        use aws_sdk_s3::types::ChecksumAlgorithm as A;
        let b = $builder;
        match $checksum {
            Some(c) => match c.algorithm {
                A::Crc64Nvme => b.checksum_crc64_nvme(c.value.clone()),
                A::Crc32C => b.checksum_crc32_c(c.value.clone()),
                A::Crc32 => b.checksum_crc32(c.value.clone()),
                A::Sha256 => b.checksum_sha256(c.value.clone()),
                A::Sha1 => b.checksum_sha1(c.value.clone()),
                _ => b,
            },
            None => b,
        }
    }};
}
pub(crate) use with_checksum;

/// `ALGORITHM:value` of an object's full-object checksum, if it keeps one.
pub(crate) async fn of_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    owner: Option<String>,
    pacer: Option<&escrow_sync_core::RequestPacer>,
) -> escrow_sync_core::Result<Option<String>> {
    use crate::util::PaceExt;
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .set_expected_bucket_owner(owner)
        .send()
        .paced(pacer)
        .await
        .map_err(|e| crate::util::s3_error(e, "s3:HeadObject", crate::util::url(bucket, key)))?;
    Ok(Checksum::from_head(&head).map(|c| format!("{}:{}", c.algorithm.as_str(), c.value)))
}
