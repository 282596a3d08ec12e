//! Embedding escrow-sync: an escrow of one S3 bucket and one DynamoDB table,
//! built from the caller's own `SdkConfig`s, run once, its report printed.
//!
//! A platform team's tool already holds AWS configurations; escrow-sync
//! takes them as they are and builds no credentials behind the caller's
//! back. Here the escrow credentials come from the environment (optionally
//! through a role, `ESCROW_ROLE_ARN`), and the primary's reader role is
//! assumed with them (`PRIMARY_ROLE_ARN`, `EXTERNAL_ID`): the escrow pulls.
//!
//! ```text
//! SOURCE_BUCKET=prod-assets ESCROW_BUCKET=escrow-prod-assets \
//! SOURCE_TABLE=orders ESCROW_TABLE=escrow-orders \
//! PRIMARY_ROLE_ARN=arn:aws:iam::111111111111:role/escrow-reader EXTERNAL_ID=... \
//! cargo run -p escrow-sync --example embed_s3_dynamodb
//! ```
//!
//! Exit 0 when every item is in escrow, 1 otherwise. `cargo xtask test` runs
//! it against the emulator (tests/embed_example.rs).

use std::process::ExitCode;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;

use escrow_sync::aws::{Session, Sessions};
use escrow_sync::spec::{Config, DynamoDbJob, EscrowSection, PrimarySection, S3Job};
use escrow_sync::{Mode, RunOptions, Runner, Verdict};

/// `base` with the credentials of `role` assumed through it.
async fn assumed(base: &SdkConfig, role: &str, external_id: Option<String>) -> SdkConfig {
    let mut provider = AssumeRoleProvider::builder(role).session_name("escrow-sync-embedded");
    if let Some(id) = external_id {
        provider = provider.external_id(id);
    }
    let provider = provider.configure(base).build().await;
    base.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
}

/// An environment variable the example needs.
fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name} (see the example's docs)"))
}

async fn escrow_once() -> Result<Verdict, Box<dyn std::error::Error>> {
    // The caller's own configurations: escrow first, the primary through it.
    let base = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let escrow_config = match std::env::var("ESCROW_ROLE_ARN") {
        Ok(role) => assumed(&base, &role, None).await,
        Err(_) => base.clone(),
    };
    let primary_role = var("PRIMARY_ROLE_ARN")?;
    let primary_config =
        assumed(&escrow_config, &primary_role, std::env::var("EXTERNAL_ID").ok()).await;
    let escrow = Session::identify(escrow_config, "escrow").await?;
    let primary = Session::identify(primary_config, "primary").await?;

    // The escrow of one bucket and one table, every other setting at its
    // default (versioned escrow bucket, point-in-time recovery and deletion
    // protection on the escrow table, the mass-change breaker at 25 %).
    let region = base.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
    let config = Config::new(EscrowSection::new(region), PrimarySection::new(primary.account_id()))
        .with_s3(S3Job::new(var("SOURCE_BUCKET")?, var("ESCROW_BUCKET")?))
        .with_dynamodb(DynamoDbJob::to_table(var("SOURCE_TABLE")?, var("ESCROW_TABLE")?))
        .validated("embed_s3_dynamodb")?;

    let runner = Runner::new(config).with_sessions(Sessions::new(escrow, primary)?);
    let run = runner.run(Mode::Run, &RunOptions::new()).await?;
    for job in &run.jobs {
        match (&job.report, &job.error) {
            (Some(r), _) => println!(
                "{} ({}): copied {}, already in escrow {}, failed {}, {} bytes",
                job.name, job.kind, r.copied, r.skipped, r.failed, r.bytes_copied
            ),
            (None, Some(e)) => println!("{} ({}): error: {}", job.name, job.kind, e.chain()),
            (None, None) => println!("{} ({}): no report", job.name, job.kind),
        }
    }
    Ok(Verdict::of_jobs(Mode::Run, &run.jobs))
}

#[tokio::main]
async fn main() -> ExitCode {
    match escrow_once().await {
        Ok(Verdict::Ok) => ExitCode::SUCCESS,
        Ok(verdict) => {
            eprintln!("escrow run: {verdict:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
