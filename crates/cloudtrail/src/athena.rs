//! Athena over the escrow copy of CloudTrail logs: a `CREATE EXTERNAL
//! TABLE` with partition projection by account, region and day (so no
//! partition is ever added by hand, and a query for one day reads one
//! folder), with CloudTrail's documented record schema, and example
//! queries. The table reads the escrow bucket where it is: nothing moves.
//!
//! Every value put into the SQL (bucket, key prefix, accounts, regions)
//! comes from escrow's folder names, which a primary can influence through
//! the keys it writes into its log bucket. Each is checked against what
//! AWS allows for it (a 12-digit account, an `o-…` organization id, a
//! region name, S3's bucket naming, a plain key prefix); anything else is
//! left out and said in [`AthenaDdl::skipped`], never quoted into SQL.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use escrow_sync_core::Result;

use crate::events::DESTRUCTIVE;
use crate::store::TrailStore;
use crate::validate::root;

/// The columns of a CloudTrail record, as Athena reads them with the
/// CloudTrail SerDe: AWS's documented schema (Athena user guide, "Create
/// the table for CloudTrail logs in Athena using partition projection").
pub const COLUMNS: &[(&str, &str)] = &[
    ("eventversion", "STRING"),
    (
        "useridentity",
        "STRUCT<type: STRING, principalid: STRING, arn: STRING, accountid: STRING, \
         invokedby: STRING, accesskeyid: STRING, username: STRING, \
         onbehalfof: STRUCT<userid: STRING, identitystorearn: STRING>, \
         sessioncontext: STRUCT<attributes: STRUCT<mfaauthenticated: STRING, \
         creationdate: STRING>, sessionissuer: STRUCT<type: STRING, principalid: STRING, \
         arn: STRING, accountid: STRING, username: STRING>, ec2roledelivery: STRING, \
         webidfederationdata: STRUCT<federatedprovider: STRING, \
         attributes: MAP<STRING, STRING>>>>",
    ),
    ("eventtime", "STRING"),
    ("eventsource", "STRING"),
    ("eventname", "STRING"),
    ("awsregion", "STRING"),
    ("sourceipaddress", "STRING"),
    ("useragent", "STRING"),
    ("errorcode", "STRING"),
    ("errormessage", "STRING"),
    ("requestparameters", "STRING"),
    ("responseelements", "STRING"),
    ("additionaleventdata", "STRING"),
    ("requestid", "STRING"),
    ("eventid", "STRING"),
    ("readonly", "STRING"),
    ("resources", "ARRAY<STRUCT<arn: STRING, accountid: STRING, type: STRING>>"),
    ("eventtype", "STRING"),
    ("apiversion", "STRING"),
    ("recipientaccountid", "STRING"),
    ("serviceeventdetails", "STRING"),
    ("sharedeventid", "STRING"),
    ("vpcendpointid", "STRING"),
    ("vpcendpointaccountid", "STRING"),
    ("eventcategory", "STRING"),
    (
        "addendum",
        "STRUCT<reason: STRING, updatedfields: STRING, originalrequestid: STRING, \
         originaleventid: STRING>",
    ),
    ("sessioncredentialfromconsole", "STRING"),
    ("edgedevicedetails", "STRING"),
    (
        "tlsdetails",
        "STRUCT<tlsversion: STRING, ciphersuite: STRING, clientprovidedhostheader: STRING>",
    ),
];

/// The partition columns, in the order of the storage template.
pub const PARTITIONS: &[&str] = &["account", "region", "day"];

/// One table's DDL and its example queries.
#[derive(Debug, Clone, Serialize)]
pub struct AthenaTable {
    /// The table's name.
    pub table: String,
    /// Where it reads (`s3://…/AWSLogs/`).
    pub location: String,
    /// `CREATE EXTERNAL TABLE …;`
    pub ddl: String,
    /// Example queries: a title and the SQL.
    pub queries: Vec<(String, String)>,
}

/// The tables of one job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AthenaDdl {
    /// One table per log location (and organization) escrow holds.
    pub tables: Vec<AthenaTable>,
    /// Folders left out because their names are not what AWS writes.
    pub skipped: Vec<String>,
}

