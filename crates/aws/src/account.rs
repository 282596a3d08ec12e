//! Account configuration and sessions: the escrow identity (credential chain
//! or profile, optionally through a role) and the primary identity (AssumeRole
//! into the primary's reader role, made with the escrow credentials).

use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_types::SdkConfig;
use aws_types::region::Region;

use escrow_sync_core::{Error, Result};

use crate::classify::sdk_error;

/// How to reach the escrow account: the account that runs escrow-sync and
/// owns every copy.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscrowAccount {
    /// The region (required).
    pub region: String,
    /// A named profile; default: the standard credential chain.
    pub profile: Option<String>,
    /// A role in the escrow account assumed first, if given.
    pub role_arn: Option<String>,
    /// The expected account id, checked against STS GetCallerIdentity.
    pub account_id: Option<String>,
    /// An endpoint override (default: `AWS_ENDPOINT_URL` if set). With an
    /// endpoint and no role, the side is taken for an S3-compatible store
    /// without STS: no identity check, `account_id` taken as stated.
    pub endpoint_url: Option<String>,
    /// Allow escrow and primary to be the same account (labs only).
    pub allow_same_account: bool,
}

impl EscrowAccount {
    /// The escrow account in `region`, from the standard credential chain.
    pub fn new(region: impl Into<String>) -> Self {
        EscrowAccount { region: region.into(), ..Default::default() }
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
    /// The reader role, assumed with the escrow credentials.
    pub role_arn: Option<String>,
    /// Instead of `role_arn`: a named profile.
    pub profile: Option<String>,
    /// The external id the reader role's trust policy requires.
    pub external_id: Option<String>,
    /// The region; default: the escrow region.
    pub region: Option<String>,
    /// An endpoint override; default: the escrow's.
    pub endpoint_url: Option<String>,
}

impl PrimaryAccount {
    /// The primary account `account_id`.
    pub fn new(account_id: impl Into<String>) -> Self {
        PrimaryAccount { account_id: account_id.into(), ..Default::default() }
    }
    /// Assumes this reader role with the escrow credentials.
    pub fn with_role_arn(mut self, arn: Option<String>) -> Self {
        self.role_arn = arn;
        self
    }
    /// Uses a named profile instead of a role.
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
}

impl Session {
    /// A session from an SDK configuration whose account id is already known
    /// (embedders and tests; nothing is checked).
    pub fn from_parts(config: SdkConfig, account_id: impl Into<String>) -> Self {
        Session { config, account_id: account_id.into() }
    }

    /// A session from an SDK configuration; the account id is read with STS
    /// GetCallerIdentity.
    pub async fn identify(config: SdkConfig, label: &str) -> Result<Self> {
        let out = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| sdk_error(e, "sts:GetCallerIdentity", label.to_string()))?;
        let account_id = out.account().unwrap_or_default().to_string();
        Ok(Session { config, account_id })
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
    if escrow.region.trim().is_empty() {
        return Err(Error::invalid_config(
            "[escrow] region is empty: set it, e.g. region = \"us-east-1\"",
        ));
    }
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
    match (&primary.role_arn, &primary.profile) {
        (None, None) => {
            return Err(Error::invalid_config(
                "[primary] needs role_arn (the primary's reader role, assumed with the escrow \
                 credentials) or profile",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid_config(
                "[primary] sets both role_arn and profile: keep one (role_arn is assumed with the \
                 escrow credentials; profile is used on its own)",
            ));
        }
        (Some(arn), None) => {
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
        (None, Some(_)) => {}
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

/// Builds [`Sessions`] from account configuration.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    base: Option<SdkConfig>,
}

impl Connector {
    /// Loads the escrow base configuration from the environment (credential
    /// chain or profile, region, `AWS_ENDPOINT_URL`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `base` as the escrow base configuration instead of loading one
    /// (embedders, tests). A `role_arn` in [`EscrowAccount`] is still assumed.
    pub fn with_base_config(mut self, base: SdkConfig) -> Self {
        self.base = Some(base);
        self
    }

    async fn escrow_base(&self, escrow: &EscrowAccount) -> SdkConfig {
        if let Some(base) = &self.base {
            let mut b = base.to_builder();
            b.set_region(Some(Region::new(escrow.region.clone())));
            if let Some(url) = &escrow.endpoint_url {
                b.set_endpoint_url(Some(url.clone()));
            }
            return b.build();
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(escrow.region.clone()));
        if let Some(p) = &escrow.profile {
            loader = loader.profile_name(p);
        }
        if let Some(url) = &escrow.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        loader.load().await
    }

    /// The escrow identity alone (escrow role assumed, account id checked),
    /// for commands that must work without the primary (`verify --offline`,
    /// `audit` when the primary is unreachable).
    pub async fn connect_escrow(&self, escrow: &EscrowAccount) -> Result<Session> {
        Ok(self.escrow_session(escrow).await?.1)
    }

    async fn escrow_session(&self, escrow: &EscrowAccount) -> Result<(SdkConfig, Session)> {
        let mut escrow_conf = self.escrow_base(escrow).await;
        if let Some(arn) = &escrow.role_arn {
            let provider = AssumeRoleProvider::builder(arn)
                .session_name("escrow-sync")
                .configure(&escrow_conf)
                .build()
                .await;
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
            Session::identify(escrow_conf.clone(), &escrow_label).await?
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

    /// Resolves both identities: checks the config, assumes the escrow role
    /// (if any), assumes the primary's reader role with the escrow
    /// credentials (or loads the primary profile), and checks both account
    /// ids with STS.
    pub async fn connect(
        &self,
        escrow: &EscrowAccount,
        primary: &PrimaryAccount,
    ) -> Result<Sessions> {
        check_accounts(escrow, primary)?;
        let (escrow_conf, escrow_session) = self.escrow_session(escrow).await?;

        let region = Region::new(primary.region.clone().unwrap_or_else(|| escrow.region.clone()));
        let primary_conf = match (&primary.role_arn, &primary.profile) {
            (Some(arn), _) => {
                let mut b = AssumeRoleProvider::builder(arn)
                    .session_name("escrow-sync-reader")
                    .configure(&escrow_conf);
                if let Some(x) = &primary.external_id {
                    b = b.external_id(x);
                }
                let provider = b.build().await;
                let mut cb = escrow_conf
                    .to_builder()
                    .credentials_provider(SharedCredentialsProvider::new(provider));
                cb.set_region(Some(region));
                if let Some(url) = &primary.endpoint_url {
                    cb.set_endpoint_url(Some(url.clone()));
                }
                cb.build()
            }
            (None, Some(profile)) => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(region)
                    .profile_name(profile);
                if let Some(url) = primary.endpoint_url.as_ref().or(escrow.endpoint_url.as_ref()) {
                    loader = loader.endpoint_url(url);
                }
                loader.load().await
            }
            (None, None) => {
                return Err(Error::invalid_config(
                    "[primary] needs role_arn (the primary's reader role) or profile",
                ));
            }
        };
        let primary_label = match (&primary.role_arn, &primary.profile) {
            (Some(arn), _) => {
                format!("primary reader role {arn} (assumed with the escrow credentials)")
            }
            (None, Some(p)) => format!("primary profile {p}"),
            (None, None) => "primary".to_string(),
        };
        let primary_session = if primary.endpoint_url.is_some() && primary.role_arn.is_none() {
            Session::from_parts(primary_conf, primary.account_id.clone())
        } else {
            Session::identify(primary_conf, &primary_label).await?
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
