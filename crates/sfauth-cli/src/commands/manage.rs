//! `sfauth token`, `refresh`, `revoke`, `introspect` and `whoami`: commands on stored logins.

use std::io::IsTerminal as _;
use std::time::Duration;

use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sfauth::oauth::SecretValue;
use sfauth::oauth::flows::{RevokeMethod, TokenTypeHint};

use crate::cli::{AliasArgs, AliasJsonArgs, LogoutArgs, RefreshArgs, TokenArgs};
use crate::error::{CliError, Exit, Result};
use crate::session::{self, Context};
use crate::store::{Access, Resolved, Store};

/// A stored login, the manager serving it, and a valid access token for it.
struct SignedIn {
    resolved: crate::store::Resolved,
    transport: std::sync::Arc<dyn sfauth::oauth::http::HttpTransport>,
    manager: sfauth::TokenManager,
    guard: sfauth::AccessTokenGuard<'static>,
}

impl SignedIn {
    /// Opens the store, resolves `alias` and gets a valid access token (refreshed if needed).
    async fn open(alias: &str, ctx: &Context) -> Result<Self> {
        let store = ctx.open_store(Access::Read).await?;
        let resolved = store.resolve(alias).await?;
        let transport = ctx.transport();
        let manager = session::manager_for(&store, &resolved, &ctx.file, transport.clone()).await?;
        let guard = manager
            .access_token(&resolved.key)
            .await
            .map_err(|e| session::manager_error(&e, &resolved))?;
        Ok(Self {
            resolved,
            transport,
            manager,
            guard,
        })
    }

    /// Calls userinfo with the token; when Salesforce no longer accepts it, refreshes once
    /// (through the manager, so the refresh is shared and saved) and calls again. `doing` and
    /// `fix` word the error.
    async fn userinfo(&mut self, doing: &str, fix: &str) -> Result<sfauth::oauth::flows::UserInfo> {
        let client = self.manager.client();
        match client
            .userinfo(self.transport.as_ref(), self.guard.access_token())
            .await
        {
            Ok(info) => Ok(info),
            Err(e) if e.kind() == sfauth::oauth::ErrorKind::SessionExpired => {
                let stale = self.guard.access_token().clone();
                self.guard = self
                    .manager
                    .session_expired(&self.resolved.key, &stale)
                    .await
                    .map_err(|e| session::manager_error(&e, &self.resolved))?;
                client
                    .userinfo(self.transport.as_ref(), self.guard.access_token())
                    .await
                    .map_err(|e| self.userinfo_error(&e, doing, fix))
            }
            Err(e) => Err(self.userinfo_error(&e, doing, fix)),
        }
    }

    /// A userinfo failure other than a dead session. A 403 refuses this token for good (the
    /// scopes are fixed at login, and a refresh keeps them), so it never says "try again".
    fn userinfo_error(&self, error: &sfauth::oauth::Error, doing: &str, fix: &str) -> CliError {
        let status = match error {
            sfauth::oauth::Error::Status { status, .. } => Some(*status),
            other => other.server().map(|server| server.status()),
        };
        if status != Some(403) {
            return CliError::core(error, doing, fix);
        }
        let alias = &self.resolved.alias;
        CliError::other(format!(
            "{doing} was refused: salesforce does not let the access token of alias {alias} read the user's identity ({}): its scopes lack `id` or `openid`; log in again with them, e.g. `sfauth {} --alias {alias} --scopes \"api id refresh_token\"`",
            crate::error::chain(error),
            self.resolved.meta.flow.login_command()
        ))
    }
}

/// `sfauth token`: the access token alone on stdout.
pub(crate) async fn token(args: &TokenArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.alias.given());
    let mut signed = SignedIn::open(&alias, ctx).await?;
    if args.verify {
        signed
            .userinfo("checking the token", "try again without --verify")
            .await?;
    }
    println!("{}", signed.guard.secret());
    Ok(())
}

#[derive(Debug, Serialize)]
struct Outcome {
    alias: String,
    ok: bool,
    exit_code: u8,
    message: Option<String>,
}

