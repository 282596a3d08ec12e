//! `escrow-sync policy`: the IAM policies this config needs, printed.
//!
//! `--format json` (the default) prints one document:
//! `{"primary": {"reader_role": {"name", "arn", "trust_policy",
//! "permission_policy"}, "bucket_policies": {bucket: [statements]},
//! "kms_key_policies": {key: [statements]}}, "escrow": {"operator",
//! "operator_policy", "kms_key_policy", "buckets": {bucket: settings}},
//! "notes": [...]}`; `--format cloudformation` prints `{"primary": template,
//! "escrow": template}`. Nothing is contacted: the policies come from the
//! config alone. A config they cannot be written for exits 2, naming the fix.

use std::io::Write;

use escrow_sync_core::Error;
use escrow_sync_governance::policy;

use crate::config::Config;
use crate::output::exit;
use crate::{PolicyArgs, PolicyFormat};

/// The document `policy` prints for `args`.
fn render(args: &PolicyArgs) -> Result<serde_json::Value, Error> {
    let config = Config::load(&args.config)?;
    let inventory = crate::governance::inventory(&config, None)?;
    policy::check(&inventory)?;
    Ok(match args.format {
        PolicyFormat::Json => serde_json::to_value(policy::generate(&inventory)).map_err(|e| {
            Error::new(escrow_sync_core::ErrorKind::Failed, "policy", "json", e.to_string())
        })?,
        PolicyFormat::Cloudformation => {
            let (primary, escrow) = policy::cloudformation(&inventory);
            serde_json::json!({"primary": primary, "escrow": escrow})
        }
    })
}

/// Runs `policy`; returns the exit code.
pub(crate) async fn run(args: &PolicyArgs) -> u8 {
    match render(args) {
        Ok(doc) => {
            let text = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string());
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {}", e.chain());
            exit::FATAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str, format: PolicyFormat) -> PolicyArgs {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("escrow-sync-policy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("escrow.toml");
        std::fs::write(&path, text).unwrap();
        PolicyArgs { config: path, format }
    }

    const CONFIG: &str = r#"
[escrow]
region = "us-east-1"
account_id = "222222222222"
role_arn = "arn:aws:iam::222222222222:role/escrow-operator"

[primary]
account_id = "111111111111"
role_arn = "arn:aws:iam::111111111111:role/escrow-reader"
external_id = "very-secret-external-id"

[[s3]]
source_bucket = "prod-assets"
dest_bucket = "escrow-prod-assets"
prefix = "data/"
"#;

    #[test]
    fn json_names_the_buckets_and_never_the_external_id() {
        let doc = render(&args(CONFIG, PolicyFormat::Json)).unwrap();
        let text = doc.to_string();
        assert!(!text.contains("very-secret-external-id"), "{text}");
        assert_eq!(doc["primary"]["reader_role"]["name"], "escrow-reader");
        assert!(doc["primary"]["bucket_policies"]["prod-assets"].is_array());
        assert!(doc["escrow"]["buckets"]["escrow-prod-assets"]["versioning"] == "Enabled");
    }

    #[test]
    fn cloudformation_gives_two_templates() {
        let doc = render(&args(CONFIG, PolicyFormat::Cloudformation)).unwrap();
        assert_eq!(doc["primary"]["Resources"]["ReaderRole"]["Type"], "AWS::IAM::Role");
        assert_eq!(doc["escrow"]["Resources"]["OperatorRole"]["Type"], "AWS::IAM::Role");
        assert_eq!(doc["primary"]["Parameters"]["ExternalId"]["NoEcho"], true);
        assert!(!doc.to_string().contains("very-secret-external-id"));
    }

    #[test]
    fn without_the_escrow_account_it_says_what_to_set() {
        let text = CONFIG.replace("account_id = \"222222222222\"\n", "");
        let err = render(&args(&text, PolicyFormat::Json)).unwrap_err();
        assert!(err.to_string().contains("[escrow] account_id"), "{err}");
    }

    #[test]
    fn the_same_account_on_both_sides_is_refused() {
        let text = CONFIG.replace("222222222222", "111111111111");
        let err = render(&args(&text, PolicyFormat::Json)).unwrap_err();
        assert!(err.chain().to_string().contains("account"), "{err}");
    }
}
