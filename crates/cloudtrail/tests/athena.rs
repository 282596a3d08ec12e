//! `trail athena`: the DDL parses in a SQL parser, holds CloudTrail's
//! documented columns and the three projected partitions, and its storage
//! template, filled with a file's account, region and day, is the folder
//! that file is in; folder names a primary could plant are never put into
//! the SQL.

use sqlparser::ast::{HiveDistributionStyle, Statement};
use sqlparser::dialect::DatabricksDialect;
use sqlparser::parser::Parser;

use escrow_sync_cloudtrail::synthetic::{MemoryStore, SyntheticFile, SyntheticTrail};
use escrow_sync_cloudtrail::time::parse_rfc3339;
use escrow_sync_cloudtrail::{ATHENA_COLUMNS, ATHENA_PARTITIONS, athena_ddl};

const BUCKET: &str = "primary-trail-logs";

fn store() -> (MemoryStore, Vec<SyntheticFile>) {
    let trail = SyntheticTrail::new("111111111111", "us-east-1", "main", BUCKET, "audit/");
    let mut files = trail.hours(parse_rfc3339("2026-11-01T10:00:00Z").unwrap(), 2, 2);
    files.extend(trail.in_region("eu-west-1").hours(
        parse_rfc3339("2026-10-30T10:00:00Z").unwrap(),
        1,
        1,
    ));
    let mem = MemoryStore::new(BUCKET);
    files.iter().for_each(|f| mem.put(f));
    (mem, files)
}

#[tokio::test]
async fn the_ddl_parses_and_matches_the_documented_schema_and_layout() {
    let (mem, files) = store();
    let roots = vec![(BUCKET.to_string(), "audit".to_string())];
    let ddl = athena_ddl(&mem, "trail", "escrow-trails", "cloudtrail/", &roots).await.unwrap();
    assert_eq!(ddl.tables.len(), 1, "{ddl:?}");
    assert!(ddl.skipped.is_empty(), "{:?}", ddl.skipped);
    let table = &ddl.tables[0];
    assert_eq!(table.location, "s3://escrow-trails/cloudtrail/primary-trail-logs/audit/AWSLogs/");

    let parsed = Parser::parse_sql(&DatabricksDialect {}, &table.ddl).expect("the DDL parses");
    let [Statement::CreateTable(create)] = parsed.as_slice() else { panic!("{parsed:?}") };
    assert!(create.external);
    assert_eq!(create.name.to_string(), "`cloudtrail_trail`");
    let columns: Vec<String> = create.columns.iter().map(|c| c.name.value.clone()).collect();
    let documented: Vec<&str> = ATHENA_COLUMNS.iter().map(|(c, _)| *c).collect();
    assert_eq!(columns, documented);
    for must in ["eventtime", "eventname", "sourceipaddress", "useridentity", "errorcode"] {
        assert!(columns.iter().any(|c| c == must), "{must}");
    }
    let HiveDistributionStyle::PARTITIONED { columns: parts } = &create.hive_distribution else {
        panic!("not partitioned: {:?}", create.hive_distribution)
    };
    let parts: Vec<&str> = parts.iter().map(|c| c.name.value.as_str()).collect();
    assert_eq!(parts, ATHENA_PARTITIONS);

    // Projection: both regions, the account, the first day escrow holds.
    for p in [
        "'projection.enabled'='true'",
        "'projection.account.values'='111111111111'",
        "'projection.region.values'='eu-west-1,us-east-1'",
        "'projection.day.range'='2026/10/30,NOW'",
        "'projection.day.format'='yyyy/MM/dd'",
    ] {
        assert!(table.ddl.contains(p), "{p} in {}", table.ddl);
    }
    // The template, filled with a log file's partition values, is its folder.
    let template = table
        .ddl
        .split("'storage.location.template'='")
        .nth(1)
        .and_then(|t| t.split('\'').next())
        .unwrap();
    let log = files.iter().find(|f| f.key.contains("/CloudTrail/us-east-1/")).unwrap();
    let folder =
        format!("s3://escrow-trails/cloudtrail/{BUCKET}/{}", log.key.rsplit_once('/').unwrap().0);
    let filled = template
        .replace("${account}", "111111111111")
        .replace("${region}", "us-east-1")
        .replace("${day}", "2026/11/01");
    assert_eq!(filled, folder);
    // Every example query names the table and parses.
    for (title, sql) in &table.queries {
        assert!(sql.contains("`cloudtrail_trail`"), "{title}");
        Parser::parse_sql(&DatabricksDialect {}, sql).unwrap_or_else(|e| panic!("{title}: {e}"));
    }
}

#[tokio::test]
async fn planted_folder_names_never_reach_the_sql() {
    let (mem, _) = store();
    for key in [
        "audit/AWSLogs/1111'; DROP TABLE x; --/CloudTrail/us-east-1/2026/11/01/f.json.gz",
        "audit/AWSLogs/111111111111/CloudTrail/us-east-1'),('x/2026/11/01/f.json.gz",
    ] {
        mem.put(&SyntheticFile { key: key.into(), body: vec![1], metadata: Default::default() });
    }
    let roots = vec![(BUCKET.to_string(), "audit".to_string())];
    let ddl = athena_ddl(&mem, "trail", "escrow-trails", "cloudtrail/", &roots).await.unwrap();
    assert_eq!(ddl.skipped.len(), 2, "{:?}", ddl.skipped);
    let sql = &ddl.tables[0].ddl;
    assert!(!sql.contains("DROP") && !sql.contains("('x"), "{sql}");
    assert_eq!(Parser::parse_sql(&DatabricksDialect {}, sql).unwrap().len(), 1);
}
