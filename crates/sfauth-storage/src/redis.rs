//! [`RedisStore`]: every record in a Redis server that many processes and machines share
//! (feature `redis`).
//!
//! See [`RedisStore`] for the layout, the scripts and the guarantees.
//!
//! Every conditional write is one Lua script: Redis runs a script alone, so the checks (version,
//! key id, lease) and the write are one atomic step, and a lease check cannot be overtaken by a
//! take-over between the check and the write, as it could with `WATCH`/`MULTI` retries or with
//! a read followed by a write.
//!
//! Listing needs pages in the order of the key's string form with a cursor, but `SCAN` is
//! unordered and may return a key twice. So the scripts that create and delete records also
//! keep a sorted set of every key string, all with score 0: Redis then orders its members
//! bytewise, the order of Rust's `str` and of the other backends, and `ZRANGEBYLEX` resumes
//! after a cursor in `O(log n)`.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisError, Script, ScriptInvocation};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use futures_util::future::{Either, select};
use sfauth_core::TokenKey;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::crypto::{ClearFields, Keyring, open_checked, seal_record};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::{check_holder, check_key};
use crate::notices::Notices;
use crate::record::{
    EntryPage, Lease, ListEntry, ListPage, ListQuery, MAX_STORED_TIME, RecordHeader, StatusKind,
    TokenRecord, from_millis, header_field, next_version, parse_header,
};
use crate::store::{Changes, TokenStore, Watch};

/// The prefix of every key (and of the notification channel) unless another one is set.
const DEFAULT_PREFIX: &str = "sfauth:";

/// How long one attempt to connect may take.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a command may wait for its reply.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the connection manager retries a lost connection (with a growing delay) before
/// an operation waiting for it fails; the next operation starts a new round.
const RECONNECT_RETRIES: usize = 2;

/// The first delay between reconnection attempts, for commands and for pub/sub.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(100);

/// The longest delay between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// After this long without a message, the subscriber pings the server, so that a connection
/// that died silently is noticed and replaced.
const PUBSUB_PING_EVERY: Duration = Duration::from_secs(15);

/// At most this many index entries are examined by one call of the listing script, so that a
/// filter that matches little never blocks the server for long; the listing calls it again.
const LIST_SCAN_BUDGET: usize = 1000;

/// The fields of a record's hash, in the order `get` and the listing script return them.
const RECORD_FIELDS: [&str; 7] = [
    "version",
    "sealed",
    "org_id",
    "user_id",
    "client_id",
    "status",
    "key_id",
];

/// A [`TokenStore`] in Redis, records sealed with a [`Keyring`]: one store that many processes
/// and machines share.
///
/// It talks to one standalone Redis server (5.0 or later) through a
/// [`ConnectionManager`](::redis::aio::ConnectionManager), which reconnects by itself: an
/// operation while the server is away fails with [`ErrorKind::Backend`] after the connect and
/// response timeouts (a few seconds by default, see [`RedisStoreBuilder`]), and the same handle
/// works again once the server is back. A write whose reply was lost to a timeout may have
/// been applied: re-read before deciding. Redis Cluster is not supported (the scripts touch
/// keys they derive from the prefix).
///
/// # Layout
///
/// Under the prefix `P` (default `sfauth:`), for a key whose string form is `K`:
///
/// - `P` `record:` `K`: a hash with the sealed record (`sealed`, sealed as described on
///   [`Keyring`], the same format as the file and SQLite backends) and, in clear, `version`,
///   `org_id`, `user_id`, `client_id`, `status` and `key_id` (for listing filters and the checks
///   of a compare-and-swap; they are checked against the sealed record on every read), and the
///   record's clear header: `header` (whether a refresh is in flight, and the times its tokens
///   fall due by, in milliseconds; nothing secret) with `header_version`, the version it was
///   written at, so that [`header`](TokenStore::header) answers without opening the record and
///   a record last written by a version of this crate without headers is opened instead.
/// - `P` `lease:` `K`: a hash with the current lease's `holder`, `fence` and `expires_at`
///   (milliseconds since the epoch, on the server's clock); deleted by a release.
/// - `P` `fence:` `K`: the fence counter, a plain integer that only `INCR` changes and that is
///   never deleted, so that release, expiry and deletion of the record never reset it.
/// - `P` `index`: a sorted set of every `K` with a record, for listing in key order.
/// - `P` `changes`: the pub/sub channel on which every write publishes `K`, for
///   [`watch`](TokenStore::watch); an insert or put follows it with `|version|status|header`
///   (the clear header just written), for [`changes`](TokenStore::changes).
///
/// # Scripts and the clock
///
/// `insert`, `put`, `delete` and every lease operation are each one Lua script, so a check and
/// its write are atomic. `put` compares the stored version (as a string) with the expected one,
/// refuses a record sealed with a key the keyring lacks, and, with a lease, checks holder,
/// fence and expiry of the lease hash in the same script.
///
/// Lease expiry is judged by the Redis server's clock (`TIME`, read inside the scripts), not
/// by the clients' clocks nor by key expiry: every process sharing the store agrees on it
/// whatever their own clocks say, and [`Lease::expires_at`] is on that clock. The lease hash has
/// no TTL of its own, because [`take_over`](TokenStore::take_over) must still find an expired
/// lease that nobody replaced.
///
/// # TLS
///
/// A `rediss://` URL connects over TLS (rustls, with the aws-lc-rs provider), as managed
/// services with in-transit encryption require (ElastiCache, Upstash, Azure Cache for Redis,
/// Memorystore); `redis://` stays in the clear. The server's certificate is always verified,
/// chain and host name: by default against the operating system's trust store (as the HTTP
/// transport does), or, given [`RedisStoreBuilder::root_certificate`], against those
/// certificates only, for a server whose certificate a private CA issued. redis-rs's
/// `#insecure` fragment, which would skip verification, is refused. A certificate the store
/// does not trust fails [`connect`](RedisStoreBuilder::connect) with [`ErrorKind::Config`]
/// and a message saying so.
///
/// rustls needs a process-wide crypto provider: the store uses the one the program installed
/// (`rustls::crypto::CryptoProvider::install_default`), and installs aws-lc-rs's only when
/// there is none.
///
/// # Durability
///
/// A write is as durable as the server makes it: the contract's "durable when it returns" needs
/// `appendonly yes` with `appendfsync always`, and a server that evicts keys
/// (`maxmemory-policy` other than `noeviction`) may drop records or fence counters. A
/// replica promoted after a failover may lack the last writes, fence increments included.
///
/// # Watches
///
/// The first [`watch`](TokenStore::watch) starts one task per store (shared by its clones) that
/// holds a pub/sub connection subscribed to the channel and wakes the watches of the key in
/// each message; the first watches wait for that subscription (at most one connect and one
/// response timeout). When the connection is lost, the task reconnects; meanwhile watches only
/// end by their fallback, and every watch wakes once the subscription is back (a write may
/// have been missed). Writes publish with `redis.pcall`, so a server user without permission
/// on the channel still writes, and its watches end by their fallback.
///
/// Cheap to clone: clones share the connection and the watch task. `Debug` and every error
/// show the URL with its password and query removed.
///
/// ```no_run
/// use sfauth_storage::{Keyring, RedisStore};
///
/// # async fn open() -> sfauth_storage::Result<()> {
/// let keyring = Keyring::from_env("SFAUTH_STORAGE_KEY")?;
/// let store = RedisStore::connect("redis://:password@redis.internal:6379/0", keyring).await?;
///
/// // Or with options: several applications can share one server under their own prefixes.
/// let keyring = Keyring::from_env("SFAUTH_STORAGE_KEY")?;
/// let billing = RedisStore::builder("redis://redis.internal:6379/0", keyring)
///     .prefix("billing:sfauth:")
///     .connect()
///     .await?;
///
/// // Over TLS, to a server whose certificate a private CA issued.
/// let keyring = Keyring::from_env("SFAUTH_STORAGE_KEY")?;
/// let ca = std::fs::read("/etc/ssl/private-ca.pem").unwrap_or_default();
/// let secure = RedisStore::builder("rediss://:password@redis.internal:6380/0", keyring)
///     .root_certificate(ca)
///     .connect()
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    keyring: Keyring,
    names: Arc<Names>,
    /// The URL without its secrets, for messages.
    target: Arc<str>,
    subscriber: Arc<Subscriber>,
}

