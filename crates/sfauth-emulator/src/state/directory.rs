//! The directory: building the state from a configuration, adding and finding orgs, users and
//! connected apps, and the URLs and checks that follow from them.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{App, Counters, Org, State, User};
use crate::crypto;
use crate::format::OAuthError;
use crate::ids;
use crate::model::{AppConfig, EmulatorConfig, UserConfig};

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
            if org.inactive {
                state.set_org_inactive(&org_id, true)?;
            }
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
        self.orgs.push(Org {
            id: id.clone(),
            name: name.to_owned(),
            instance_url,
            inactive: false,
        });
        Ok(id)
    }

    pub(crate) fn set_org_inactive(&mut self, org_id: &str, inactive: bool) -> crate::Result<()> {
        self.org_mut(org_id)?.inactive = inactive;
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

    /// The instance URL of an org.
    pub(crate) fn instance_url(&self, org_id: &str) -> String {
        self.org(org_id)
            .and_then(|o| o.instance_url.clone())
            .unwrap_or_else(|| self.base_url.clone())
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
