//! Account configuration and sessions: the escrow identity (credential chain
//! or profile, optionally through a role) and the primary identity (AssumeRole
//! into the primary's reader role, made with the escrow credentials).

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_types::SdkConfig;
use aws_types::region::Region;

use escrow_sync_core::{Error, ErrorKind, Result, RetryPolicy};

use crate::classify::{CredentialsFailure, credentials_failure, sdk_error};

/// How to reach the escrow account: the account that runs escrow-sync and
/// owns every copy.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscrowAccount {
    /// The region; default: the SDK's region chain (`AWS_REGION`, the
    /// profile's region).
    pub region: Option<String>,
    /// A named profile; default: the standard credential chain.
    pub profile: Option<String>,
    /// A role in the escrow account assumed first, if given.
    pub role_arn: Option<String>,
    /// The external id the escrow role's trust policy requires.
    pub external_id: Option<String>,
    /// The session name of the escrow role (default `escrow-sync`).
    pub session_name: Option<String>,
    /// How long the escrow role's credentials last, in seconds (900 to
    /// 43200; default: the role's own default, one hour).
    pub duration_seconds: Option<u32>,
    /// The expected account id, checked against STS GetCallerIdentity.
    pub account_id: Option<String>,
    /// An endpoint override (default: `AWS_ENDPOINT_URL` if set). With an
    /// endpoint and no role, the side is taken for an S3-compatible store
    /// without STS: no identity check, `account_id` taken as stated.
    pub endpoint_url: Option<String>,
    /// Allow escrow and primary to be the same account (labs only).
    pub allow_same_account: bool,
}

/// The shortest and longest AssumeRole session AWS grants, in seconds.
pub const ROLE_SESSION_SECONDS: std::ops::RangeInclusive<u32> = 900..=43200;

impl EscrowAccount {
    /// The escrow account in `region`, from the standard credential chain.
    pub fn new(region: impl Into<String>) -> Self {
        EscrowAccount { region: Some(region.into()), ..Default::default() }
    }
    /// The escrow account in the region the SDK's region chain gives
    /// (`AWS_REGION`, the profile's region), from the standard credential
    /// chain.
    pub fn from_environment() -> Self {
        Self::default()
    }
    /// Sets the region (`None`: the SDK's region chain).
    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region;
        self
    }
    /// Uses a named profile.
    pub fn with_profile(mut self, profile: Option<String>) -> Self {
        self.profile = profile;
        self
    }
    /// Assumes this escrow role first.
    pub fn with_role_arn(mut self, arn: Option<String>) -> Self {
        self.role_arn = arn;
        self
    }
    /// The external id of the escrow role.
    pub fn with_external_id(mut self, id: Option<String>) -> Self {
        self.external_id = id;
        self
    }
    /// The session name of the escrow role.
    pub fn with_session_name(mut self, name: Option<String>) -> Self {
        self.session_name = name;
        self
    }
    /// How long the escrow role's credentials last, in seconds.
    pub fn with_duration_seconds(mut self, seconds: Option<u32>) -> Self {
        self.duration_seconds = seconds;
        self
    }
    /// Expects this account id.
    pub fn with_account_id(mut self, id: Option<String>) -> Self {
        self.account_id = id;
        self
    }
    /// Overrides the endpoint.
    pub fn with_endpoint_url(mut self, url: Option<String>) -> Self {
        self.endpoint_url = url;
        self
    }
    /// Allows a same-account "escrow" (flagged with a warning in every report).
    pub fn with_allow_same_account(mut self, allow: bool) -> Self {
        self.allow_same_account = allow;
        self
    }
}

/// How to reach the primary account: the account being backed up.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimaryAccount {
    /// The primary's account id (required).
    pub account_id: String,
    /// The reader role, assumed with the escrow credentials (or, with
    /// `profile`, with that profile's credentials, as the AWS CLI's
    /// `source_profile` does).
    pub role_arn: Option<String>,
    /// A named profile: on its own, the primary's credentials; with
    /// `role_arn`, the credentials the reader role is assumed with.
    pub profile: Option<String>,
    /// The external id the reader role's trust policy requires.
    pub external_id: Option<String>,
    /// The region; default: the escrow region.
    pub region: Option<String>,
    /// An endpoint override for every primary call, STS included; default:
    /// the environment's (`AWS_ENDPOINT_URL`, else AWS), never the escrow's
    /// `endpoint_url`.
    pub endpoint_url: Option<String>,
}

impl PrimaryAccount {
    /// The primary account `account_id`.
    pub fn new(account_id: impl Into<String>) -> Self {
        PrimaryAccount { account_id: account_id.into(), ..Default::default() }
    }
    /// Assumes this reader role (with the escrow credentials, or the
    /// profile's when a profile is set too).
    pub fn with_role_arn(mut self, arn: Option<String>) -> Self {
        self.role_arn = arn;
        self
    }
    /// Uses a named profile (alone, or to assume the reader role with).
    pub fn with_profile(mut self, profile: Option<String>) -> Self {
        self.profile = profile;
        self
    }
    /// Sets the external id.
    pub fn with_external_id(mut self, id: Option<String>) -> Self {
        self.external_id = id;
        self
    }
    /// Sets the region.
    pub fn with_region(mut self, region: Option<String>) -> Self {
        self.region = region;
        self
    }
    /// Overrides the endpoint.
    pub fn with_endpoint_url(mut self, url: Option<String>) -> Self {
        self.endpoint_url = url;
        self
    }
}