/// Options for a [`RedisStore`], from [`RedisStore::builder`].
///
/// `Debug` shows the URL with its password and query removed.
pub struct RedisStoreBuilder {
    url: Zeroizing<String>,
    keyring: Keyring,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// PEM certificates to trust instead of the system's, for `rediss://`.
    root_certificates: Option<Vec<u8>>,
}

/// The names of the store's keys and channel under its prefix.
#[derive(Debug)]
struct Names {
    prefix: String,
    record_prefix: String,
    index: String,
    channel: String,
}

impl Names {
    fn new(prefix: String) -> Self {
        Self {
            record_prefix: format!("{prefix}record:"),
            index: format!("{prefix}index"),
            channel: format!("{prefix}changes"),
            prefix,
        }
    }

    fn record(&self, name: &str) -> String {
        format!("{}{name}", self.record_prefix)
    }

    fn lease(&self, name: &str) -> String {
        format!("{}lease:{name}", self.prefix)
    }

    fn fence(&self, name: &str) -> String {
        format!("{}fence:{name}", self.prefix)
    }
}

/// `url` without its password and query (which can hold one too), for messages and `Debug`.
fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "(an unparseable url)".to_owned();
    };
    // Plain words: brackets would be percent-encoded in a URL.
    if parsed.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some("redacted"));
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("redacted"));
    }
    parsed.set_fragment(None);
    parsed.to_string()
}

impl RedisStore {
    /// Connects to the Redis server at `url` (such as `redis://:password@host:6379/0`) with the
    /// default options (prefix `sfauth:`).
    ///
    /// A URL that does not parse, and credentials the server refuses, are
    /// [`ErrorKind::Config`]; a server that does not answer is [`ErrorKind::Backend`].
    pub async fn connect(url: &str, keyring: Keyring) -> Result<Self> {
        Self::builder(url, keyring).connect().await
    }

    /// Options for a store on the Redis server at `url`; [`RedisStoreBuilder::connect`]
    /// connects.
    pub fn builder(url: &str, keyring: Keyring) -> RedisStoreBuilder {
        RedisStoreBuilder {
            url: Zeroizing::new(url.to_owned()),
            keyring,
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            root_certificates: None,
        }
    }

    /// The prefix of every key this store uses.
    pub fn prefix(&self) -> &str {
        &self.names.prefix
    }

    /// An error for a failed command: `Backend`, saying whether the server was unreachable.
    fn failed(&self, what: &str, error: RedisError) -> Error {
        let why = if error.is_timeout() {
            "timed out"
        } else if certificate_problem(&error).is_some() {
            "failed: the server's tls certificate is not trusted"
        } else if error.is_io_error()
            || error.is_connection_refusal()
            || error.is_connection_dropped()
        {
            "server unreachable"
        } else {
            "failed"
        };
        Error::with_source(
            ErrorKind::Backend,
            format!("redis: {what} {why} ({})", self.target),
            error,
        )
    }

    /// Runs a script; its reply is an array of strings.
    async fn run(&self, what: &str, invocation: &ScriptInvocation<'_>) -> Result<Reply> {
        let mut conn = self.conn.clone();
        invocation
            .invoke_async::<Vec<Vec<u8>>>(&mut conn)
            .await
            .map(Reply)
            .map_err(|e| self.failed(what, e))
    }

