//! Trail discovery against mocks: ListTrails lists the trails of every
//! region, and each is described in its home region (the emulator keeps
//! trails per region and lists only its own).

use aws_sdk_cloudtrail::Client;
use aws_sdk_cloudtrail::operation::describe_trails::DescribeTrailsOutput;
use aws_sdk_cloudtrail::operation::list_trails::ListTrailsOutput;
use aws_sdk_cloudtrail::types::{Trail as SdkTrail, TrailInfo};
use aws_smithy_mocks::{RuleMode, mock, mock_client};

use escrow_sync_cloudtrail::describe_trails;

fn arn(region: &str, name: &str) -> String {
    format!("arn:aws:cloudtrail:{region}:111111111111:trail/{name}")
}

/// A CloudTrail client of `region`: ListTrails (two pages, trails homed in
/// two regions) and DescribeTrails answering only for its own region.
fn client(region: &'static str) -> Client {
    let info =
        |r: &str, n: &str| TrailInfo::builder().trail_arn(arn(r, n)).name(n).home_region(r).build();
    let first = mock!(Client::list_trails)
        .match_requests(|r| r.next_token().is_none())
        .then_output(move || {
            ListTrailsOutput::builder().trails(info("us-east-1", "org")).next_token("2").build()
        });
    let second = mock!(Client::list_trails)
        .match_requests(|r| r.next_token() == Some("2"))
        .then_output(move || ListTrailsOutput::builder().trails(info("eu-west-1", "eu")).build());
    let describe = mock!(Client::describe_trails)
        .match_requests(move |r| {
            r.include_shadow_trails() == Some(false)
                && r.trail_name_list().iter().all(|a| a.contains(region))
        })
        .then_output(move || {
            let name = if region == "us-east-1" { "org" } else { "eu" };
            DescribeTrailsOutput::builder()
                .trail_list(
                    SdkTrail::builder()
                        .name(name)
                        .trail_arn(arn(region, name))
                        .home_region(region)
                        .s3_bucket_name(format!("{name}-logs"))
                        .s3_key_prefix("audit")
                        .log_file_validation_enabled(region == "us-east-1")
                        .is_multi_region_trail(region == "us-east-1")
                        .build(),
                )
                .build()
        });
    mock_client!(aws_sdk_cloudtrail, RuleMode::MatchAny, [&first, &second, &describe])
}

fn client_for(region: &str) -> Client {
    match region {
        "us-east-1" => client("us-east-1"),
        "eu-west-1" => client("eu-west-1"),
        other => panic!("no trail lives in {other}"),
    }
}

#[tokio::test]
async fn trails_of_every_region_are_found_in_their_home_region() {
    let trails = describe_trails(&client_for, "us-east-1", &[]).await.unwrap();
    let got: Vec<_> = trails
        .iter()
        .map(|t| (t.name.as_str(), t.home_region.as_str(), t.bucket.as_str(), t.validation))
        .collect();
    assert_eq!(
        got,
        [("eu", "eu-west-1", "eu-logs", false), ("org", "us-east-1", "org-logs", true)]
    );
    assert_eq!(trails[1].root(), "audit/AWSLogs/");
    assert!(trails[1].multi_region);

    let only = describe_trails(&client_for, "us-east-1", &[arn("eu-west-1", "eu")]).await.unwrap();
    assert_eq!(only.len(), 1);
    let err = describe_trails(&client_for, "us-east-1", &["gone".into()]).await.unwrap_err();
    let err = err.to_string();
    assert!(err.contains("\"gone\"") && err.contains("eu, org"), "{err}");
}