/// One account's SDK configuration and verified account id.
#[derive(Debug, Clone)]
pub struct Session {
    config: SdkConfig,
    account_id: String,
    /// The credentials a role was assumed with, when there is a role.
    base: Option<SdkConfig>,
}

impl Session {
    /// A session from an SDK configuration whose account id is already known
    /// (embedders and tests; nothing is checked).
    pub fn from_parts(config: SdkConfig, account_id: impl Into<String>) -> Self {
        Session { config, account_id: account_id.into(), base: None }
    }

    /// Records the configuration whose credentials assumed this session's
    /// role: the identity that runs escrow-sync (the audit tells it from
    /// other IAM users).
    pub fn with_base(mut self, base: SdkConfig) -> Self {
        self.base = Some(base);
        self
    }

    /// The configuration of the identity that runs escrow-sync: the
    /// credentials the session's role was assumed with, or the session's own.
    pub fn runner_config(&self) -> &SdkConfig {
        self.base.as_ref().unwrap_or(&self.config)
    }

    /// A session from an SDK configuration; the account id is read with STS
    /// GetCallerIdentity.
    pub async fn identify(config: SdkConfig, label: &str) -> Result<Self> {
        let account_id = caller_identity(&config, label, None).await?;
        Ok(Session { config, account_id, base: None })
    }

    /// A session in another account through `role_arn`, assumed with this
    /// session's credentials (a recovery account's target role, assumed with
    /// the escrow credentials); its account id is read with STS and must be
    /// the role's.
    pub async fn assume(&self, role_arn: &str, session_name: &str) -> Result<Session> {
        let Some(expected) = role_account(role_arn) else {
            return Err(Error::invalid_config(format!(
                "{role_arn} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
            )));
        };
        let provider = AssumeRoleProvider::builder(role_arn)
            .session_name(session_name)
            .configure(&self.config)
            .build()
            .await;
        let config = self
            .config
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        let session = Session::identify(config, &format!("role {role_arn}")).await?;
        if session.account_id != expected {
            return Err(Error::invalid_config(format!(
                "assuming {role_arn} gave account {}, not {expected}: check the role ARN",
                session.account_id
            )));
        }
        Ok(session)
    }

    /// The SDK configuration to build service clients from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }

    /// The account id.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Whether requests go to an overridden endpoint (an emulator or an
    /// S3-compatible store): S3 clients then use path-style addressing.
    pub fn endpoint_overridden(&self) -> bool {
        self.config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty())
    }
}

/// The two sessions a job needs.
#[derive(Debug, Clone)]
pub struct Sessions {
    /// The escrow account (all writes, and CopyObject, happen here).
    pub escrow: Session,
    /// The primary account, through the reader role.
    pub primary: Session,
    /// Warnings every report must carry (e.g. a same-account escrow).
    pub warnings: Vec<String>,
}

impl Sessions {
    /// The sessions of a caller that built both itself (its own
    /// `SdkConfig`s, see [`Session::identify`]). Refuses one account on both
    /// sides: an escrow in the primary's own account is no escrow.
    pub fn new(escrow: Session, primary: Session) -> Result<Self> {
        if !escrow.account_id().is_empty() && escrow.account_id() == primary.account_id() {
            return Err(Error::invalid_config(format!(
                "the escrow and the primary are the same account ({}): give the escrow session \
                 the escrow account's credentials",
                escrow.account_id()
            )));
        }
        Ok(Sessions { escrow, primary, warnings: Vec::new() })
    }
}

/// Sets `url` as the endpoint of every client built from the config, over
/// the environment's: the SDK's clients otherwise take `AWS_ENDPOINT_URL`
/// (and `AWS_ENDPOINT_URL_<SERVICE>`) from the environment before the
/// config's own endpoint, so a side's `endpoint_url` in the config file
/// would lose to an endpoint meant for the other side (an escrow on its own
/// store with `AWS_ENDPOINT_URL` set, a primary on its own endpoint).
fn explicit_endpoint(conf: SdkConfig, url: &str) -> SdkConfig {
    let env = conf.clone();
    let mut b = conf.into_builder();
    b.set_endpoint_url(Some(url.to_string()));
    if env.service_config().is_some() {
        b.set_service_config(Some(ExplicitEndpoint(env)));
    }
    b.build()
}

/// The environment's per-service settings, but no endpoint: the config's
/// `endpoint_url` wins (see [`explicit_endpoint`]).
#[derive(Debug)]
struct ExplicitEndpoint(SdkConfig);

impl aws_types::service_config::LoadServiceConfig for ExplicitEndpoint {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        if key.profile() == "endpoint_url" {
            return None;
        }
        self.0.service_config()?.load_config(key)
    }
}

/// The account id in an IAM role ARN (`arn:aws:iam::123456789012:role/name`).
pub fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, service, _region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ok = arn_ == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource.starts_with("role/")
        && resource.len() > 5;
    ok.then_some(account)
}

