//! The directory: building the state from a configuration, adding and finding orgs, users and
//! connected apps, and the URLs and checks that follow from them.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{App, Counters, Org, State, User};
use crate::crypto;
use crate::format::OAuthError;
use crate::ids;
use crate::model::{AppConfig, EmulatorConfig, OrgConfig, UserConfig};

/// A host name as a `Host` header names it: lowercase, without port or trailing dot; `None`
/// when it is not a host name.
fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    valid.then_some(host)
}

fn bad_host(host: &str) -> crate::Error {
    crate::Error::InvalidConfig(format!("{host:?} is not a host name"))
}

impl State {
    /// Builds the state from a configuration.
    pub(crate) fn new(config: &EmulatorConfig, base_url: String) -> crate::Result<Self> {
        let seed = config.seed.unwrap_or_else(rand::random);
        let mut state = Self {
            settings: config.settings.clone(),
            orgs: Vec::new(),
            users: Vec::new(),
            apps: Vec::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            families: BTreeMap::new(),
            next_family: 1,
            codes: HashMap::new(),
            devices: Vec::new(),
            tickets: HashMap::new(),
            in_flight: HashSet::new(),
            logins: HashMap::new(),
            frontdoor: HashMap::new(),
            counters: Counters::default(),
            faults: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            base_url,
        };
        let orgs = if config.orgs.is_empty() {
            EmulatorConfig::seeded().orgs
        } else {
            config.orgs.clone()
        };
        for org in orgs {
            let org_id = state.add_org(org.id.clone(), &org.name, org.instance_url.clone())?;
            state.configure_org(&org_id, &org)?;
            for user in org.users {
                state.add_user(&org_id, user)?;
            }
            for app in org.apps {
                state.add_app(&org_id, app)?;
            }
        }
        Ok(state)
    }

