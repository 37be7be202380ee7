//! The device flow, in Salesforce's pre-RFC 8628 form.
//!
//! Both steps go to the token endpoint. The start sends `response_type=device_code` (no
//! `grant_type`); polling sends `grant_type=device` with the device code as `code` (not RFC
//! 8628's `device_code`). While the user has not approved, polling answers 400
//! `authorization_pending`.
//!
//! Core has no runtime, so waiting is the caller's: either loop over
//! [`OAuthClient::device_poll`] yourself, or hand [`OAuthClient::device_wait`] an async sleep
//! function (`tokio::time::sleep`, for example).

use std::future::Future;
use std::time::{Duration, SystemTime};

use url::Url;

use crate::client::OAuthClient;
use crate::error::{Context, Error, ServerError};
use crate::format::read_response;
use crate::http::{HttpTransport, RetrySafety};
use crate::secret::DeviceCode;
use crate::token::TokenSet;

/// Polling interval used when the server names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The shortest polling interval honoured: a server saying 0 would otherwise be polled in a
/// tight loop.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The longest polling interval honoured (after `slow_down` too): a server's number is not
/// allowed to park the caller for longer.
pub const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// The longest device code lifetime believed: Salesforce's codes live minutes; a larger
/// `expires_in` is read as this.
pub const MAX_DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(3600);

/// What the start of the device flow returns: what to show the user, and what to poll with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeviceAuthorization {
    /// The code to poll with. Secret: whoever polls with it gets the user's tokens.
    pub device_code: DeviceCode,
    /// The code the user types at `verification_uri`.
    pub user_code: String,
    /// Where the user goes to approve.
    pub verification_uri: Url,
    /// How long to wait between polls: the server's `interval`, kept within
    /// [`MIN_INTERVAL`]..=[`MAX_INTERVAL`].
    pub interval: Duration,
    /// When the device code expires, if the server said (`expires_in`, believed up to
    /// [`MAX_DEVICE_CODE_LIFETIME`]).
    pub expires_at: Option<SystemTime>,
}

/// The outcome of one poll.
#[derive(Debug)]
#[non_exhaustive]
pub enum DevicePoll {
    /// The user approved: here are the tokens.
    Complete(Box<TokenSet>),
    /// Not yet approved (`authorization_pending`): poll again after `retry_after`.
    Pending {
        /// How long to wait before the next poll.
        retry_after: Duration,
    },
    /// Polling too fast (`slow_down`): poll again after `retry_after`, the interval plus five
    /// seconds (at most [`MAX_INTERVAL`]), and keep that interval from now on.
    SlowDown {
        /// How long to wait before the next poll.
        retry_after: Duration,
    },
}