fn valid_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Checks what can be checked without the network; returns the problems.
pub fn check_accounts(escrow: &EscrowAccount, primary: &PrimaryAccount) -> Result<()> {
    if escrow.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(Error::invalid_config(
            "[escrow] region is empty: set it (e.g. region = \"us-east-1\"), or leave it out to \
             use --region, AWS_REGION or the profile's region",
        ));
    }
    check_escrow_role(escrow)?;
    if !valid_account_id(&primary.account_id) {
        return Err(Error::invalid_config(format!(
            "[primary] account_id {:?} is not a 12-digit AWS account id",
            primary.account_id
        )));
    }
    if let Some(id) = &escrow.account_id {
        if !valid_account_id(id) {
            return Err(Error::invalid_config(format!(
                "[escrow] account_id {id:?} is not a 12-digit AWS account id"
            )));
        }
        if *id == primary.account_id && !escrow.allow_same_account {
            return Err(same_account(id));
        }
    }
    if let Some(arn) = &escrow.role_arn {
        let acct = role_account(arn).ok_or_else(|| {
            Error::invalid_config(format!(
                "[escrow] role_arn {arn:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
            ))
        })?;
        if acct == primary.account_id && !escrow.allow_same_account {
            return Err(Error::invalid_config(format!(
                "[escrow] role_arn {arn} is a role in the primary account {acct}: the escrow must \
                 run on its own account's credentials, never on a role the primary controls; use a \
                 role in the escrow account"
            )));
        }
        if let Some(id) = &escrow.account_id
            && acct != id
        {
            return Err(Error::invalid_config(format!(
                "[escrow] role_arn {arn} is in account {acct}, but account_id says {id}: make them agree"
            )));
        }
    }
    if primary.role_arn.is_none() && primary.profile.is_none() {
        return Err(Error::invalid_config(
            "[primary] needs role_arn (the primary's reader role, assumed with the escrow \
             credentials, or with profile's when profile is set too) or profile",
        ));
    }
    if let Some(arn) = &primary.role_arn {
        let acct = role_account(arn).ok_or_else(|| {
            Error::invalid_config(format!(
                "[primary] role_arn {arn:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
            ))
        })?;
        if acct != primary.account_id {
            return Err(Error::invalid_config(format!(
                "[primary] role_arn {arn} is in account {acct}, not the primary account {}: \
                 use the reader role in the primary",
                primary.account_id
            )));
        }
    }
    Ok(())
}

/// Checks the escrow role's own keys (external id, session name, duration):
/// they need `role_arn`, and stay within AWS's limits.
pub fn check_escrow_role(escrow: &EscrowAccount) -> Result<()> {
    if escrow.role_arn.is_none() {
        let set: Vec<&str> = [
            ("external_id", escrow.external_id.is_some()),
            ("session_name", escrow.session_name.is_some()),
            ("duration_seconds", escrow.duration_seconds.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect();
        if !set.is_empty() {
            return Err(Error::invalid_config(format!(
                "[escrow] {} only apply to assuming [escrow] role_arn, which is not set: set \
                 role_arn or remove them",
                set.join(", ")
            )));
        }
    }
    if let Some(s) = escrow.duration_seconds
        && !ROLE_SESSION_SECONDS.contains(&s)
    {
        return Err(Error::invalid_config(format!(
            "[escrow] duration_seconds is {s}: use {} to {} (15 minutes to 12 hours, and at most \
             the role's maximum session duration)",
            ROLE_SESSION_SECONDS.start(),
            ROLE_SESSION_SECONDS.end()
        )));
    }
    if let Some(name) = &escrow.session_name {
        let ok = (2..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
        if !ok {
            return Err(Error::invalid_config(format!(
                "[escrow] session_name {name:?} is not a role session name: use 2 to 64 letters, \
                 digits or _+=,.@-"
            )));
        }
    }
    if escrow.external_id.as_deref().is_some_and(|x| x.len() < 2 || x.len() > 1224) {
        return Err(Error::invalid_config(
            "[escrow] external_id must be 2 to 1224 characters long",
        ));
    }
    Ok(())
}

fn same_account(id: &str) -> Error {
    Error::invalid_config(format!(
        "escrow and primary are the same account {id}: an escrow in the account it protects is \
         no escrow (one stolen login reaches both); use a separate escrow account, or set \
         allow_same_account = true in [escrow] for a lab"
    ))
}

/// The SDK retry configuration of every client built from a session: the
/// shared [`RetryPolicy`] (its attempts, first backoff cap and largest
/// backoff) in the SDK's standard mode, which retries throttling and
/// transient faults (5xx, timeouts, broken connections) with exponential
/// backoff and full jitter.
///
/// One budget, not stacked: control-plane calls (STS, bucket and table
/// checks, KMS, Describe*, manifests, leases) retry inside the SDK with it;
/// data-plane calls turn the SDK's retries off per operation and are
/// retried by the executor with the same policy.
pub fn retry_config(policy: &RetryPolicy) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(policy.max_attempts.max(1))
        .with_initial_backoff(policy.initial_backoff)
        .with_max_backoff(policy.max_backoff)
}

/// Builds [`Sessions`] from account configuration.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    base: Option<SdkConfig>,
    retry: RetryPolicy,
}

/// Where one side's credentials come from, to say what was tried when
/// they fail.
#[derive(Debug, Clone)]
enum Source {
    /// The caller's own `SdkConfig` ([`Connector::with_base_config`]).
    Given,
    /// A named profile, and what named it.
    Profile(String, &'static str),
    /// The standard chain; whether `AWS_ACCESS_KEY_ID` is set.
    Chain(bool),
    /// The escrow's credentials (the primary's reader role without a
    /// profile of its own).
    Escrow,
}

/// What one side tried: its credentials' source and the role assumed with
/// them.
#[derive(Debug, Clone)]
struct Tried {
    side: &'static str,
    source: Source,
    role: Option<String>,
}

impl Tried {
    fn escrow(escrow: &EscrowAccount, given: bool) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let source = if given {
            Source::Given
        } else if let Some(p) = &escrow.profile {
            Source::Profile(p.clone(), "[escrow] profile or --profile")
        } else if let Some(p) = env("AWS_PROFILE") {
            Source::Profile(p, "AWS_PROFILE")
        } else {
            Source::Chain(env("AWS_ACCESS_KEY_ID").is_some())
        };
        Tried { side: "escrow", source, role: escrow.role_arn.clone() }
    }

    fn primary(primary: &PrimaryAccount) -> Self {
        let source = match &primary.profile {
            Some(p) => Source::Profile(p.clone(), "[primary] profile"),
            None => Source::Escrow,
        };
        Tried { side: "primary", source, role: primary.role_arn.clone() }
    }

    /// One line: what failed (`label`'s STS call), what was tried, how to
    /// fix it.
    fn explain(&self, label: &str, failure: &CredentialsFailure) -> Error {
        let side = self.side;
        let role = match &self.role {
            Some(r) => format!(", to assume {r}"),
            None => String::new(),
        };
        let from = match &self.source {
            Source::Given => "the SdkConfig given to escrow-sync".to_string(),
            Source::Profile(p, why) => format!("profile {p} (from {why})"),
            Source::Chain(true) => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_string(),
            Source::Chain(false) => "the default chain (AWS_ACCESS_KEY_ID is not set; the \
                                     default profile, web identity, container and instance \
                                     roles gave none)"
                .to_string(),
            Source::Escrow => "the escrow's credentials".to_string(),
        };
        let fix = match &self.source {
            Source::Given => "give escrow-sync an SdkConfig with valid credentials".to_string(),
            Source::Profile(p, _) => format!(
                "run `aws sso login --profile {p}` if it uses SSO, else check its keys in \
                 ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE); or name another profile \
                 with --profile or AWS_PROFILE"
            ),
            Source::Chain(_) => "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
                                 AWS_SESSION_TOKEN for temporary keys), or name a profile with \
                                 AWS_PROFILE or --profile (after `aws sso login --profile \
                                 NAME` if it uses SSO)"
                .to_string(),
            Source::Escrow => "set [primary] profile to a profile whose credentials may assume \
                               the reader role (as the AWS CLI's source_profile)"
                .to_string(),
        };
        // The SDK's own explanation can span lines: one line here.
        let one_line = |why: &str| why.split_whitespace().collect::<Vec<_>>().join(" ");
        let denied = |message: String| {
            Error::new(ErrorKind::AccessDenied, "sts:GetCallerIdentity", label, message)
        };
        match failure {
            CredentialsFailure::Missing(why) => Error::invalid_config(format!(
                "no {side} credentials from {from}{role} ({}): {fix}",
                one_line(why)
            )),
            CredentialsFailure::Expired(why) => denied(format!(
                "the {side} credentials from {from} have expired{role} ({}): {fix}",
                one_line(why)
            )),
            CredentialsFailure::Rejected(code) => denied(format!(
                "STS does not accept the {side} credentials from {from}{role} ({code}): {fix}"
            )),
        }
    }
}