    /// `put`, and with `release` also the release of `lease` in the same script (see
    /// [`TokenStore::put_and_release`]).
    async fn write(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&Lease>,
        release: bool,
    ) -> Result<u64> {
        let name = record.key.to_string();
        if let Some(lease) = lease {
            check_key(lease, &record.key)?;
        }
        let version = next_version(expected_version)?;
        let sealed = seal_record(&self.keyring, &record, version)?;
        let clear = ClearFields::of(&record, self.keyring.current_key_id());
        let mut invocation = SCRIPTS.put.key(self.names.record(&name));
        invocation
            .key(self.names.lease(&name))
            .key(&self.names.index)
            .arg(&name)
            .arg(&self.names.channel)
            .arg(expected_version)
            .arg(version)
            .arg(sealed)
            .arg(clear.org_id)
            .arg(clear.user_id)
            .arg(clear.client_id)
            .arg(clear.status)
            .arg(clear.key_id)
            .arg(lease.map_or("", |lease| lease.holder.as_str()))
            .arg(lease.map_or_else(String::new, |lease| lease.fence.to_string()))
            .arg(header_field(&record))
            .arg(if release { "1" } else { "" });
        for key_id in self.keyring.key_ids() {
            invocation.arg(key_id);
        }
        let reply = self.run("writing record", &invocation).await?;
        match reply.status() {
            b"ok" => Ok(version),
            b"missing" => Err(Error::not_found(&name)),
            b"stale" => Err(Error::stale(&name, reply.text(1)?, expected_version)),
            b"unknown_key" => Err(Error::unknown_key(&name, reply.text(1)?)),
            b"lease_lost" => Err(Error::lease_lost(&name)),
            _ => Err(reply.unexpected("writing record")),
        }
    }

    /// Starts the subscriber task unless it runs already.
    fn start_subscriber(&self) {
        let subscriber = &self.subscriber;
        subscriber.started.get_or_init(|| {
            let link = SubscriberLink {
                client: subscriber.client.clone(),
                channel: self.names.channel.clone(),
                watchers: Arc::clone(&subscriber.watchers),
                alive: subscriber.alive.subscribe(),
                connect_timeout: subscriber.connect_timeout,
                response_timeout: subscriber.response_timeout,
                target: Arc::clone(&self.target),
            };
            drop(tokio::spawn(link.run()));
        });
    }
}

impl RedisStoreBuilder {
    /// Prefixes every key and the notification channel with `prefix` (default `sfauth:`), so
    /// that several stores can share a server or a database. Stores see each other's records
    /// only under the same prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one attempt to connect may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its reply (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more PEM `CERTIFICATE` blocks; call again
    /// to add more) for a `rediss://` URL, instead of the operating system's trust store: for
    /// a server whose certificate a private CA issued. The server's certificate is still
    /// verified, chain and host name. [`connect`](Self::connect) refuses a `redis://` URL with
    /// root certificates, and PEM that holds no certificate, as [`ErrorKind::Config`].
    pub fn root_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        let pem = pem.as_ref();
        let all = self.root_certificates.get_or_insert_with(Vec::new);
        all.extend_from_slice(pem);
        if !pem.ends_with(b"\n") {
            all.push(b'\n');
        }
        self
    }

    /// Connects.
    ///
    /// A URL that does not parse, credentials the server refuses and a TLS certificate the
    /// store does not trust are [`ErrorKind::Config`]; a server that does not answer is
    /// [`ErrorKind::Backend`].
    pub async fn connect(self) -> Result<RedisStore> {
        let target: Arc<str> = Arc::from(redact_url(&self.url));
        let unusable = |e| {
            Error::with_source(
                ErrorKind::Config,
                format!("redis: not a usable redis url: {target}"),
                e,
            )
        };
        let client = ::redis::Client::open(self.url.as_str()).map_err(unusable)?;
        let tls = matches!(
            client.get_connection_info().addr(),
            ::redis::ConnectionAddr::TcpTls { .. }
        );
        let client = match &self.root_certificates {
            None => client,
            Some(_) if !tls => {
                return Err(Error::config(format!(
                    "redis: root certificates are for a rediss:// url, not {target}"
                )));
            }
            Some(pem) => {
                check_pem_certificates(pem)?;
                let certificates = ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                };
                ::redis::Client::build_with_tls(self.url.as_str(), certificates)
                    .map_err(unusable)?
            }
        };
        if tls {
            ensure_crypto_provider();
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_min_delay(RECONNECT_MIN_DELAY)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| {
                if e.kind() == ::redis::ErrorKind::AuthenticationFailed {
                    Error::with_source(
                        ErrorKind::Config,
                        format!("redis: the server refused the credentials for {target}"),
                        e,
                    )
                } else if let Some(why) = certificate_problem(&e) {
                    Error::with_source(
                        ErrorKind::Config,
                        format!(
                            "redis: the tls certificate of {target} is refused ({why}): \
                             trust its CA with RedisStoreBuilder::root_certificate, or check \
                             the host name"
                        ),
                        e,
                    )
                } else if e.kind() == ::redis::ErrorKind::InvalidClientConfig {
                    Error::with_source(
                        ErrorKind::Config,
                        format!("redis: the connection settings of {target} are refused"),
                        e,
                    )
                } else {
                    Error::with_source(
                        ErrorKind::Backend,
                        format!("redis: cannot connect to {target}"),
                        e,
                    )
                }
            })?;
        Ok(RedisStore {
            conn,
            keyring: self.keyring,
            names: Arc::new(Names::new(self.prefix)),
            target,
            subscriber: Arc::new(Subscriber {
                client,
                watchers: Arc::new(Watchers {
                    notices: Notices::new(),
                    link: watch::Sender::new(Link::Starting),
                }),
                started: OnceLock::new(),
                alive: watch::Sender::new(()),
                connect_timeout: self.connect_timeout,
                response_timeout: self.response_timeout,
            }),
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.target)
            .field("prefix", &self.names.prefix)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("keyring", &self.keyring)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field(
                "root_certificates",
                &self.root_certificates.as_ref().map(|_| "set"),
            )
            .finish()
    }
}

/// Installs aws-lc-rs as rustls's process-wide crypto provider unless one is installed: redis-rs
/// builds its TLS configuration with the process default, and rustls cannot pick one by itself
/// when a program's build enables more than one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one in between: that one is used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// Checks that `pem` holds at least one certificate and nothing malformed, so that a wrong
/// file is reported as such and not as an untrusted server.
fn check_pem_certificates(pem: &[u8]) -> Result<()> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut count = 0_usize;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                "redis: a root certificate is not valid PEM",
                e,
            )
        })?;
        count = count.saturating_add(1);
    }
    if count == 0 {
        return Err(Error::config(
            "redis: the root certificates hold no PEM CERTIFICATE block",
        ));
    }
    Ok(())
}