/// `sfauth refresh [ALIAS|--all]`.
pub(crate) async fn refresh(args: &RefreshArgs, ctx: &Context) -> Result<()> {
    let store = ctx.open_store(Access::Read).await?;
    // Each alias resolved up front; a failure is that alias's outcome, not the whole run's.
    let aliases: Vec<(String, Result<Resolved>)> = if args.all {
        // Read once: resolving each alias from the store would re-read the alias file, and
        // list the store for each alias without metadata.
        let logins = store.logins().await?;
        // A login that cannot be opened is an outcome too (failed, with the fix), not skipped.
        let mut labels: Vec<String> = logins
            .records
            .iter()
            .map(|record| record.key.label().to_owned())
            .chain(logins.unreadable.iter().cloned())
            .collect();
        labels.sort();
        labels.dedup();
        labels
            .into_iter()
            .map(|alias| {
                let resolved = logins.resolve(&alias);
                (alias, resolved)
            })
            .collect()
    } else {
        let alias = ctx.alias(args.alias.as_deref());
        let resolved = store.resolve(&alias).await;
        vec![(alias, resolved)]
    };
    if aliases.is_empty() {
        println!("No logins to refresh in {}.", store.location);
        return Ok(());
    }
    let transport = ctx.transport();
    let bar = if args.all {
        let bar =
            ProgressBar::with_draw_target(Some(aliases.len() as u64), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} refreshing [{bar:30}] {pos}/{len} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        if std::io::stderr().is_terminal() {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Some(bar)
    } else {
        None
    };
    let store_ref = &store;
    let transport_ref = &transport;
    let bar_ref = bar.as_ref();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(aliases)
        .map(|(alias, resolved)| async move {
            let result = match resolved {
                Ok(resolved) => refresh_one(store_ref, &resolved, ctx, transport_ref.clone()).await,
                Err(error) => Err(error),
            };
            if let Some(bar) = bar_ref {
                bar.set_message(alias.clone());
                bar.inc(1);
            }
            match result {
                Ok(()) => Outcome {
                    alias,
                    ok: true,
                    exit_code: 0,
                    message: None,
                },
                Err(error) => Outcome {
                    alias,
                    ok: false,
                    exit_code: error.exit as u8,
                    message: Some(error.message),
                },
            }
        })
        .buffer_unordered(usize::from(args.concurrency))
        .collect()
        .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut outcomes = outcomes;
    outcomes.sort_by(|a, b| a.alias.cmp(&b.alias));
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let worst = failed
        .iter()
        .map(|o| o.exit_code)
        .max_by_key(|code| match code {
            3 => 3,
            4 => 2,
            1 => 1,
            _ => 0,
        });
    if args.json {
        let text = serde_json::to_string_pretty(&outcomes)
            .map_err(|e| CliError::other(format!("cannot write JSON ({e})")))?;
        println!("{text}");
    } else {
        for outcome in &outcomes {
            match &outcome.message {
                None => println!("refreshed {}", outcome.alias),
                // A single failure is the error line itself.
                Some(message) if outcomes.len() > 1 => {
                    eprintln!("failed {}: {message}", outcome.alias);
                }
                Some(_) => {}
            }
        }
        if outcomes.len() > 1 {
            // Three disjoint counts that add up to the logins: a login that needs a new login
            // is not also counted as failed.
            let reauth = failed.iter().filter(|o| o.exit_code == 3).count();
            println!(
                "{} refreshed, {} failed, {} need a new login",
                outcomes.iter().filter(|o| o.ok).count(),
                failed.len().saturating_sub(reauth),
                reauth
            );
        }
    }
    match (worst, failed.as_slice()) {
        (None, _) => Ok(()),
        (Some(code), [only]) if outcomes.len() == 1 => Err(CliError::new(
            exit_of(code),
            only.message.clone().unwrap_or_default(),
        )),
        (Some(code), _) => Err(CliError::new(
            exit_of(code),
            format!(
                "{} of {} logins could not be refreshed: see the lines above",
                failed.len(),
                outcomes.len()
            ),
        )),
    }
}

fn exit_of(code: u8) -> Exit {
    match code {
        2 => Exit::Usage,
        3 => Exit::Reauth,
        4 => Exit::Transient,
        _ => Exit::Other,
    }
}

async fn refresh_one(
    store: &Store,
    resolved: &Resolved,
    ctx: &Context,
    transport: std::sync::Arc<dyn sfauth::oauth::http::HttpTransport>,
) -> Result<()> {
    let manager = session::manager_for(store, resolved, &ctx.file, transport).await?;
    manager
        .refresh(&resolved.key)
        .await
        .map_err(|e| session::manager_error(&e, resolved))?;
    Ok(())
}

/// The store, the resolved alias and its stored record, read without refreshing anything.
async fn stored_login(
    alias: &str,
    ctx: &Context,
) -> Result<(Store, crate::store::Resolved, sfauth::storage::TokenRecord)> {
    let store = ctx.open_store(Access::Read).await?;
    let resolved = store.resolve(alias).await?;
    let record = store
        .store
        .get(&resolved.key)
        .await
        .map_err(|e| CliError::store(&e, "reading the login", &store.location))?
        .ok_or_else(|| CliError::usage(format!("no login named {alias}: see `sfauth list`")))?;
    Ok((store, resolved, record))
}

/// `sfauth revoke`: revokes the refresh token (which takes its access tokens with it) or the
/// access token, then forgets the login.
pub(crate) async fn revoke(args: &AliasArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.given());
    let (store, resolved, record) = stored_login(&alias, ctx).await?;
    let what = revoke_record(&resolved, &record, ctx)
        .await
        .map_err(|e| CliError::new(e.exit, format!("{}; the login was kept", e.message)))?;
    store
        .store
        .delete(&resolved.key, None)
        .await
        .map_err(|e| CliError::store(&e, "deleting the login", &store.location))?;
    println!(
        "Revoked the {what} of alias {alias} and removed the login from {}",
        store.location
    );
    Ok(())
}