/// The account id of `config`'s credentials (STS GetCallerIdentity); a
/// credentials failure is explained by `tried`.
async fn caller_identity(config: &SdkConfig, label: &str, tried: Option<&Tried>) -> Result<String> {
    match aws_sdk_sts::Client::new(config).get_caller_identity().send().await {
        Ok(out) => Ok(out.account().unwrap_or_default().to_string()),
        Err(e) => Err(match (tried, credentials_failure(&e)) {
            (Some(tried), Some(failure)) => tried.explain(label, &failure),
            _ => sdk_error(e, "sts:GetCallerIdentity", label.to_string()),
        }),
    }
}

fn no_region(escrow: &EscrowAccount) -> Error {
    let profile = match &escrow.profile {
        Some(p) => format!("profile {p}"),
        None => "the profile".to_string(),
    };
    Error::invalid_config(format!(
        "no region for the escrow account: set region in [escrow], pass --region, or set \
         AWS_REGION (or region in {profile} of ~/.aws/config)"
    ))
}

impl Connector {
    /// Loads the escrow base configuration from the environment (credential
    /// chain or profile, region, `AWS_ENDPOINT_URL`), with the default
    /// [`RetryPolicy`] for every client.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `base` as the escrow base configuration instead of loading one
    /// (embedders, tests). A `role_arn` in [`EscrowAccount`] is still
    /// assumed. The base keeps its own retry configuration (see
    /// [`retry_config`] to give it the shared one).
    pub fn with_base_config(mut self, base: SdkConfig) -> Self {
        self.base = Some(base);
        self
    }