/// Why the server's TLS certificate was refused, if that is what `error` comes down to: rustls's
/// error, which redis-rs and tokio-rustls wrap in an `io::Error` inside an `Arc`.
fn certificate_problem(error: &RedisError) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(shared) = current.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            let inner: &(dyn std::error::Error + 'static) = &**shared;
            next = Some(inner);
            continue;
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            let inner: &(dyn std::error::Error + 'static) = inner;
            next = Some(inner);
            continue;
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return match tls {
                refused @ rustls::Error::InvalidCertificate(_) => Some(refused.to_string()),
                rustls::Error::NoCertificatesPresented => {
                    Some("the server presented none".to_owned())
                }
                _ => None,
            };
        }
        next = current.source();
    }
    None
}

/// A script's reply: an array of strings, the first saying what happened.
struct Reply(Vec<Vec<u8>>);

impl Reply {
    fn status(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    fn text(&self, index: usize) -> Result<&str> {
        self.0
            .get(index)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .ok_or_else(|| Error::new(ErrorKind::Backend, "redis: a script reply lacks a field"))
    }

    /// The error for a reply this code does not know.
    fn unexpected(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Backend,
            format!(
                "redis: unexpected reply to {what}: {}",
                String::from_utf8_lossy(self.status())
            ),
        )
    }
}

fn parse_u64(text: &str, what: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| Error::corrupt(format!("stored {what} is not a number")))
}

/// A stored time in milliseconds: beyond `i64` reads as the far future, clamped like any late
/// time.
fn parse_millis(text: &str, what: &str) -> Result<SystemTime> {
    match text.parse::<i64>() {
        Ok(millis) => Ok(from_millis(millis)),
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(from_millis(i64::MAX))
        }
        Err(_) => Err(Error::corrupt(format!("stored {what} is not a time"))),
    }
}

/// `ttl` in milliseconds, refusing one so long that the scripts' arithmetic (in doubles)
/// could lose precision.
fn ttl_millis(ttl: Duration) -> Result<u64> {
    if ttl > MAX_STORED_TIME {
        return Err(Error::config("lease ttl is too large"));
    }
    u64::try_from(ttl.as_millis()).map_err(|_| Error::config("lease ttl is too large"))
}

/// Opens a record from its hash fields, in the order of [`RECORD_FIELDS`] (missing ones empty).
fn decode(keyring: &Keyring, name: &str, fields: &[Vec<u8>]) -> Result<TokenRecord> {
    let [version, sealed, org_id, user_id, client_id, status, key_id] = fields else {
        return Err(Error::corrupt(format!("the record of {name} lacks fields")));
    };
    let text = |bytes| {
        std::str::from_utf8(bytes)
            .map_err(|_| Error::corrupt(format!("a stored field of {name} is not text")))
    };
    let clear = ClearFields {
        org_id: text(org_id)?,
        user_id: text(user_id)?,
        client_id: text(client_id)?,
        status: text(status)?,
        key_id: text(key_id)?,
    };
    let version = parse_u64(text(version)?, "version")?;
    open_checked(keyring, name, version, sealed, &clear)
}

/// The fields of a record's hash that [`TokenStore::header`] reads, in this order.
const HEADER_FIELDS: [&str; 4] = ["version", "status", "header", "header_version"];