/// Revokes the refresh token of `record` (which takes its access tokens with it), else its
/// access token; an already-dead token counts as revoked. Says which one it was.
async fn revoke_record(
    resolved: &Resolved,
    record: &sfauth::storage::TokenRecord,
    ctx: &Context,
) -> Result<&'static str> {
    let client = session::client_for(resolved, &ctx.file)?;
    let transport = ctx.transport();
    let (token, what): (SecretValue, &str) = match &record.tokens.refresh_token {
        Some(refresh) => (refresh.clone().into(), "refresh token"),
        None => (record.tokens.access_token.clone().into(), "access token"),
    };
    match client
        .revoke(transport.as_ref(), &token, RevokeMethod::Post)
        .await
    {
        Ok(()) => Ok(what),
        // An already-dead token is what revoking wanted.
        Err(e) if e.kind() == sfauth::oauth::ErrorKind::ReauthorizationRequired => Ok(what),
        Err(e) => Err(CliError::core(
            &e,
            &format!("revoking the {what} of alias {}", resolved.alias),
            "try again",
        )),
    }
}

/// `sfauth logout` / `remove`: revokes and deletes every login named ALIAS; with `--force`
/// also one that cannot be opened or revoked, which `status` lists and nothing else can use.
pub(crate) async fn logout(args: &LogoutArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.alias.given());
    let store = ctx.open_store(Access::Read).await?;
    let entries = store.entries_of(&alias).await?;
    if entries.is_empty() {
        return Err(CliError::usage(format!(
            "no login named {alias} in {}: see `sfauth list`",
            store.location
        )));
    }
    // Everything is checked before anything is deleted: without --force, one login that cannot
    // be opened leaves all of them in place.
    if !args.force
        && let Some(Err(error)) = entries
            .iter()
            .map(|entry| entry.record.as_ref())
            .find(Result::is_err)
    {
        return Err(crate::store::unreadable(
            &alias,
            Some(error),
            &store.location,
        ));
    }
    let mut done = Vec::new();
    for entry in entries {
        match &entry.record {
            Ok(record) => {
                let resolved = crate::store::resolved(&alias, record)?;
                match revoke_record(&resolved, record, ctx).await {
                    Ok(what) => done.push(format!("revoked its {what}")),
                    Err(e) if args.force => eprintln!(
                        "warning: {}; removing it anyway (--force): its tokens stay live at salesforce until they expire or are revoked in Setup",
                        e.message
                    ),
                    Err(e) => {
                        return Err(CliError::new(
                            e.exit,
                            format!(
                                "{}; the login was kept (pass --force to remove it without revoking)",
                                e.message
                            ),
                        ));
                    }
                }
            }
            Err(error) => eprintln!(
                "warning: the login {alias} cannot be opened ({}), so its tokens were not revoked: they stay live at salesforce until they expire or are revoked in Setup",
                crate::store::unreadable_reason(error)
            ),
        }
        store
            .store
            .delete(&entry.key, None)
            .await
            .map_err(|e| CliError::store(&e, "deleting the login", &store.location))?;
    }
    done.dedup();
    println!(
        "Removed the login {alias} from {}{}",
        store.location,
        if done.is_empty() {
            String::new()
        } else {
            format!(" ({})", done.join(", "))
        }
    );
    Ok(())
}

