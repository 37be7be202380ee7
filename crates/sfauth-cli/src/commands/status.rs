//! `sfauth status` / `sfauth list`: every login in the store as a table or JSON.
//!
//! Every record in the store is listed, not only this machine's aliases: on a store shared by
//! a fleet (Redis, PostgreSQL) that is every login any process on any machine made. The store
//! is read a page at a time, and the refresh lease of each page's logins is read with a few
//! lookups in flight at once, so that a store with many tenants costs one round trip per page
//! plus a bounded, overlapped one per login rather than a long sequence of waits.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use futures_util::StreamExt as _;
use serde::Serialize;
use sfauth::oauth::ExpirySource;
use sfauth::oauth::TokenKey;
use sfauth::storage::{Lease, ListEntry, ListQuery, RecordStatus, TokenRecord};
use sfauth::{Idle, PARTNER_IDLE_LIMIT};

use crate::cli::ListArgs;
use crate::error::{CliError, Result};
use crate::session::Context;
use crate::store::{Access, Store, stored_meta, unreadable_reason};

/// How many lease lookups run at once: enough to hide a network round trip, few enough not to
/// crowd a shared server's connection pool.
const LEASE_LOOKUPS: usize = 16;

/// One row of the table, also the JSON object.
#[derive(Debug, Serialize)]
struct Row {
    alias: String,
    org_id: String,
    user_id: String,
    username: Option<String>,
    /// `None` for a login that cannot be opened.
    instance_url: Option<String>,
    login_host: String,
    client_id: String,
    flow: Option<String>,
    last_refresh: Option<String>,
    expires_at: Option<String>,
    expiry_source: Option<String>,
    /// `None` for a login that cannot be opened.
    has_refresh_token: Option<bool>,
    status: String,
    reason: Option<String>,
    /// The refresh lease held right now, if any: who is refreshing this login.
    lease: Option<LeaseRow>,
    /// How long the refresh token has gone unused against the 30-day idle limit; `None` for a
    /// login without one (renewed by its own flow, it does not idle out) or that cannot be
    /// opened.
    idle: Option<IdleRow>,
}

/// A refresh token's idle standing as `status` shows it.
#[derive(Debug, Serialize)]
struct IdleRow {
    /// `idle 27 days, refresh before 30`, or `idle 31 days, past the 30-day idle limit`.
    text: String,
    days: u64,
    limit_days: u64,
    /// When Salesforce expires the refresh token unless it is used before.
    refresh_before: String,
    past_limit: bool,
}

/// A refresh lease as `status` shows it.
#[derive(Debug, Serialize)]
struct LeaseRow {
    holder: String,
    fence: u64,
    expires_at: String,
}

/// A row and the times the table shows relative to now.
struct Line {
    row: Row,
    last: Option<SystemTime>,
    expires: Option<SystemTime>,
    lease_expires: Option<SystemTime>,
}