/// The error for a fence counter that `INCR` refused: at the end of its range or not a number.
/// Reset, it would issue fences again.
fn fence_exhausted(name: &str) -> Error {
    Error::corrupt(format!(
        "the fence counter of {name} is exhausted or damaged"
    ))
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn get(&self, key: &TokenKey) -> Result<Option<TokenRecord>> {
        let name = key.to_string();
        let mut conn = self.conn.clone();
        let fields: Vec<Option<Vec<u8>>> = ::redis::cmd("HMGET")
            .arg(self.names.record(&name))
            .arg(&RECORD_FIELDS)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed("reading record", e))?;
        if fields.iter().all(Option::is_none) {
            return Ok(None);
        }
        let fields: Vec<Vec<u8>> = fields.into_iter().map(Option::unwrap_or_default).collect();
        decode(&self.keyring, &name, &fields).map(Some)
    }

    async fn header(&self, key: &TokenKey) -> Result<Option<RecordHeader>> {
        let name = key.to_string();
        let mut conn = self.conn.clone();
        let fields: Vec<Option<String>> = ::redis::cmd("HMGET")
            .arg(self.names.record(&name))
            .arg(&HEADER_FIELDS)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed("reading record header", e))?;
        if fields.iter().all(Option::is_none) {
            return Ok(None);
        }
        if let [
            Some(version),
            Some(status),
            Some(header),
            Some(header_version),
        ] = fields.as_slice()
            && version == header_version
            && status == StatusKind::Active.as_str()
            && let Some(header) = parse_header(key, parse_u64(version, "version")?, header)?
        {
            return Ok(Some(header));
        }
        // Not active (its reason is sealed), a refresh in flight (its mark is), or written by a
        // version without headers: the record itself answers. It may be newer than the fields
        // just read, which is what a caller wants anyway.
        Ok(self.get(key).await?.map(RecordHeader::with_record))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListPage> {
        self.list_entries(query).await?.into_page()
    }

    async fn list_entries(&self, query: &ListQuery) -> Result<EntryPage> {
        let limit = query.effective_limit();
        let wanted = limit.saturating_add(1);
        let mut start = query.after.as_ref().map_or_else(
            || "-".to_owned(),
            |cursor| format!("({}", cursor.last_key()),
        );
        let org_id = query.org_id.as_ref().map_or("", |id| id.as_str());
        let user_id = query.user_id.as_ref().map_or("", |id| id.as_str());
        let client_id = query.client_id.as_deref().unwrap_or("");
        let status = query.status.map_or("", |status| status.as_str());
        let label = query.label_suffix().unwrap_or_default();
        let mut records = Vec::new();
        loop {
            let mut invocation = SCRIPTS.list.key(&self.names.index);
            invocation
                .arg(&self.names.record_prefix)
                .arg(&start)
                .arg(wanted.saturating_sub(records.len()))
                .arg(LIST_SCAN_BUDGET)
                .arg(org_id)
                .arg(user_id)
                .arg(client_id)
                .arg(status)
                .arg(&label);
            let reply = self.run("listing records", &invocation).await?;
            let done = match reply.status() {
                b"done" => true,
                b"more" => false,
                _ => return Err(reply.unexpected("listing records")),
            };
            let rows = reply.0.get(2..).unwrap_or_default();
            for row in rows.chunks(RECORD_FIELDS.len().saturating_add(1)) {
                let Some((name, fields)) = row.split_first() else {
                    continue;
                };
                let name = std::str::from_utf8(name)
                    .map_err(|_| Error::corrupt("redis: an indexed key is not text"))?;
                let key = name.parse().map_err(|_| {
                    Error::corrupt(format!("redis: an indexed key is not a key: {name}"))
                })?;
                records.push(ListEntry::new(key, decode(&self.keyring, name, fields)));
            }
            if done || records.len() >= wanted {
                break;
            }
            start = format!("({}", reply.text(1)?);
        }
        Ok(EntryPage::from_matches(records, limit))
    }

    async fn insert(&self, record: TokenRecord) -> Result<u64> {
        let name = record.key.to_string();
        let sealed = seal_record(&self.keyring, &record, 1)?;
        let clear = ClearFields::of(&record, self.keyring.current_key_id());
        let mut invocation = SCRIPTS.insert.key(self.names.record(&name));
        invocation
            .key(&self.names.index)
            .arg(&name)
            .arg(&self.names.channel)
            .arg(sealed)
            .arg(clear.org_id)
            .arg(clear.user_id)
            .arg(clear.client_id)
            .arg(clear.status)
            .arg(clear.key_id)
            .arg(header_field(&record));
        let reply = self.run("inserting record", &invocation).await?;
        match reply.status() {
            b"ok" => Ok(1),
            b"exists" => Err(Error::conflict(format!(
                "a record for {name} already exists"
            ))),
            _ => Err(reply.unexpected("inserting record")),
        }
    }

    async fn put<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: Option<&'a Lease>,
    ) -> Result<u64> {
        self.write(record, expected_version, lease, false).await
    }

    async fn put_and_release<'a>(
        &self,
        record: TokenRecord,
        expected_version: u64,
        lease: &'a Lease,
    ) -> Result<u64> {
        self.write(record, expected_version, Some(lease), true)
            .await
    }

    async fn delete(&self, key: &TokenKey, expected_version: Option<u64>) -> Result<bool> {
        let name = key.to_string();
        let mut invocation = SCRIPTS.delete.key(self.names.record(&name));
        invocation
            .key(&self.names.index)
            .arg(&name)
            .arg(&self.names.channel)
            .arg(expected_version.map_or_else(String::new, |version| version.to_string()));
        let reply = self.run("deleting record", &invocation).await?;
        match (reply.status(), expected_version) {
            (b"ok", _) => Ok(true),
            (b"missing", _) => Ok(false),
            (b"stale", Some(expected)) => Err(Error::stale(&name, reply.text(1)?, expected)),
            _ => Err(reply.unexpected("deleting record")),
        }
    }

    async fn try_acquire(
        &self,
        key: &TokenKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let ttl = ttl_millis(ttl)?;
        let name = key.to_string();
        let mut invocation = SCRIPTS.acquire.key(self.names.lease(&name));
        invocation.key(self.names.fence(&name)).arg(holder).arg(ttl);
        let reply = self.run("acquiring lease", &invocation).await?;
        match reply.status() {
            b"ok" => Ok(Some(Lease {
                key: key.clone(),
                holder: holder.to_owned(),
                fence: parse_u64(reply.text(1)?, "fence")?,
                expires_at: parse_millis(reply.text(2)?, "lease expiry")?,
            })),
            b"held" => Ok(None),
            b"fence_exhausted" => Err(fence_exhausted(&name)),
            _ => Err(reply.unexpected("acquiring lease")),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let name = lease.key.to_string();
        let mut invocation = SCRIPTS.release.key(self.names.lease(&name));
        invocation
            .arg(&lease.holder)
            .arg(lease.fence)
            .arg(&self.names.channel)
            .arg(&name);
        let reply = self.run("releasing lease", &invocation).await?;
        match reply.status() {
            b"ok" | b"not_current" => Ok(()),
            _ => Err(reply.unexpected("releasing lease")),
        }
    }

    async fn lease(&self, key: &TokenKey) -> Result<Option<Lease>> {
        let name = key.to_string();
        let invocation = SCRIPTS.lease.key(self.names.lease(&name));
        let reply = self.run("reading lease", &invocation).await?;
        match reply.status() {
            b"ok" => Ok(Some(Lease {
                key: key.clone(),
                holder: reply.text(1)?.to_owned(),
                fence: parse_u64(reply.text(2)?, "fence")?,
                expires_at: parse_millis(reply.text(3)?, "lease expiry")?,
            })),
            b"free" => Ok(None),
            _ => Err(reply.unexpected("reading lease")),
        }
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let ttl = ttl_millis(ttl)?;
        let name = lease.key.to_string();
        let mut invocation = SCRIPTS.renew.key(self.names.lease(&name));
        invocation.arg(&lease.holder).arg(lease.fence).arg(ttl);
        let reply = self.run("renewing lease", &invocation).await?;
        match reply.status() {
            b"ok" => Ok(Some(Lease {
                expires_at: parse_millis(reply.text(1)?, "lease expiry")?,
                ..lease.clone()
            })),
            b"lost" => Ok(None),
            _ => Err(reply.unexpected("renewing lease")),
        }
    }

    async fn take_over(&self, stale: &Lease, holder: &str, ttl: Duration) -> Result<Option<Lease>> {
        check_holder(holder)?;
        let ttl = ttl_millis(ttl)?;
        let name = stale.key.to_string();
        let mut invocation = SCRIPTS.take_over.key(self.names.lease(&name));
        invocation
            .key(self.names.fence(&name))
            .arg(&stale.holder)
            .arg(stale.fence)
            .arg(holder)
            .arg(ttl);
        let reply = self.run("taking over lease", &invocation).await?;
        match reply.status() {
            b"ok" => Ok(Some(Lease {
                key: stale.key.clone(),
                holder: holder.to_owned(),
                fence: parse_u64(reply.text(1)?, "fence")?,
                expires_at: parse_millis(reply.text(2)?, "lease expiry")?,
            })),
            b"not_current" => Ok(None),
            b"fence_exhausted" => Err(fence_exhausted(&name)),
            _ => Err(reply.unexpected("taking over lease")),
        }
    }

    async fn watch(&self, key: &TokenKey) -> Result<Watch> {
        self.start_subscriber();
        let watchers = &self.subscriber.watchers;
        // A watch must be registered with the server before it is returned, so the first
        // watches wait for the first subscription. Not longer than one attempt, and not at all
        // once the connection is known to be down: such a watch is registered anyway and fires
        // when the subscription is back (a write may have been missed meanwhile), and the
        // caller's fallback bounds its wait.
        let mut link = watchers.link.subscribe();
        let bound = self
            .subscriber
            .connect_timeout
            .saturating_add(self.subscriber.response_timeout);
        let settled = tokio::time::timeout(bound, link.wait_for(|link| *link != Link::Starting))
            .await
            .ok()
            .and_then(|state| state.ok().map(|state| *state));
        if settled != Some(Link::Up) {
            tracing::debug!(redis = %self.target, "watch registered while pub/sub is down");
        }
        let mut receiver = watchers.notices.subscribe(key.to_string());
        // Subscribing marks the current value seen, so only a later wake-up ends this watch.
        Ok(Watch::new(async move {
            // An error means the store is gone: nothing more will be reported.
            let _ = receiver.changed().await;
        }))
    }

    fn changes(&self) -> Option<Changes> {
        // The subscriber is a task: without a runtime there is no feed (a caller reads
        // instead), where spawning would panic.
        tokio::runtime::Handle::try_current().ok()?;
        self.start_subscriber();
        Some(self.subscriber.watchers.notices.changes())
    }
}

