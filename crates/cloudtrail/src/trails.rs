//! The primary's trails (`cloudtrail:DescribeTrails` through the reader
//! role), and where they deliver.

use aws_sdk_cloudtrail::Client;

use escrow_sync_core::{Error, Result};

/// One trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trail {
    /// Its name.
    pub name: String,
    /// Its ARN.
    pub arn: String,
    /// Its home region.
    pub home_region: String,
    /// The bucket it delivers to.
    pub bucket: String,
    /// Its key prefix (`""` for none).
    pub key_prefix: String,
    /// Whether it writes digest files.
    pub validation: bool,
    /// Whether it logs every region.
    pub multi_region: bool,
}

impl Trail {
    /// The prefix of everything it delivers: `<key_prefix>/AWSLogs/`.
    pub fn root(&self) -> String {
        crate::validate::root(&self.key_prefix)
    }
}

/// The trails `DescribeTrails` lists (shadow trails of multi-region trails
/// included, each once), or only those named (by name or ARN) in `only`; a
/// name that matches none is an error that lists the trails there are.
pub async fn describe_trails(client: &Client, only: &[String]) -> Result<Vec<Trail>> {
    let region = client.config().region().map(|r| r.to_string()).unwrap_or_default();
    let out = client.describe_trails().include_shadow_trails(true).send().await.map_err(|e| {
        escrow_sync_aws::sdk_error(
            e,
            "cloudtrail:DescribeTrails",
            format!("trails of the primary ({region})"),
        )
    })?;
    let mut trails: Vec<Trail> = Vec::new();
    for t in out.trail_list() {
        let (Some(name), Some(bucket)) = (t.name(), t.s3_bucket_name()) else { continue };
        let arn = t.trail_arn().unwrap_or(name).to_string();
        if trails.iter().any(|x| x.arn == arn) {
            continue;
        }
        trails.push(Trail {
            name: name.to_string(),
            arn,
            home_region: t.home_region().unwrap_or(&region).to_string(),
            bucket: bucket.to_string(),
            key_prefix: t.s3_key_prefix().unwrap_or_default().to_string(),
            validation: t.log_file_validation_enabled().unwrap_or(false),
            multi_region: t.is_multi_region_trail().unwrap_or(false),
        });
    }
    if only.is_empty() {
        return Ok(trails);
    }
    let mut chosen = Vec::new();
    for want in only {
        match trails.iter().find(|t| &t.name == want || &t.arn == want) {
            Some(t) => chosen.push(t.clone()),
            None => {
                let there: Vec<_> = trails.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::invalid_config(format!(
                    "trail {want:?} is not among the primary's trails ({}): fix `trails` in the \
                     [[cloudtrail]] job",
                    if there.is_empty() { "there are none".to_string() } else { there.join(", ") }
                )));
            }
        }
    }
    Ok(chosen)
}
