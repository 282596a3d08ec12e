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

/// The primary's trails in every region (`ListTrails`, then
/// `DescribeTrails` in each trail's home region, through `client_for`), or
/// only those named (by name or ARN) in `only`; a name that matches none is
/// an error that lists the trails there are. `region` is where ListTrails
/// is asked.
pub async fn describe_trails(
    client_for: &(dyn Fn(&str) -> Client + Send + Sync),
    region: &str,
    only: &[String],
) -> Result<Vec<Trail>> {
    let lister = client_for(region);
    let mut homes: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut pages = lister.list_trails().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            escrow_sync_aws::sdk_error(e, "cloudtrail:ListTrails", "trails of the primary")
        })?;
        for t in page.trails() {
            let (Some(arn), Some(home)) = (t.trail_arn(), t.home_region()) else { continue };
            homes.entry(home.to_string()).or_default().push(arn.to_string());
        }
    }
    let mut trails: Vec<Trail> = Vec::new();
    for (home, arns) in homes {
        let out = client_for(&home)
            .describe_trails()
            .set_trail_name_list(Some(arns.clone()))
            .include_shadow_trails(false)
            .send()
            .await
            .map_err(|e| {
                escrow_sync_aws::sdk_error(
                    e,
                    "cloudtrail:DescribeTrails",
                    format!("trails of the primary in {home}"),
                )
            })?;
        for t in out.trail_list() {
            let (Some(name), Some(bucket)) = (t.name(), t.s3_bucket_name()) else { continue };
            let arn = t.trail_arn().unwrap_or(name).to_string();
            if !arns.contains(&arn) || trails.iter().any(|x| x.arn == arn) {
                continue;
            }
            trails.push(Trail {
                name: name.to_string(),
                arn,
                home_region: t.home_region().unwrap_or(&home).to_string(),
                bucket: bucket.to_string(),
                key_prefix: t.s3_key_prefix().unwrap_or_default().to_string(),
                validation: t.log_file_validation_enabled().unwrap_or(false),
                multi_region: t.is_multi_region_trail().unwrap_or(false),
            });
        }
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