/// The watch side of a store, shared by its clones.
struct Subscriber {
    /// For the pub/sub connections.
    client: ::redis::Client,
    watchers: Arc<Watchers>,
    /// Set once the task runs.
    started: OnceLock<()>,
    /// Dropped with the last clone of the store, which ends the task.
    alive: watch::Sender<()>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// One channel per watched key, the state of the subscription, and the headers for
/// [`TokenStore::changes`]; shared with the task.
struct Watchers {
    /// By the key's text form.
    notices: Notices,
    link: watch::Sender<Link>,
}

/// The state of the subscriber's pub/sub connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Its first attempt is under way.
    Starting,
    /// Subscribed: every publication reaches the watches.
    Up,
    /// Lost or failed; the task is trying again.
    Down,
}

impl Watchers {
    /// Wakes the watches of the key named in `message` and passes the header it carries to
    /// the change feed.
    fn dispatch(&self, message: &::redis::Msg) {
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            return;
        };
        let (name, notice) = split_notice(payload);
        self.notices.wake(name);
        if let Some(notice) = notice {
            self.notices.announce(name, notice);
        }
    }
}

/// A notice's key name and, for a write that stored a record's clear header, the rest:
/// `version|status|header`. The name is the key's text form, whose five separators are its
/// only bare `|` (its fields escape theirs), so the notice is split after its sixth field; a
/// notice of the key alone (a deletion, a lease change, or a writer from before the headers)
/// has no rest.
fn split_notice(payload: &str) -> (&str, Option<&str>) {
    match payload.match_indices('|').nth(5) {
        Some((at, _)) => {
            let (name, rest) = payload.split_at(at);
            (name, rest.strip_prefix('|'))
        }
        None => (payload, None),
    }
}

/// What the subscriber task holds.
struct SubscriberLink {
    client: ::redis::Client,
    channel: String,
    watchers: Arc<Watchers>,
    alive: watch::Receiver<()>,
    connect_timeout: Duration,
    response_timeout: Duration,
    target: Arc<str>,
}

impl SubscriberLink {
    /// Subscribes, dispatches messages, and resubscribes after a lost connection, until the
    /// store is dropped.
    async fn run(mut self) {
        let mut delay = RECONNECT_MIN_DELAY;
        let subscribe_timeout = self.connect_timeout.saturating_add(self.response_timeout);
        loop {
            let client = self.client.clone();
            let channel = self.channel.clone();
            let attempt = tokio::time::timeout(subscribe_timeout, async move {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, RedisError>(pubsub)
            });
            let Some(attempt) = self.until_dropped(attempt).await else {
                return;
            };
            match attempt {
                Ok(Ok(pubsub)) => {
                    delay = RECONNECT_MIN_DELAY;
                    self.watchers.link.send_replace(Link::Up);
                    self.watchers.notices.wake_all();
                    let dropped = self.listen(pubsub).await;
                    self.watchers.link.send_replace(Link::Down);
                    if dropped {
                        return;
                    }
                    tracing::warn!(
                        redis = %self.target,
                        "redis pub/sub connection lost; watches wait for their fallback until it is back"
                    );
                }
                Ok(Err(error)) => {
                    self.watchers.link.send_replace(Link::Down);
                    tracing::debug!(redis = %self.target, %error, "redis pub/sub: cannot subscribe");
                }
                Err(_) => {
                    self.watchers.link.send_replace(Link::Down);
                    tracing::debug!(redis = %self.target, "redis pub/sub: subscribing timed out");
                }
            }
            if self
                .until_dropped(tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return;
            }
            delay = delay.saturating_mul(2).min(RECONNECT_MAX_DELAY);
        }
    }