    /// Adds an org and returns its id.
    pub(crate) fn add_org(
        &mut self,
        id: Option<String>,
        name: &str,
        instance_url: Option<String>,
    ) -> crate::Result<String> {
        let id = match id {
            Some(id) if ids::is_valid_18(&id) && id.starts_with(ids::ORG_PREFIX) => id,
            Some(id) => {
                return Err(crate::Error::InvalidConfig(format!(
                    "org id {id} is not an 18-character 00D id"
                )));
            }
            None => ids::new_id(ids::ORG_PREFIX, &mut self.rng),
        };
        if self.orgs.iter().any(|o| o.id == id) {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate org id {id}"
            )));
        }
        let defaults = OrgConfig::default();
        self.orgs.push(Org {
            id: id.clone(),
            name: name.to_owned(),
            instance_url,
            inactive: defaults.inactive,
            block_password: defaults.block_username_password_flow,
            login_rate_limit: defaults.login_rate_limit_per_hour,
            soap_login: defaults.soap_login_enabled,
            sandbox: defaults.sandbox,
            my_domain: None,
            previous_my_domains: Vec::new(),
            redirect_previous: defaults.redirect_previous_my_domain,
        });
        Ok(id)
    }

    /// Applies an org's settings from its configuration (everything but its id, name, users
    /// and apps).
    pub(crate) fn configure_org(&mut self, org_id: &str, config: &OrgConfig) -> crate::Result<()> {
        let my_domain = config
            .my_domain
            .as_deref()
            .map(|h| normalize_host(h).ok_or_else(|| bad_host(h)))
            .transpose()?;
        if let Some(host) = &my_domain
            && self
                .orgs
                .iter()
                .any(|o| o.id != org_id && o.my_domain.as_ref() == Some(host))
        {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate my_domain {host}"
            )));
        }
        let org = self.org_mut(org_id)?;
        org.inactive = config.inactive;
        org.block_password = config.block_username_password_flow;
        org.login_rate_limit = config.login_rate_limit_per_hour;
        org.soap_login = config.soap_login_enabled;
        org.sandbox = config.sandbox;
        org.my_domain = my_domain;
        org.redirect_previous = config.redirect_previous_my_domain;
        Ok(())
    }

    /// A My Domain change: the org's login host and `instance_url` move to `host`; the old host
    /// is kept as a previous one (redirected or refused, per the org's setting). An explicit
    /// `instance_url` is dropped, so the new one follows the new host.
    pub(crate) fn change_my_domain(&mut self, org_id: &str, host: &str) -> crate::Result<()> {
        let host = normalize_host(host).ok_or_else(|| bad_host(host))?;
        if self
            .orgs
            .iter()
            .any(|o| o.my_domain.as_ref() == Some(&host) || o.previous_my_domains.contains(&host))
        {
            return Err(crate::Error::InvalidConfig(format!(
                "my domain {host} is already taken"
            )));
        }
        let org = self.org_mut(org_id)?;
        if let Some(old) = org.my_domain.replace(host) {
            org.previous_my_domains.push(old);
        }
        org.instance_url = None;
        Ok(())
    }

    /// An org's settings as an [`OrgConfig`] (without its users and apps).
    pub(crate) fn org_config(&self, org_id: &str) -> crate::Result<OrgConfig> {
        let org = self
            .org(org_id)
            .ok_or_else(|| crate::Error::not_found("org", org_id))?;
        Ok(OrgConfig {
            id: Some(org.id.clone()),
            name: org.name.clone(),
            instance_url: org.instance_url.clone(),
            inactive: org.inactive,
            block_username_password_flow: org.block_password,
            login_rate_limit_per_hour: org.login_rate_limit,
            soap_login_enabled: org.soap_login,
            sandbox: org.sandbox,
            my_domain: org.my_domain.clone(),
            redirect_previous_my_domain: org.redirect_previous,
            users: Vec::new(),
            apps: Vec::new(),
        })
    }

    /// Changes an org's settings through its [`OrgConfig`]; its id, users and apps cannot be
    /// changed this way. Nothing changes when the result is invalid.
    pub(crate) fn update_org(
        &mut self,
        org_id: &str,
        f: impl FnOnce(&mut OrgConfig),
    ) -> crate::Result<()> {
        let mut config = self.org_config(org_id)?;
        f(&mut config);
        if config.id.as_deref() != Some(org_id) {
            return Err(crate::Error::InvalidConfig(
                "an org's id cannot be changed (a sandbox refresh makes a new one)".to_owned(),
            ));
        }
        if !config.users.is_empty() || !config.apps.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "users and apps are added one by one, not through the org's settings".to_owned(),
            ));
        }
        self.configure_org(org_id, &config)?;
        let org = self.org_mut(org_id)?;
        org.name = config.name;
        org.instance_url = config.instance_url;
        Ok(())
    }

    /// Changes a connected app's configuration; its client id cannot be changed. Nothing
    /// changes when the result is invalid (a certificate that does not parse).
    pub(crate) fn update_app(
        &mut self,
        client_id: &str,
        f: impl FnOnce(&mut AppConfig),
    ) -> crate::Result<()> {
        let app = self.app_mut(client_id)?;
        let mut config = app.config.clone();
        f(&mut config);
        if config.client_id != client_id {
            return Err(crate::Error::InvalidConfig(
                "a connected app's client_id cannot be changed".to_owned(),
            ));
        }
        let key = config
            .certificate
            .as_deref()
            .map(crypto::public_key_from_pem)
            .transpose()
            .map_err(crate::Error::InvalidConfig)?;
        app.config = config;
        app.key = key;
        Ok(())
    }

    /// Stages a new consumer secret: until it is applied, the current and the new secret both
    /// authenticate.
    pub(crate) fn stage_client_secret(
        &mut self,
        client_id: &str,
        secret: &str,
    ) -> crate::Result<()> {
        if secret.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "a staged consumer secret cannot be empty".to_owned(),
            ));
        }
        self.app_mut(client_id)?.config.staged_client_secret = Some(secret.to_owned());
        Ok(())
    }

    /// Applies the staged consumer secret: it becomes the only one that authenticates.
    pub(crate) fn apply_staged_client_secret(&mut self, client_id: &str) -> crate::Result<()> {
        let app = self.app_mut(client_id)?;
        let staged = app.config.staged_client_secret.take().ok_or_else(|| {
            crate::Error::InvalidConfig(format!(
                "connected app {client_id} has no staged consumer secret"
            ))
        })?;
        app.config.client_secret = staged;
        Ok(())
    }

    /// The org whose previous My Domain host is `host`, if any.
    pub(crate) fn org_by_previous_host(&self, host: &str) -> Option<&Org> {
        self.orgs
            .iter()
            .find(|o| o.previous_my_domains.iter().any(|h| h == host))
    }

    /// A sandbox refresh: the org is replaced by a copy with a new org id and new user ids.
    /// Every token, code and device grant of the old org dies for good. Returns the new id.
    pub(crate) fn refresh_sandbox(&mut self, org_id: &str) -> crate::Result<String> {
        self.org(org_id)
            .ok_or_else(|| crate::Error::not_found("org", org_id))?;
        let old_users: Vec<String> = self
            .users
            .iter()
            .filter(|u| u.org_id == org_id)
            .map(|u| u.id.clone())
            .collect();
        self.revoke_where(|_, u| old_users.iter().any(|o| o == u));
        self.codes.retain(|_, c| !old_users.contains(&c.user_id));
        self.tickets.retain(|_, (u, _)| !old_users.contains(u));
        self.devices.retain(|d| match &d.status {
            super::DeviceStatus::Approved(u) => !old_users.contains(u),
            _ => true,
        });
        for user in &old_users {
            self.logins.remove(user);
        }
        let mut new_id = ids::new_id(ids::ORG_PREFIX, &mut self.rng);
        while self.orgs.iter().any(|o| o.id == new_id) {
            new_id = ids::new_id(ids::ORG_PREFIX, &mut self.rng);
        }
        let mut renames = Vec::with_capacity(old_users.len());
        for _ in &old_users {
            let mut id = ids::new_id(ids::USER_PREFIX, &mut self.rng);
            while self.users.iter().any(|u| u.id == id) || renames.contains(&id) {
                id = ids::new_id(ids::USER_PREFIX, &mut self.rng);
            }
            renames.push(id);
        }
        for user in self.users.iter_mut().filter(|u| u.org_id == org_id) {
            if let Some(pos) = old_users.iter().position(|o| *o == user.id)
                && let Some(id) = renames.get(pos)
            {
                user.id = id.clone();
                user.config.id = Some(id.clone());
            }
            user.org_id = new_id.clone();
        }
        for app in self.apps.iter_mut().filter(|a| a.org_id == org_id) {
            app.org_id = new_id.clone();
        }
        self.org_mut(org_id)?.id = new_id.clone();
        Ok(new_id)
    }

    /// Counts a login of `user_id` against its org's hourly limit, or refuses it.
    pub(crate) fn count_login(&mut self, user_id: &str, now: i64) -> Result<(), OAuthError> {
        const HOUR_MS: i64 = 60 * 60 * 1000;
        let limit = self
            .user(user_id)
            .and_then(|u| self.org(&u.org_id))
            .and_then(|o| o.login_rate_limit);
        let Some(limit) = limit else {
            return Ok(());
        };
        let error = OAuthError::configured(&self.settings.login_rate_error);
        let times = self.logins.entry(user_id.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= HOUR_MS)
        {
            times.pop_front();
        }
        if times.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(error);
        }
        times.push_back(now);
        Ok(())
    }

    /// Adds a user and returns its id.
    pub(crate) fn add_user(&mut self, org_id: &str, mut user: UserConfig) -> crate::Result<String> {
        if !self.orgs.iter().any(|o| o.id == org_id) {
            return Err(crate::Error::not_found("org", org_id));
        }
        if user.username.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "a user needs a username".to_owned(),
            ));
        }
        if self.user_by_name(&user.username).is_some() {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate username {}",
                user.username
            )));
        }
        let id = match user.id.take() {
            Some(id) if ids::is_valid_18(&id) && id.starts_with(ids::USER_PREFIX) => id,
            Some(id) => {
                return Err(crate::Error::InvalidConfig(format!(
                    "user id {id} is not an 18-character 005 id"
                )));
            }
            None => ids::new_id(ids::USER_PREFIX, &mut self.rng),
        };
        user.id = Some(id.clone());
        self.users.push(User {
            id: id.clone(),
            org_id: org_id.to_owned(),
            config: user,
        });
        Ok(id)
    }

    /// Adds a connected app.
    pub(crate) fn add_app(&mut self, org_id: &str, config: AppConfig) -> crate::Result<()> {
        if !self.orgs.iter().any(|o| o.id == org_id) {
            return Err(crate::Error::not_found("org", org_id));
        }
        if config.client_id.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "a connected app needs a client_id".to_owned(),
            ));
        }
        if self.app(&config.client_id).is_some() {
            return Err(crate::Error::InvalidConfig(format!(
                "duplicate client_id {}",
                config.client_id
            )));
        }
        let key = config
            .certificate
            .as_deref()
            .map(crypto::public_key_from_pem)
            .transpose()
            .map_err(|e| crate::Error::InvalidConfig(format!("app {}: {e}", config.name)))?;
        self.apps.push(App {
            org_id: org_id.to_owned(),
            config,
            blocked: false,
            key,
        });
        Ok(())
    }

    pub(crate) fn app(&self, client_id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.config.client_id == client_id)
    }

    pub(crate) fn app_mut(&mut self, client_id: &str) -> crate::Result<&mut App> {
        self.apps
            .iter_mut()
            .find(|a| a.config.client_id == client_id)
            .ok_or_else(|| crate::Error::not_found("connected app", client_id))
    }

    /// Usernames are case-insensitive at Salesforce.
    pub(crate) fn user_by_name(&self, username: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.config.username.eq_ignore_ascii_case(username))
    }

    pub(crate) fn user_by_name_mut(&mut self, username: &str) -> crate::Result<&mut User> {
        self.users
            .iter_mut()
            .find(|u| u.config.username.eq_ignore_ascii_case(username))
            .ok_or_else(|| crate::Error::not_found("user", username))
    }

    pub(crate) fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub(crate) fn org(&self, id: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == id)
    }

    pub(crate) fn org_mut(&mut self, id: &str) -> crate::Result<&mut Org> {
        self.orgs
            .iter_mut()
            .find(|o| o.id == id)
            .ok_or_else(|| crate::Error::not_found("org", id))
    }

    /// The instance URL of an org: as set, else its My Domain on the emulator's scheme and
    /// port, else the emulator's base URL.
    pub(crate) fn instance_url(&self, org_id: &str) -> String {
        let Some(org) = self.org(org_id) else {
            return self.base_url.clone();
        };
        if let Some(url) = &org.instance_url {
            return url.clone();
        }
        org.my_domain
            .as_deref()
            .and_then(|host| self.url_on_host(host))
            .unwrap_or_else(|| self.base_url.clone())
    }

    /// The emulator's base URL with its host replaced by `host`.
    pub(crate) fn url_on_host(&self, host: &str) -> Option<String> {
        let mut url = url::Url::parse(&self.base_url).ok()?;
        url.set_host(Some(host)).ok()?;
        Some(url.as_str().trim_end_matches('/').to_owned())
    }

    /// The identity URL of a user, on the login host (the emulator's base URL).
    pub(crate) fn identity_url(&self, user: &User) -> String {
        format!("{}/id/{}/{}", self.base_url, user.org_id, user.id)
    }

    /// Checks that the user may receive tokens at all.
    pub(crate) fn check_user(&self, user_id: &str) -> Result<(), OAuthError> {
        let user = self
            .user(user_id)
            .ok_or_else(|| OAuthError::invalid_grant("authentication failure"))?;
        if self.org(&user.org_id).is_some_and(|o| o.inactive) {
            return Err(OAuthError::inactive_org());
        }
        if !user.is_active() {
            return Err(OAuthError::inactive_user());
        }
        Ok(())
    }
}