/// `sfauth introspect`.
pub(crate) async fn introspect(args: &AliasJsonArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.alias.given());
    let (_store, resolved, record) = stored_login(&alias, ctx).await?;
    let client = session::client_for(&resolved, &ctx.file)?;
    let transport = ctx.transport();
    let token: SecretValue = record.tokens.access_token.clone().into();
    let info = client
        .introspect(transport.as_ref(), &token, Some(TokenTypeHint::AccessToken))
        .await
        .map_err(|e| {
            CliError::core(
                &e,
                &format!("introspecting the token of alias {alias}"),
                "introspection needs the connected app's secret: set SFAUTH_CLIENT_SECRET",
            )
        })?;
    // The server's number: formatted from the seconds, since one past what a `SystemTime` holds
    // is still a date.
    let exp = info.exp.map(super::status::rfc3339_secs);
    if args.json {
        let json = serde_json::json!({
            "alias": alias,
            "active": info.active,
            "scope": info.scope,
            "client_id": info.client_id,
            "username": info.username,
            "sub": info.sub,
            "token_type": info.token_type,
            "exp": info.exp,
            "expires_at": exp,
            "iat": info.iat,
        });
        println!("{json}");
    } else {
        println!("alias:     {alias}");
        println!("active:    {}", info.active);
        for (name, value) in [
            ("username", info.username.clone()),
            ("scope", info.scope.clone()),
            ("client_id", info.client_id.clone()),
            ("expires", exp),
        ] {
            if let Some(value) = value {
                println!("{:<10} {value}", format!("{name}:"));
            }
        }
    }
    Ok(())
}

/// `sfauth whoami`.
pub(crate) async fn whoami(args: &AliasJsonArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.alias.given());
    let mut signed = SignedIn::open(&alias, ctx).await?;
    let info = signed
        .userinfo("asking who is logged in", "try again")
        .await?;
    let SignedIn {
        resolved, guard, ..
    } = signed;
    let instance = guard
        .instance_url()
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    if args.json {
        let json = serde_json::json!({
            "alias": alias,
            "username": info.preferred_username,
            "name": info.name,
            "email": info.email,
            "user_id": resolved.key.user_id().as_str(),
            "org_id": resolved.key.org_id().as_str(),
            "instance_url": instance,
            "login_host": resolved.key.login_host(),
        });
        println!("{json}");
    } else {
        println!("alias:     {alias}");
        println!(
            "username:  {}",
            info.preferred_username.as_deref().unwrap_or("(unknown)")
        );
        if let Some(name) = &info.name {
            println!("name:      {name}");
        }
        if let Some(email) = &info.email {
            println!("email:     {email}");
        }
        println!("user id:   {}", resolved.key.user_id());
        println!("org id:    {}", resolved.key.org_id());
        println!("instance:  {instance}");
    }
    Ok(())
}