    /// Dispatches messages until the connection is lost (`false`) or the store is dropped
    /// (`true`). A quiet connection is pinged, so that a dead one is noticed.
    async fn listen(&mut self, pubsub: ::redis::aio::PubSub) -> bool {
        let (mut sink, mut stream) = pubsub.split();
        loop {
            let next = tokio::time::timeout(PUBSUB_PING_EVERY, stream.next());
            match self.until_dropped(next).await {
                None => return true,
                Some(Ok(Some(message))) => self.watchers.dispatch(&message),
                Some(Ok(None)) => return false,
                Some(Err(_quiet)) => {
                    let ping =
                        tokio::time::timeout(self.response_timeout, sink.ping::<::redis::Value>());
                    match self.until_dropped(ping).await {
                        None => return true,
                        Some(Ok(Ok(_))) => {}
                        Some(_) => return false,
                    }
                }
            }
        }
    }

    /// `work`'s output, or `None` once the store was dropped.
    async fn until_dropped<F: Future>(&mut self, work: F) -> Option<F::Output> {
        let work = std::pin::pin!(work);
        // The sender never sends: this resolves (with an error) only when it is dropped.
        let dropped = std::pin::pin!(self.alive.changed());
        match select(work, dropped).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(_) => None,
        }
    }
}

/// The Lua scripts, each run atomically by the server.
struct Scripts {
    insert: Script,
    put: Script,
    delete: Script,
    acquire: Script,
    release: Script,
    lease: Script,
    renew: Script,
    take_over: Script,
    list: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let script = |body: &str| Script::new(&format!("{LUA_PRELUDE}{body}"));
    Scripts {
        insert: script(LUA_INSERT),
        put: script(LUA_PUT),
        delete: script(LUA_DELETE),
        acquire: script(LUA_ACQUIRE),
        release: script(LUA_RELEASE),
        lease: script(LUA_LEASE),
        renew: script(LUA_RENEW),
        take_over: script(LUA_TAKE_OVER),
        list: script(LUA_LIST),
    }
});

/// Helpers of every script. Numbers in Lua are doubles: times (milliseconds, below 2^53) are
/// the only arithmetic, and versions and fences are compared and stored as strings, so no
/// value is ever rounded. `INCR` counts fences in the server's 64-bit integers.
const LUA_PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function ms(x)
  return string.format('%.0f', x)
end
-- The lease's holder, fence and expiry if it is held and unexpired at now, else nil.
local function live_lease(lease_key, now)
  local l = redis.call('HMGET', lease_key, 'holder', 'fence', 'expires_at')
  local expires = tonumber(l[3])
  if l[1] and l[2] and expires and expires > now then
    return l
  end
  return nil
end
-- Tells watchers that the record of name changed. A server that refuses (an ACL without
-- the channel) does not fail the write: watches then end by their fallback.
local function notify(channel, name)
  redis.pcall('PUBLISH', channel, name)
end
-- The next fence of the key, as a string; nil when the counter cannot grow.
local function next_fence(fence_key)
  local r = redis.pcall('INCR', fence_key)
  if type(r) == 'table' and r.err then
    return nil
  end
  return redis.call('GET', fence_key)
end
";

/// KEYS: record, index. ARGV: name, channel, sealed, org, user, client, status, key id, clear
/// header.
const LUA_INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists'}
end
redis.call('HSET', KEYS[1], 'version', '1', 'sealed', ARGV[3], 'org_id', ARGV[4],
  'user_id', ARGV[5], 'client_id', ARGV[6], 'status', ARGV[7], 'key_id', ARGV[8],
  'header', ARGV[9], 'header_version', '1')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
notify(ARGV[2], ARGV[1] .. '|1|' .. ARGV[7] .. '|' .. ARGV[9])
return {'ok'}
";

/// KEYS: record, lease, index. ARGV: name, channel, expected version, new version, sealed, org,
/// user, client, status, key id, lease holder ('' for none), lease fence, clear header, '1' to
/// release the lease once written ('' to keep it), then every key id the keyring knows.
const LUA_PUT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
local current = redis.call('HMGET', KEYS[1], 'version', 'key_id')
if current[1] ~= ARGV[3] then
  return {'stale', current[1] or '?'}
end
local known = false
for i = 15, #ARGV do
  if current[2] == ARGV[i] then
    known = true
  end
end
if not known then
  return {'unknown_key', current[2] or '?'}
end
if ARGV[11] ~= '' then
  local l = live_lease(KEYS[2], now_ms())
  if not l or l[1] ~= ARGV[11] or l[2] ~= ARGV[12] then
    return {'lease_lost'}
  end
end
redis.call('HSET', KEYS[1], 'version', ARGV[4], 'sealed', ARGV[5], 'org_id', ARGV[6],
  'user_id', ARGV[7], 'client_id', ARGV[8], 'status', ARGV[9], 'key_id', ARGV[10],
  'header', ARGV[13], 'header_version', ARGV[4])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
if ARGV[14] == '1' and ARGV[11] ~= '' then
  redis.call('DEL', KEYS[2])
end
notify(ARGV[2], ARGV[1] .. '|' .. ARGV[4] .. '|' .. ARGV[9] .. '|' .. ARGV[13])
return {'ok'}
";

/// KEYS: record, index. ARGV: name, channel, expected version ('' for any).
const LUA_DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'missing'}
end
if ARGV[3] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'version')
  if current ~= ARGV[3] then
    return {'stale', current or '?'}
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
notify(ARGV[2], ARGV[1])
return {'ok'}
";

/// KEYS: lease, fence. ARGV: holder, ttl in milliseconds.
const LUA_ACQUIRE: &str = r"
local now = now_ms()
local l = live_lease(KEYS[1], now)
local fence
if l then
  if l[1] ~= ARGV[1] then
    return {'held'}
  end
  fence = l[2]
else
  fence = next_fence(KEYS[2])
  if not fence then
    return {'fence_exhausted'}
  end
end
local expires = ms(now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'fence', fence, 'expires_at', expires)
return {'ok', fence, expires}
";