pub(crate) async fn run(args: &ListArgs, ctx: &Context) -> Result<()> {
    let store = ctx.open_store(Access::Read).await?;
    let now = SystemTime::now();
    let timeout = ctx.file.session_timeout();
    let mut lines = Vec::new();
    let mut query = ListQuery::new().limit(ListQuery::MAX_LIMIT);
    loop {
        // Entries rather than records: a login that cannot be opened (sealed with another key,
        // damaged) is a row of its own instead of failing the whole listing.
        let page = store
            .store
            .list_entries(&query)
            .await
            .map_err(|e| CliError::store(&e, "listing logins", &store.location))?;
        let with_leases: Vec<(ListEntry, Option<Lease>)> = futures_util::stream::iter(page.entries)
            .map(|entry| lease_of(&store, entry))
            .buffered(LEASE_LOOKUPS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        lines.extend(
            with_leases
                .into_iter()
                .map(|(entry, lease)| match &entry.record {
                    Ok(record) => line(record, lease, timeout, now),
                    Err(error) => unreadable_line(&entry.key, error, lease),
                }),
        );
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    // Stable: logins sharing an alias (on different machines, orgs or apps) stay in key order.
    lines.sort_by(|a, b| a.row.alias.cmp(&b.row.alias));
    for line in lines.iter().filter(|line| line.row.status == UNREADABLE) {
        eprintln!(
            "warning: the login {} cannot be opened ({}): {}",
            line.row.alias,
            line.row.reason.as_deref().unwrap_or("unreadable"),
            unreadable_fix(&line.row.alias)
        );
    }
    if args.json {
        let json: Vec<&Row> = lines.iter().map(|line| &line.row).collect();
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| CliError::other(format!("cannot write JSON ({e})")))?;
        println!("{text}");
        return Ok(());
    }
    if lines.is_empty() {
        println!(
            "No logins in {}. Log in with `sfauth login web --alias NAME`, or try `sfauth demo`.",
            store.location
        );
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "ALIAS",
            "ORG",
            "USER",
            "INSTANCE",
            "LAST REFRESH",
            "EXPIRES (EST.)",
            "STATUS",
            "IDLE",
            "REFRESH LEASE",
        ]);
    // A terminal that reports no usable size (a fresh pseudo-terminal) would squeeze every
    // column to one character: honour COLUMNS, else do not wrap.
    match std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(columns) if columns >= 40 => {
            table.set_width(columns);
        }
        _ if table.width().is_none_or(|width| width < 40) => {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
        _ => {}
    }
    for line in &lines {
        let row = &line.row;
        let lease = match (&row.lease, line.lease_expires) {
            (Some(lease), Some(until)) => {
                format!("{} (ends {})", lease.holder, relative(until, now))
            }
            (Some(lease), None) => lease.holder.clone(),
            (None, _) => "-".to_owned(),
        };
        table.add_row([
            row.alias.clone(),
            row.org_id.clone(),
            row.username.clone().unwrap_or_else(|| row.user_id.clone()),
            row.instance_url.clone().unwrap_or_else(|| "-".to_owned()),
            line.last
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "-".to_owned()),
            line.expires
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "unknown".to_owned()),
            row.status.replace('_', " "),
            row.idle
                .as_ref()
                .map_or_else(|| "-".to_owned(), |idle| idle.text.clone()),
            lease,
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `entry` with the refresh lease on its key right now.
async fn lease_of(store: &Store, entry: ListEntry) -> Result<(ListEntry, Option<Lease>)> {
    let lease = store
        .store
        .lease(&entry.key)
        .await
        .map_err(|e| CliError::store(&e, "reading refresh leases", &store.location))?;
    Ok((entry, lease))
}

/// The status of a login whose record cannot be opened.
const UNREADABLE: &str = "unreadable";

fn unreadable_fix(alias: &str) -> String {
    format!(
        "set SFAUTH_STORE_KEY to the key it was written with, or remove it with `sfauth logout {alias} --force`"
    )
}

/// The row of a record that cannot be opened: what its key says, and why.
fn unreadable_line(key: &TokenKey, error: &sfauth::storage::Error, lease: Option<Lease>) -> Line {
    let lease_expires = lease.as_ref().map(|lease| lease.expires_at);
    let row = Row {
        alias: key.label().to_owned(),
        org_id: key.org_id().to_string(),
        user_id: key.user_id().to_string(),
        username: None,
        instance_url: None,
        login_host: key.login_host().to_owned(),
        client_id: key.client_id().to_owned(),
        flow: None,
        last_refresh: None,
        expires_at: None,
        expiry_source: None,
        has_refresh_token: None,
        status: UNREADABLE.to_owned(),
        reason: Some(unreadable_reason(error).to_owned()),
        lease: lease.map(|lease| LeaseRow {
            holder: lease.holder,
            fence: lease.fence,
            expires_at: rfc3339(lease.expires_at),
        }),
        idle: None,
    };
    Line {
        row,
        last: None,
        expires: None,
        lease_expires,
    }
}

/// The row of `record`. Its username and flow are the settings `sfauth login` stored with it;
/// a login stored by a program using the library shows what its renewal hint says.
fn line(record: &TokenRecord, lease: Option<Lease>, timeout: Duration, now: SystemTime) -> Line {
    let meta = stored_meta(record);
    let meta = meta.as_ref();
    let (expires, source) = expiry(record, timeout);
    let last = record.last_refreshed_at.unwrap_or(record.issued_at);
    let (status, reason) = match &record.status {
        RecordStatus::ReauthRequired { reason, .. } => {
            ("reauth_required".to_owned(), Some(reason.clone()))
        }
        RecordStatus::Active if expires.is_some_and(|at| at <= now) => {
            let fix = if record.tokens.refresh_token.is_some() {
                "expired"
            } else {
                "expired_no_refresh_token"
            };
            (fix.to_owned(), None)
        }
        RecordStatus::Active => ("active".to_owned(), None),
        #[allow(unreachable_patterns, reason = "RecordStatus may grow")]
        _ => ("unknown".to_owned(), None),
    };
    let username = meta.and_then(|m| m.username.clone()).or_else(|| {
        record
            .renewal
            .as_ref()
            .and_then(|hint| hint.username.clone())
    });
    let lease_expires = lease.as_ref().map(|lease| lease.expires_at);
    let row = Row {
        alias: record.key.label().to_owned(),
        org_id: record.key.org_id().to_string(),
        user_id: record.key.user_id().to_string(),
        username,
        instance_url: Some(
            record
                .tokens
                .instance_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        ),
        login_host: record.key.login_host().to_owned(),
        client_id: record.key.client_id().to_owned(),
        flow: meta.map(|m| {
            m.flow
                .login_command()
                .trim_start_matches("login ")
                .to_owned()
        }),
        last_refresh: Some(rfc3339(last)),
        expires_at: expires.map(rfc3339),
        expiry_source: Some(source.to_owned()),
        has_refresh_token: Some(record.tokens.refresh_token.is_some()),
        status,
        reason,
        lease: lease.map(|lease| LeaseRow {
            holder: lease.holder,
            fence: lease.fence,
            expires_at: rfc3339(lease.expires_at),
        }),
        idle: Idle::of_record(record, now, PARTNER_IDLE_LIMIT).map(|idle| IdleRow {
            text: idle.to_string(),
            days: idle.days_idle(),
            limit_days: idle.limit_days(),
            refresh_before: rfc3339(idle.refresh_before),
            past_limit: idle.is_past_limit(),
        }),
    };
    Line {
        row,
        last: Some(last),
        expires,
        lease_expires,
    }
}

/// When the access token expires and what said so: the expiry stored with the tokens (login
/// and refresh store one, from the token or the session timeout). Records stored without one
/// (by a program using the library, or by an older `sfauth`) fall back to the issue time plus
/// the learned lifetime, else the configured session timeout.
pub(crate) fn expiry(
    record: &TokenRecord,
    timeout: Duration,
) -> (Option<SystemTime>, &'static str) {
    if let Some(at) = record.tokens.expires_at {
        let source = match record.tokens.expiry_source {
            Some(ExpirySource::SessionTimeout) => "session_timeout",
            _ => "token",
        };
        return (Some(at), source);
    }
    let issued = record.tokens.issued_at.unwrap_or(record.issued_at);
    // Stored numbers: a sum past what a `SystemTime` holds is no estimate, never a panic.
    match record.learned_lifetime {
        Some(lifetime) => (issued.checked_add(lifetime), "learned_lifetime"),
        None => (issued.checked_add(timeout), "session_timeout"),
    }
}

/// `in 1h 59m`, `3m ago`.
pub(crate) fn relative(time: SystemTime, now: SystemTime) -> String {
    let (span, future) = match time.duration_since(now) {
        Ok(ahead) => (ahead, true),
        Err(behind) => (behind.duration(), false),
    };
    let secs = span.as_secs();
    let text = if secs < 60 {
        format!("{secs}s")
    } else if secs < 3600 {
        format!("{}m", secs / 60)
    } else if secs < 86_400 {
        format!("{}h {}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// `2026-11-24T10:15:00Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_secs(secs)
}

/// `2026-11-24T10:15:00Z` for `secs` since the Unix epoch, any `u64`: a server's `exp` may be
/// past what a `SystemTime` holds and is still shown as the date it names.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "secs / 86_400 keeps every intermediate below 2^48, far inside i64"
)]
pub(crate) fn rfc3339_secs(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(relative(t + Duration::from_secs(7140), t), "in 1h 59m");
        assert_eq!(relative(t, t + Duration::from_secs(180)), "3m ago");
    }

    #[test]
    fn formats_any_number_of_seconds() {
        assert_eq!(rfc3339_secs(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_secs(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_secs(u64::MAX),
            "584554051223-11-09T07:00:15Z",
            "an exp past SystemTime's range is still its date"
        );
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX >> 1);
        assert_eq!(rfc3339(far), rfc3339_secs(u64::MAX >> 1));
    }

    /// A record without a stored expiry, issued at `issued` with `lifetime` learned.
    fn record(issued: SystemTime, lifetime: Option<Duration>) -> TokenRecord {
        use sfauth::oauth::{AccessToken, IdentityUrl, LoginHost, TokenKey, TokenSet};
        let identity: IdentityUrl =
            "https://login.salesforce.com/id/00D5e000000AbcdEAC/0055e000001XyZaAAK"
                .parse()
                .unwrap();
        let tokens = TokenSet::new(
            AccessToken::new("00D5e000000AbcdEAC!AQ4AQ"),
            "https://acme.my.salesforce.com".parse().unwrap(),
            identity.clone(),
        );
        let key = TokenKey::new(&LoginHost::Production, &identity, "client", "label");
        let mut record = TokenRecord::new(key, tokens, issued);
        record.learned_lifetime = lifetime;
        record
    }

    #[test]
    fn an_expiry_estimate_past_the_end_of_time_is_none_not_a_panic() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            expiry(&record(t, Some(hour)), Duration::MAX),
            (t.checked_add(hour), "learned_lifetime")
        );
        assert_eq!(
            expiry(&record(t, None), hour),
            (t.checked_add(hour), "session_timeout")
        );
        // Numbers no `sfauth` writes, but a store holds whatever was put in it.
        assert_eq!(
            expiry(&record(t, Some(Duration::MAX)), hour),
            (None, "learned_lifetime")
        );
        assert_eq!(
            expiry(&record(t, None), Duration::MAX),
            (None, "session_timeout")
        );
        let last = UNIX_EPOCH + Duration::from_secs(u64::MAX >> 1);
        assert_eq!(
            expiry(&record(last, Some(hour)), hour),
            (None, "learned_lifetime")
        );
    }
}