impl OAuthClient {
    /// Starts the device flow: `response_type=device_code` with `client_id` and `scope` at the
    /// token endpoint.
    pub async fn device_start(
        &self,
        transport: &dyn HttpTransport,
        scope: Option<&str>,
    ) -> Result<DeviceAuthorization, Error> {
        let mut params = vec![
            ("response_type", "device_code"),
            ("client_id", self.app().client_id()),
        ];
        if let Some(scope) = scope {
            params.push(("scope", scope));
        }
        params.push(("format", self.format().param()));
        let request = self.form_post(
            &self.endpoints().token,
            params,
            false,
            RetrySafety::Idempotent,
        )?;
        let response = transport.send(request).await?;
        let mut fields = read_response(&response, Context::Other)?;
        let status = response.status().as_u16();
        let body = response.body();
        let missing =
            |field: &str| Error::parse(status, format!("device response has no {field}"), body);
        let invalid = |field: &str| {
            Error::parse(
                status,
                format!("device response has an invalid {field}"),
                body,
            )
        };
        let device_code = fields
            .take("device_code")
            .ok_or_else(|| missing("device_code"))?;
        let user_code = fields
            .take("user_code")
            .ok_or_else(|| missing("user_code"))?;
        let verification_uri = fields
            .take("verification_uri")
            .ok_or_else(|| missing("verification_uri"))?;
        let verification_uri =
            Url::parse(&verification_uri).map_err(|_| invalid("verification_uri"))?;
        let seconds = |field: &str, value: Option<String>| match value {
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| invalid(field)),
            None => Ok(None),
        };
        // Both come from the server: bounded, so that no value can overflow the clock or make
        // `device_wait` sleep for ever or spin.
        let interval = seconds("interval", fields.take("interval"))?
            .map_or(DEFAULT_INTERVAL, |s| {
                Duration::from_secs(s).clamp(MIN_INTERVAL, MAX_INTERVAL)
            });
        let expires_at = seconds("expires_in", fields.take("expires_in"))?.map(|s| {
            let now = SystemTime::now();
            now.checked_add(Duration::from_secs(s).min(MAX_DEVICE_CODE_LIFETIME))
                .unwrap_or(now)
        });
        Ok(DeviceAuthorization {
            device_code: DeviceCode::new(device_code),
            user_code,
            verification_uri,
            interval,
            expires_at,
        })
    }

    /// Polls once: `grant_type=device&code=<device code>` with client authentication.
    ///
    /// Marked [`RetrySafety::SingleUse`]: once a poll has been answered with tokens the device
    /// code is spent, so a poll whose answer was lost must not be re-sent blindly; the next
    /// scheduled poll is the retry.
    /// `authorization_pending` and `slow_down` are outcomes, not errors; `expired_token` and
    /// `access_denied` are [`ErrorKind::ReauthorizationRequired`](crate::ErrorKind::ReauthorizationRequired) errors.
    pub async fn device_poll(
        &self,
        transport: &dyn HttpTransport,
        authorization: &DeviceAuthorization,
    ) -> Result<DevicePoll, Error> {
        let params = vec![
            ("grant_type", "device"),
            ("code", authorization.device_code.expose_secret()),
        ];
        match self
            .token_grant(
                transport,
                params,
                true,
                RetrySafety::SingleUse,
                Context::Other,
            )
            .await
        {
            Ok(tokens) => Ok(DevicePoll::Complete(Box::new(tokens))),
            Err(Error::Server(server)) if server.error() == "authorization_pending" => {
                Ok(DevicePoll::Pending {
                    retry_after: authorization.interval,
                })
            }
            Err(Error::Server(server)) if server.error() == "slow_down" => {
                Ok(DevicePoll::SlowDown {
                    retry_after: authorization
                        .interval
                        .saturating_add(Duration::from_secs(5))
                        .min(MAX_INTERVAL),
                })
            }
            Err(error) => Err(error),
        }
    }

    /// Polls until the user approves, the device code expires or the server refuses, sleeping
    /// with `sleep` between polls (first sleep before the first poll). Pass the runtime's sleep,
    /// e.g. `|d| tokio::time::sleep(d)`.
    ///
    /// An expired device code is [`Error::Server`] with `expired_token`, whether the server said
    /// so or the local deadline passed.
    pub async fn device_wait<S, F>(
        &self,
        transport: &dyn HttpTransport,
        authorization: &DeviceAuthorization,
        sleep: S,
    ) -> Result<TokenSet, Error>
    where
        S: Fn(Duration) -> F,
        F: Future<Output = ()>,
    {
        let mut current = authorization.clone();
        loop {
            if current.expires_at.is_some_and(|at| SystemTime::now() >= at) {
                let expired = ServerError::classify(
                    0,
                    "expired_token",
                    Some("device code expired before the user approved"),
                    Context::Other,
                );
                return Err(expired.into());
            }
            sleep(current.interval).await;
            match self.device_poll(transport, &current).await? {
                DevicePoll::Complete(tokens) => return Ok(*tokens),
                DevicePoll::Pending { .. } => {}
                DevicePoll::SlowDown { retry_after } => current.interval = retry_after,
            }
        }
    }
}