/// KEYS: lease. ARGV: holder, fence, channel, name.
const LUA_RELEASE: &str = r"
local l = redis.call('HMGET', KEYS[1], 'holder', 'fence')
if l[1] == ARGV[1] and l[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  notify(ARGV[3], ARGV[4])
  return {'ok'}
end
return {'not_current'}
";

/// KEYS: lease.
const LUA_LEASE: &str = r"
local l = live_lease(KEYS[1], now_ms())
if not l then
  return {'free'}
end
return {'ok', l[1], l[2], l[3]}
";

/// KEYS: lease. ARGV: holder, fence, ttl in milliseconds.
const LUA_RENEW: &str = r"
local now = now_ms()
local l = live_lease(KEYS[1], now)
if not l or l[1] ~= ARGV[1] or l[2] ~= ARGV[2] then
  return {'lost'}
end
local expires = ms(now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'expires_at', expires)
return {'ok', expires}
";

/// KEYS: lease, fence. ARGV: stale holder, stale fence, new holder, ttl in milliseconds.
const LUA_TAKE_OVER: &str = r"
local l = redis.call('HMGET', KEYS[1], 'holder', 'fence')
if not l[1] or l[1] ~= ARGV[1] or l[2] ~= ARGV[2] then
  return {'not_current'}
end
local fence = next_fence(KEYS[2])
if not fence then
  return {'fence_exhausted'}
end
local expires = ms(now_ms() + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'holder', ARGV[3], 'fence', fence, 'expires_at', expires)
return {'ok', fence, expires}
";

/// KEYS: index. ARGV: record key prefix, start (a ZRANGEBYLEX bound), how many matches are
/// wanted, how many index entries to examine at most, then the filters on org, user, client,
/// status and the end of the key string (the label's, see `ListQuery::label_suffix`) ('' for
/// any).
///
/// Replies `{'done' or 'more', last examined name, then per match: name and the fields of
/// RECORD_FIELDS ('' when missing)}`; 'more' means the caller resumes after that name.
const LUA_LIST: &str = r"
local start = ARGV[2]
local wanted = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local out = {'done', ''}
local found = 0
local examined = 0
while true do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, 100)
  if #batch == 0 then
    return out
  end
  for _, name in ipairs(batch) do
    examined = examined + 1
    local f = redis.call('HMGET', ARGV[1] .. name, 'version', 'sealed', 'org_id', 'user_id',
      'client_id', 'status', 'key_id')
    local exists = false
    for i = 1, 7 do
      if f[i] then
        exists = true
      end
    end
    if exists
      and (ARGV[5] == '' or f[3] == ARGV[5])
      and (ARGV[6] == '' or f[4] == ARGV[6])
      and (ARGV[7] == '' or f[5] == ARGV[7])
      and (ARGV[8] == '' or f[6] == ARGV[8])
      and (ARGV[9] == '' or string.sub(name, -#ARGV[9]) == ARGV[9]) then
      table.insert(out, name)
      for i = 1, 7 do
        table.insert(out, f[i] or '')
      end
      found = found + 1
    end
    start = '(' .. name
    if found >= wanted or examined >= budget then
      out[1] = 'more'
      out[2] = name
      return out
    end
  end
end
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_names_its_key_whatever_the_label_holds() {
        let key = crate::notices::key_with_separators();
        let name = key.to_string();
        let watchers = Watchers {
            notices: Notices::new(),
            link: watch::Sender::new(Link::Up),
        };
        let woken = watchers.notices.subscribe(name.clone());
        let mut feed = watchers.notices.follow();
        assert_eq!(split_notice(&name), (name.as_str(), None), "a bare key");
        let notice = format!("{name}|7|active|0:1700000000000::::1700007200000");
        let (named, rest) = split_notice(&notice);
        assert_eq!(
            (named, rest),
            (
                name.as_str(),
                Some("7|active|0:1700000000000::::1700007200000")
            )
        );
        watchers.notices.wake(named);
        watchers.notices.announce(named, rest.unwrap());
        assert!(woken.has_changed().unwrap(), "the key's watch is woken");
        let header = feed.try_recv().unwrap();
        assert_eq!((&header.key, header.version), (&key, 7));
    }

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            redact_url("redis://:hunter2@cache.internal:6380/2"),
            "redis://:redacted@cache.internal:6380/2"
        );
        assert_eq!(
            redact_url("redis://app:hunter2@cache.internal/"),
            "redis://app:redacted@cache.internal/"
        );
        let unix = redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2");
        assert!(!unix.contains("hunter2"), "{unix}");
        assert_eq!(
            redact_url("redis://cache.internal"),
            "redis://cache.internal"
        );
        assert_eq!(redact_url("hunter2 is not a url"), "(an unparseable url)");
    }

    #[test]
    fn stored_numbers_parse_or_are_corrupt() {
        assert_eq!(parse_u64("42", "fence").unwrap(), 42);
        assert_eq!(
            parse_u64("-1", "fence").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        let far = parse_millis("99999999999999999999999", "expiry").unwrap();
        assert!(far.checked_add(Duration::from_secs(86_400 * 365)).is_some());
        assert_eq!(
            parse_millis("-7", "expiry").unwrap(),
            SystemTime::UNIX_EPOCH
        );
        assert_eq!(
            parse_millis("1e9", "expiry").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert!(ttl_millis(Duration::MAX).is_err());
        assert_eq!(ttl_millis(Duration::from_millis(1500)).unwrap(), 1500);
    }

    #[tokio::test]
    async fn a_bad_url_is_config_and_an_absent_server_is_backend() {
        let keyring = || Keyring::new(crate::Key::generate());
        let bad = RedisStore::connect("http://:hunter2@nowhere/", keyring())
            .await
            .unwrap_err();
        assert_eq!(bad.kind(), ErrorKind::Config);
        assert!(!format!("{bad} {bad:?}").contains("hunter2"), "{bad:?}");
        // Port 1 on the loopback refuses connections.
        let absent = RedisStore::builder("redis://:hunter2@127.0.0.1:1/", keyring())
            .connect_timeout(Duration::from_millis(200))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(absent.kind(), ErrorKind::Backend, "{absent}");
        assert!(
            !format!("{absent} {absent:?}").contains("hunter2"),
            "{absent:?}"
        );
        assert!(absent.to_string().contains("127.0.0.1:1"), "{absent}");
    }
}