/// Of one organization id (`""` for none): accounts, regions, first day.
type Group = (BTreeSet<String>, BTreeSet<String>, Option<String>);

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_org(s: &str) -> bool {
    s.strip_prefix("o-").is_some_and(|r| {
        (10..=32).contains(&r.len())
            && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// A region's name as AWS writes it (`us-east-1`, `us-gov-west-1`).
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    s.len() <= 32
        && parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// A real day (`yyyy/mm/dd`) between CloudTrail's start (2013) and now.
fn is_day(day: &str) -> bool {
    let Some(t) = crate::time::parse_rfc3339(&format!("{}T00:00:00Z", day.replace('/', "-")))
    else {
        return false;
    };
    let now = crate::time::epoch(std::time::SystemTime::now());
    crate::time::rfc3339(t)[..10].replace('-', "/") == day && day >= "2013/01/01" && t <= now
}

/// S3's bucket naming rules (the characters), and a key prefix of plain
/// characters: nothing that could end a SQL string or a template.
fn is_plain(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn last(prefix: &str) -> &str {
    prefix.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// A table name from `job`: lower case letters, digits and `_`.
fn table_name(job: &str, suffix: usize) -> String {
    let mut name: String = job
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    name = format!("cloudtrail_{}", name.trim_matches('_'));
    if suffix > 0 {
        name.push_str(&format!("_{suffix}"));
    }
    name
}

/// The DDL and example queries for the escrow copy of a `[[cloudtrail]]`
/// job: `escrow_bucket`/`prefix` as in [`crate::EscrowTrailStore`], the log
/// locations `roots` (log bucket, key prefix) and `store` to read accounts,
/// regions and the first day from folder names.
pub async fn athena_ddl(
    store: &dyn TrailStore,
    job: &str,
    escrow_bucket: &str,
    prefix: &str,
    roots: &[(String, String)],
) -> Result<AthenaDdl> {
    let mut out = AthenaDdl::default();
    if !is_plain(escrow_bucket) || !is_plain(prefix) {
        out.skipped.push(format!("s3://{escrow_bucket}/{prefix}: not a plain bucket and prefix"));
        return Ok(out);
    }
    for (bucket, key_prefix) in roots {
        let root = root(key_prefix);
        if !is_plain(bucket) || !is_plain(&root) {
            out.skipped.push(format!("{bucket}/{root}: not a plain bucket name and key prefix"));
            continue;
        }
        // organization id ("" for none) -> accounts, regions, first day.
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        let mut accounts: Vec<(String, String)> = Vec::new();
        for f in store.folders(bucket, &root).await? {
            let name = last(&f).to_string();
            if is_org(&name) {
                for a in store.folders(bucket, &f).await? {
                    accounts.push((name.clone(), last(&a).to_string()));
                }
            } else {
                accounts.push((String::new(), name));
            }
        }
        for (org, account) in accounts {
            if !is_account(&account) {
                out.skipped.push(format!("{bucket}/{root}{org}/{account}: not an account id"));
                continue;
            }
            let scope = if org.is_empty() {
                format!("{root}{account}/")
            } else {
                format!("{root}{org}/{account}/")
            };
            let group = groups.entry(org.clone()).or_default();
            group.0.insert(account);
            for r in store.folders(bucket, &format!("{scope}CloudTrail/")).await? {
                let region = last(&r).to_string();
                if !is_region(&region) {
                    out.skipped.push(format!("{bucket}/{r}: not a region"));
                    continue;
                }
                group.1.insert(region);
                // The first day: the first year, month and day folders.
                let mut at = r.clone();
                let mut parts = Vec::new();
                for _ in 0..3 {
                    let Some(first) = store.folders(bucket, &at).await?.into_iter().find(|f| {
                        let n = last(f);
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    }) else {
                        break;
                    };
                    parts.push(last(&first).to_string());
                    at = first;
                }
                let day = parts.join("/");
                if parts.len() == 3 && !is_day(&day) {
                    out.skipped.push(format!("{bucket}/{r}{day}/: not a day CloudTrail wrote"));
                } else if parts.len() == 3 && group.2.as_ref().is_none_or(|d| &day < d) {
                    group.2 = Some(day);
                }
            }
        }
        for (org, (accounts, regions, first)) in groups {
            if regions.is_empty() {
                continue;
            }
            let n = out.tables.len();
            let base = format!(
                "s3://{escrow_bucket}/{prefix}{bucket}/{root}{}",
                if org.is_empty() { String::new() } else { format!("{org}/") }
            );
            let table = table_name(job, n);
            let first = first.unwrap_or_else(|| "2015/01/01".into());
            out.tables.push(AthenaTable {
                ddl: ddl(&table, &base, &accounts, &regions, &first),
                queries: queries(&table),
                table,
                location: base,
            });
        }
    }
    Ok(out)
}

fn ddl(
    table: &str,
    base: &str,
    accounts: &BTreeSet<String>,
    regions: &BTreeSet<String>,
    first: &str,
) -> String {
    let columns: Vec<String> = COLUMNS.iter().map(|(c, t)| format!("  `{c}` {t}")).collect();
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{table}` (\n{}\n)\n\
         PARTITIONED BY ({})\n\
         ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'\n\
         STORED AS INPUTFORMAT 'com.amazon.emr.cloudtrail.CloudTrailInputFormat'\n\
         OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n\
         LOCATION '{base}'\n\
         TBLPROPERTIES (\n\
         \x20 'projection.enabled'='true',\n\
         \x20 'projection.account.type'='enum',\n\
         \x20 'projection.account.values'='{}',\n\
         \x20 'projection.region.type'='enum',\n\
         \x20 'projection.region.values'='{}',\n\
         \x20 'projection.day.type'='date',\n\
         \x20 'projection.day.format'='yyyy/MM/dd',\n\
         \x20 'projection.day.range'='{first},NOW',\n\
         \x20 'projection.day.interval'='1',\n\
         \x20 'projection.day.interval.unit'='DAYS',\n\
         \x20 'storage.location.template'='{base}${{account}}/CloudTrail/${{region}}/${{day}}'\n\
         );",
        columns.join(",\n"),
        PARTITIONS.iter().map(|p| format!("`{p}` STRING")).collect::<Vec<_>>().join(", "),
        list(accounts),
        list(regions),
    )
}

/// `eventname`/`eventsource` conditions of [`DESTRUCTIVE`], as SQL.
fn destructive_condition() -> String {
    let like = |g: &str| g.replace('*', "%");
    let parts: Vec<String> = DESTRUCTIVE
        .iter()
        .map(|(s, n)| match *s {
            "*" => format!("eventname LIKE '{}'", like(n)),
            s => format!("(eventsource = '{s}' AND eventname LIKE '{}')", like(n)),
        })
        .collect();
    format!("({})", parts.join("\n       OR "))
}

fn queries(table: &str) -> Vec<(String, String)> {
    let last_days = "day >= date_format(current_date - interval '30' day, '%Y/%m/%d')";
    vec![
        (
            "Destructive events of the last 30 days, oldest first (the calls `trail events \
             --destructive` selects; Athena checks no digest and reads the current version of \
             each file, planted ones included: prove what matters with `trail events`)"
                .into(),
            format!(
                "SELECT eventtime, useridentity.arn, sourceipaddress, eventsource, eventname, \
                 errorcode, requestparameters\nFROM `{table}`\nWHERE {last_days}\n  AND {}\n\
                 ORDER BY eventtime;",
                destructive_condition()
            ),
        ),
        (
            "Console logins by principal and source IP (a new IP stands out)".into(),
            format!(
                "SELECT useridentity.arn, sourceipaddress, count(*) AS logins, min(eventtime) AS \
                 first, max(eventtime) AS last\nFROM `{table}`\nWHERE {last_days}\n  AND eventname = \
                 'ConsoleLogin'\nGROUP BY useridentity.arn, sourceipaddress\nORDER BY first;"
            ),
        ),
        (
            "Access keys created, updated or deleted".into(),
            format!(
                "SELECT eventtime, useridentity.arn, sourceipaddress, eventname, \
                 requestparameters\nFROM `{table}`\nWHERE {last_days}\n  AND eventsource = \
                 'iam.amazonaws.com' AND eventname LIKE '%AccessKey%' AND readonly = 'false'\nORDER \
                 BY eventtime;"
            ),
        ),
        (
            "Everything one principal did on one day (set the ARN and the day)".into(),
            format!(
                "SELECT eventtime, sourceipaddress, eventsource, eventname, errorcode, \
                 requestparameters\nFROM `{table}`\nWHERE day = '2026/01/31'\n  AND \
                 (useridentity.arn = 'arn:aws:iam::111122223333:user/NAME'\n       OR \
                 useridentity.sessioncontext.sessionissuer.arn = \
                 'arn:aws:iam::111122223333:role/NAME')\nORDER BY eventtime;"
            ),
        ),
        (
            "Calls refused for lack of permission, by principal (probing)".into(),
            format!(
                "SELECT useridentity.arn, eventname, count(*) AS refused\nFROM `{table}`\nWHERE \
                 {last_days}\n  AND errorcode IN ('AccessDenied', 'Client.UnauthorizedOperation', \
                 'UnauthorizedOperation')\nGROUP BY useridentity.arn, eventname\nORDER BY refused \
                 DESC;"
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_that_could_break_the_sql_are_refused() {
        assert!(is_account("111122223333") && !is_account("11112222333'"));
        assert!(is_org("o-abcdef1234") && !is_org("o-abc") && !is_org("o-abcdef1234'"));
        assert!(is_region("eu-west-1") && !is_region("eu-west-1'") && !is_region(""));
        assert!(is_region("us-gov-west-1") && !is_region("xx-fake") && !is_region("eu-west-x"));
        assert!(is_day("2026/11/01") && !is_day("0000/00/00") && !is_day("1000/01/01"));
        assert!(!is_day("2026/02/30") && !is_day("2999/01/01"));
        assert!(is_plain("logs/2026") && !is_plain("a'b") && !is_plain("a}b") && !is_plain("a$b"));
        assert_eq!(table_name("Prod Trail!", 0), "cloudtrail_prod_trail");
        assert_eq!(table_name("t", 2), "cloudtrail_t_2");
    }

    #[test]
    fn the_destructive_query_holds_every_pair() {
        let c = destructive_condition();
        assert!(c.contains("eventname LIKE 'Delete%'"), "{c}");
        assert!(c.contains("(eventsource = 'kms.amazonaws.com' AND eventname LIKE 'DisableKey')"));
        assert_eq!(c.matches(" OR ").count() + 1, DESTRUCTIVE.len());
    }
}