    /// The retry policy of every configuration this connector loads
    /// (default: [`RetryPolicy::default`]).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    async fn escrow_base(&self, escrow: &EscrowAccount) -> Result<SdkConfig> {
        let conf = if let Some(base) = &self.base {
            let mut b = base.to_builder();
            if let Some(region) = &escrow.region {
                b.set_region(Some(Region::new(region.clone())));
            }
            let conf = b.build();
            match &escrow.endpoint_url {
                Some(url) => explicit_endpoint(conf, url),
                None => conf,
            }
        } else {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .retry_config(retry_config(&self.retry));
            if let Some(region) = &escrow.region {
                loader = loader.region(Region::new(region.clone()));
            }
            if let Some(p) = &escrow.profile {
                loader = loader.profile_name(p);
            }
            if let Some(url) = &escrow.endpoint_url {
                loader = loader.endpoint_url(url);
            }
            let conf = loader.load().await;
            let conf = match &escrow.endpoint_url {
                Some(url) => explicit_endpoint(conf, url),
                None => conf,
            };
            match &escrow.profile {
                Some(p) => self.profile_only(conf, p),
                None => conf,
            }
        };
        if conf.region().is_none() {
            return Err(no_region(escrow));
        }
        Ok(conf)
    }

    /// The environment's configuration (its endpoint, not the escrow's) in
    /// `region`, with `profile`'s credentials alone when one is named.
    async fn load(&self, region: Option<Region>, profile: Option<&str>) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config(&self.retry))
            .region(region);
        if let Some(p) = profile {
            loader = loader.profile_name(p);
        }
        let conf = loader.load().await;
        match profile {
            Some(p) => self.profile_only(conf, p),
            None => conf,
        }
    }

    /// `conf` (loaded with `profile`) with the profile's credentials alone,
    /// as the AWS CLI's `--profile` (the SDK's chain would take
    /// `AWS_ACCESS_KEY_ID` first, and a named profile would silently not
    /// be used).
    fn profile_only(&self, conf: SdkConfig, profile: &str) -> SdkConfig {
        let provider_config = aws_config::provider_config::ProviderConfig::without_region()
            .with_region(conf.region().cloned())
            .with_retry_config(retry_config(&self.retry));
        let provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
            .configure(&provider_config)
            .profile_name(profile)
            .build();
        conf.into_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
    }

    /// The escrow identity alone (escrow role assumed, account id checked),
    /// for commands that must work without the primary (`verify --offline`,
    /// `audit` when the primary is unreachable).
    pub async fn connect_escrow(&self, escrow: &EscrowAccount) -> Result<Session> {
        check_escrow_role(escrow)?;
        Ok(self.escrow_session(escrow).await?.1)
    }

    async fn escrow_session(&self, escrow: &EscrowAccount) -> Result<(SdkConfig, Session)> {
        let mut escrow_conf = self.escrow_base(escrow).await?;
        let base = escrow.role_arn.as_ref().map(|_| escrow_conf.clone());
        if let Some(arn) = &escrow.role_arn {
            let mut b = AssumeRoleProvider::builder(arn)
                .session_name(escrow.session_name.as_deref().unwrap_or("escrow-sync"))
                .configure(&escrow_conf);
            if let Some(x) = &escrow.external_id {
                b = b.external_id(x);
            }
            if let Some(s) = escrow.duration_seconds {
                b = b.session_length(std::time::Duration::from_secs(s.into()));
            }
            let provider = b.build().await;
            escrow_conf = escrow_conf
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
        }
        let escrow_label = match &escrow.role_arn {
            Some(arn) => format!("escrow identity (role {arn})"),
            None => "escrow identity".to_string(),
        };
        // A side on its own endpoint without a role is an S3-compatible
        // store: it has no STS, so its account id is taken as stated.
        let escrow_session = if escrow.endpoint_url.is_some() && escrow.role_arn.is_none() {
            Session::from_parts(escrow_conf.clone(), escrow.account_id.clone().unwrap_or_default())
        } else {
            let tried = Tried::escrow(escrow, self.base.is_some());
            let id = caller_identity(&escrow_conf, &escrow_label, Some(&tried)).await?;
            Session::from_parts(escrow_conf.clone(), id)
        };
        let escrow_session = match base {
            Some(base) => escrow_session.with_base(base),
            None => escrow_session,
        };
        if let Some(id) = &escrow.account_id
            && escrow_session.account_id() != id
        {
            return Err(Error::invalid_config(format!(
                "[escrow] account_id is {id}, but the escrow credentials belong to account {}: \
                 fix account_id or the credentials",
                escrow_session.account_id()
            )));
        }
        Ok((escrow_conf, escrow_session))
    }

    /// The primary's configuration: its own endpoint (`endpoint_url`, else
    /// the environment's, never the escrow's), its region (else the
    /// escrow's), and credentials that can reach it: the profile's, or the
    /// escrow's; through the reader role when one is set.
    async fn primary_config(
        &self,
        primary: &PrimaryAccount,
        escrow_conf: &SdkConfig,
    ) -> Result<SdkConfig> {
        let region =
            primary.region.clone().map(Region::new).or_else(|| escrow_conf.region().cloned());
        // The environment's endpoint and settings: the caller's base, or
        // what aws-config loads (the escrow's endpoint_url left out).
        let base = match &self.base {
            Some(base) => base.clone(),
            None => self.load(region.clone(), primary.profile.as_deref()).await,
        };
        let credentials = match (&primary.profile, &self.base) {
            (Some(p), Some(_)) => self.load(region.clone(), Some(p)).await.credentials_provider(),
            (Some(_), None) => base.credentials_provider(),
            (None, _) => escrow_conf.credentials_provider(),
        };
        let mut b = base.into_builder();
        b.set_region(region.clone());
        b.set_credentials_provider(credentials);
        let conf = match &primary.endpoint_url {
            Some(url) => explicit_endpoint(b.build(), url),
            None => b.build(),
        };
        let Some(arn) = &primary.role_arn else { return Ok(conf) };
        let mut role =
            AssumeRoleProvider::builder(arn).session_name("escrow-sync-reader").configure(&conf);
        if let Some(x) = &primary.external_id {
            role = role.external_id(x);
        }
        let provider = role.build().await;
        Ok(conf
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build())
    }

    /// Resolves both identities: checks the config, assumes the escrow role
    /// (if any), assumes the primary's reader role on the primary's own
    /// endpoint with the escrow credentials (or the primary profile's), or
    /// loads the primary profile, and checks both account ids with STS.
    pub async fn connect(
        &self,
        escrow: &EscrowAccount,
        primary: &PrimaryAccount,
    ) -> Result<Sessions> {
        check_accounts(escrow, primary)?;
        let (escrow_conf, escrow_session) = self.escrow_session(escrow).await?;
        let primary_conf = self.primary_config(primary, &escrow_conf).await?;
        let primary_label = match (&primary.role_arn, &primary.profile) {
            (Some(arn), Some(p)) => {
                format!("primary reader role {arn} (assumed with profile {p})")
            }
            (Some(arn), None) => {
                format!("primary reader role {arn} (assumed with the escrow credentials)")
            }
            (None, Some(p)) => format!("primary profile {p}"),
            (None, None) => "primary".to_string(),
        };
        let primary_session = if primary.endpoint_url.is_some() && primary.role_arn.is_none() {
            Session::from_parts(primary_conf, primary.account_id.clone())
        } else {
            let tried = Tried::primary(primary);
            let id = caller_identity(&primary_conf, &primary_label, Some(&tried)).await?;
            Session::from_parts(primary_conf, id)
        };
        if primary_session.account_id() != primary.account_id {
            return Err(Error::invalid_config(format!(
                "[primary] account_id is {}, but the primary credentials belong to account {}: \
                 fix account_id, role_arn or profile",
                primary.account_id,
                primary_session.account_id()
            )));
        }
        let mut warnings = Vec::new();
        if !escrow_session.account_id().is_empty()
            && escrow_session.account_id() == primary_session.account_id()
        {
            if !escrow.allow_same_account {
                return Err(same_account(escrow_session.account_id()));
            }
            warnings.push(format!(
                "escrow and primary are the same account {} (allow_same_account = true): this is \
                 not an escrow, one stolen login reaches both copies",
                escrow_session.account_id()
            ));
        }
        Ok(Sessions { escrow: escrow_session, primary: primary_session, warnings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct EnvSays;

    impl aws_types::service_config::LoadServiceConfig for EnvSays {
        fn load_config(
            &self,
            key: aws_types::service_config::ServiceConfigKey<'_>,
        ) -> Option<String> {
            match key.profile() {
                "endpoint_url" => Some("http://from-the-environment.test".into()),
                other => Some(format!("env {other}")),
            }
        }
    }

    fn key(name: &str) -> aws_types::service_config::ServiceConfigKey<'_> {
        aws_types::service_config::ServiceConfigKey::builder()
            .service_id("s3")
            .profile(name)
            .env("AWS_X")
            .build()
            .unwrap()
    }

    #[test]
    fn a_sides_endpoint_url_wins_over_the_environments() {
        let conf = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .service_config(EnvSays)
            .build();
        // Without the override, every client would take the environment's
        // endpoint before the config's (the SDK's service config comes first).
        assert_eq!(
            conf.service_config().unwrap().load_config(key("endpoint_url")).as_deref(),
            Some("http://from-the-environment.test")
        );
        let conf = explicit_endpoint(conf, "http://primary.test");
        assert_eq!(conf.endpoint_url(), Some("http://primary.test"));
        let env = conf.service_config().expect("the rest of the environment is kept");
        assert_eq!(env.load_config(key("endpoint_url")), None);
        assert_eq!(env.load_config(key("retry_mode")).as_deref(), Some("env retry_mode"));
    }

    fn primary() -> PrimaryAccount {
        PrimaryAccount::new("111111111111")
            .with_role_arn(Some("arn:aws:iam::111111111111:role/escrow-reader".into()))
    }

    #[test]
    fn role_arns_parse() {
        assert_eq!(role_account("arn:aws:iam::111111111111:role/r"), Some("111111111111"));
        assert_eq!(role_account("arn:aws-us-gov:iam::111111111111:role/a/b"), Some("111111111111"));
        assert_eq!(role_account("arn:aws:iam::11111111111:role/r"), None);
        assert_eq!(role_account("arn:aws:s3:::bucket"), None);
        assert_eq!(role_account("arn:aws:iam::111111111111:user/u"), None);
    }

    #[test]
    fn valid_config_passes() {
        let escrow = EscrowAccount::new("us-east-1")
            .with_role_arn(Some("arn:aws:iam::222222222222:role/escrow-operator".into()))
            .with_account_id(Some("222222222222".into()));
        check_accounts(&escrow, &primary()).unwrap();
    }

    #[test]
    fn same_account_is_refused_unless_allowed() {
        let escrow = EscrowAccount::new("us-east-1").with_account_id(Some("111111111111".into()));
        let err = check_accounts(&escrow, &primary()).unwrap_err();
        assert!(err.to_string().contains("same account 111111111111"), "{err}");
        check_accounts(&escrow.with_allow_same_account(true), &primary()).unwrap();
    }

    #[test]
    fn escrow_role_in_the_primary_is_refused() {
        let escrow = EscrowAccount::new("us-east-1")
            .with_role_arn(Some("arn:aws:iam::111111111111:role/admin".into()));
        let err = check_accounts(&escrow, &primary()).unwrap_err();
        assert!(err.to_string().contains("role in the primary account"), "{err}");
    }

    #[test]
    fn a_primary_profile_with_the_reader_role_is_accepted() {
        let escrow = EscrowAccount::new("us-east-1");
        let both = primary().with_profile(Some("primary-sso".into()));
        check_accounts(&escrow, &both).unwrap();
    }

    #[test]
    fn the_region_may_come_from_the_environment_but_never_be_empty() {
        check_accounts(&EscrowAccount::from_environment(), &primary()).unwrap();
        let err = check_accounts(&EscrowAccount::new(" "), &primary()).unwrap_err();
        assert!(err.to_string().contains("--region"), "{err}");
    }

    #[test]
    fn the_escrow_role_keys_are_checked() {
        let role = || {
            EscrowAccount::new("us-east-1")
                .with_role_arn(Some("arn:aws:iam::222222222222:role/escrow-operator".into()))
        };
        let ok = role()
            .with_external_id(Some("escrow-x".into()))
            .with_session_name(Some("nightly@host".into()))
            .with_duration_seconds(Some(43200));
        check_accounts(&ok, &primary()).unwrap();
        for bad in [899, 43201] {
            let err = check_escrow_role(&role().with_duration_seconds(Some(bad))).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(
                err.to_string().contains(&format!("duration_seconds is {bad}: use 900 to 43200")),
                "{err}"
            );
        }
        let err = check_escrow_role(&role().with_session_name(Some("a b".into()))).unwrap_err();
        assert!(err.to_string().contains("session_name"), "{err}");
        let err =
            check_escrow_role(&EscrowAccount::new("us-east-1").with_external_id(Some("x1".into())))
                .unwrap_err();
        assert!(err.to_string().contains("external_id only apply"), "{err}");
    }

    #[test]
    fn the_retry_config_is_the_shared_policy() {
        let policy = RetryPolicy::default();
        let c = retry_config(&policy);
        assert_eq!(c.mode(), aws_config::retry::RetryMode::Standard);
        assert_eq!(c.max_attempts(), policy.max_attempts);
        assert_eq!(c.initial_backoff(), policy.initial_backoff);
        assert_eq!(c.max_backoff(), policy.max_backoff);
    }

    /// A fake STS on every endpoint: it records each request's host, action
    /// and signing key; AssumeRole gives key `ASIAREADER`, whose identity is
    /// the primary; any other key is the escrow. `expired` answers
    /// GetCallerIdentity with ExpiredToken.
    mod sts {
        use std::sync::{Arc, Mutex};

        use aws_smithy_runtime_api::client::http::{
            HttpConnector, HttpConnectorFuture, SharedHttpClient, SharedHttpConnector,
            http_client_fn,
        };
        use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;

        pub type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

        #[derive(Debug, Clone)]
        struct Fake {
            seen: Seen,
            expired: bool,
        }

        impl HttpConnector for Fake {
            fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
                let host = request.uri().split('/').nth(2).unwrap_or_default().to_string();
                let body = request.body().bytes().map(|b| String::from_utf8_lossy(b).into_owned());
                let body = body.unwrap_or_default();
                let auth = request.headers().get("authorization").unwrap_or_default();
                let key = auth
                    .split("Credential=")
                    .nth(1)
                    .and_then(|c| c.split('/').next())
                    .unwrap_or_default()
                    .to_string();
                let action = if body.contains("Action=AssumeRole") {
                    "AssumeRole"
                } else if body.contains("Action=GetCallerIdentity") {
                    "GetCallerIdentity"
                } else {
                    "other"
                };
                self.seen.lock().unwrap().push((host, action.to_string(), key.clone()));
                let (status, xml) = match action {
                    "AssumeRole" => (
                        200,
                        "<AssumeRoleResponse><AssumeRoleResult><Credentials>\
                         <AccessKeyId>ASIAREADER</AccessKeyId><SecretAccessKey>s</SecretAccessKey>\
                         <SessionToken>t</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
                         </Credentials><AssumedRoleUser><Arn>arn:aws:sts::111111111111:assumed-role/escrow-reader/x</Arn>\
                         <AssumedRoleId>AROA:x</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>\
                         </AssumeRoleResponse>"
                            .to_string(),
                    ),
                    _ if self.expired => (
                        403,
                        "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code>\
                         <Message>The security token included in the request is expired</Message>\
                         </Error></ErrorResponse>"
                            .to_string(),
                    ),
                    _ => {
                        let account =
                            if key == "ASIAREADER" { "111111111111" } else { "222222222222" };
                        (
                            200,
                            format!(
                                "<GetCallerIdentityResponse><GetCallerIdentityResult>\
                                 <Account>{account}</Account><Arn>arn:aws:iam::{account}:user/x</Arn>\
                                 <UserId>x</UserId></GetCallerIdentityResult></GetCallerIdentityResponse>"
                            ),
                        )
                    }
                };
                let response =
                    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(xml));
                HttpConnectorFuture::ready(Ok(response))
            }
        }

        pub fn client(expired: bool) -> (SharedHttpClient, Seen) {
            let seen = Seen::default();
            let s = seen.clone();
            let client = http_client_fn(move |_, _| {
                SharedHttpConnector::new(Fake { seen: s.clone(), expired })
            });
            (client, seen)
        }
    }

    async fn base(client: aws_smithy_runtime_api::client::http::SharedHttpClient) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://aws.test")
            .http_client(client)
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIAESCROW",
                "s",
                None,
                None,
                "test",
            ))
            .retry_config(RetryConfig::disabled())
            .load()
            .await
    }

    #[tokio::test]
    async fn the_primary_assumes_its_role_on_its_own_endpoint_not_the_escrow_store() {
        let (client, seen) = sts::client(false);
        // The escrow: an S3-compatible store (its own endpoint, static keys,
        // no role). The primary: AWS (the environment's endpoint).
        let escrow = EscrowAccount::new("us-east-1")
            .with_endpoint_url(Some("http://store.test".into()))
            .with_account_id(Some("222222222222".into()));
        let sessions = Connector::new()
            .with_base_config(base(client).await)
            .connect(&escrow, &primary().with_external_id(Some("x-id".into())))
            .await
            .unwrap();
        assert_eq!(sessions.primary.account_id(), "111111111111");
        assert_eq!(sessions.primary.sdk_config().endpoint_url(), Some("http://aws.test"));
        assert_eq!(sessions.escrow.sdk_config().endpoint_url(), Some("http://store.test"));
        let seen = seen.lock().unwrap().clone();
        let want = [
            ("aws.test", "AssumeRole", "AKIAESCROW"),
            ("aws.test", "GetCallerIdentity", "ASIAREADER"),
        ];
        let seen: Vec<_> =
            seen.iter().map(|(h, a, k)| (h.as_str(), a.as_str(), k.as_str())).collect();
        assert_eq!(seen, want, "the primary's STS calls, and nothing to the escrow's store");

        // Its own endpoint_url, when set, takes every primary call.
        let (client, seen) = sts::client(false);
        let own = primary().with_endpoint_url(Some("http://primary-sts.test".into()));
        Connector::new().with_base_config(base(client).await).connect(&escrow, &own).await.unwrap();
        assert!(seen.lock().unwrap().iter().all(|(h, _, _)| h == "primary-sts.test"), "{seen:?}");
    }

    #[tokio::test]
    async fn the_escrow_role_is_assumed_with_its_external_id_and_session_name() {
        let (client, _) = sts::client(false);
        let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let r = recorded.clone();
        // Record the AssumeRole bodies through a second wrapper.
        let wrapped = aws_smithy_runtime_api::client::http::http_client_fn(move |settings, rc| {
            use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnector};
            #[derive(Debug)]
            struct Rec(
                aws_smithy_runtime_api::client::http::SharedHttpConnector,
                std::sync::Arc<std::sync::Mutex<Vec<String>>>,
            );
            impl HttpConnector for Rec {
                fn call(
                    &self,
                    request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
                ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
                    let body = request.body().bytes().unwrap_or_default();
                    self.1.lock().unwrap().push(String::from_utf8_lossy(body).into_owned());
                    self.0.call(request)
                }
            }
            aws_smithy_runtime_api::client::http::SharedHttpConnector::new(Rec(
                client.http_connector(settings, rc),
                r.clone(),
            ))
        });
        let escrow = EscrowAccount::new("us-east-1")
            .with_role_arn(Some("arn:aws:iam::222222222222:role/escrow-operator".into()))
            .with_external_id(Some("escrow-ext".into()))
            .with_session_name(Some("nightly".into()))
            .with_duration_seconds(Some(7200));
        Connector::new()
            .with_base_config(base(wrapped).await)
            .connect_escrow(&escrow)
            .await
            .unwrap();
        let bodies = recorded.lock().unwrap().clone();
        let assume = bodies.iter().find(|b| b.contains("Action=AssumeRole")).expect("AssumeRole");
        for part in ["ExternalId=escrow-ext", "RoleSessionName=nightly", "DurationSeconds=7200"] {
            assert!(assume.contains(part), "{part} in {assume}");
        }
    }

    #[tokio::test]
    async fn expired_credentials_are_one_line_that_says_what_to_do() {
        let (client, _) = sts::client(true);
        let err = Connector::new()
            .with_base_config(base(client).await)
            .connect_escrow(&EscrowAccount::new("us-east-1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        assert!(!err.is_retryable());
        let line = err.chain();
        assert!(!line.contains('\n') && !line.contains("{"), "{line}");
        assert!(line.contains("escrow credentials") && line.contains("have expired"), "{line}");
        assert!(line.contains("ExpiredToken"), "{line}");
    }

    #[test]
    fn primary_needs_a_reader_in_the_primary() {
        let escrow = EscrowAccount::new("us-east-1");
        let err = check_accounts(&escrow, &PrimaryAccount::new("111111111111")).unwrap_err();
        assert!(err.to_string().contains("needs role_arn"), "{err}");
        let wrong = PrimaryAccount::new("111111111111")
            .with_role_arn(Some("arn:aws:iam::333333333333:role/r".into()));
        let err = check_accounts(&escrow, &wrong).unwrap_err();
        assert!(err.to_string().contains("not the primary account"), "{err}");
        let bad = PrimaryAccount::new("1234");
        assert!(check_accounts(&escrow, &bad).unwrap_err().to_string().contains("12-digit"));
    }
}
