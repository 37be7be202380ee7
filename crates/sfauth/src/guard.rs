//! [`AccessTokenGuard`]: the one way a caller holds a token the manager handed out, whether it
//! came through a key (an owned guard it may keep across an `.await` or send to another task)
//! or through a [`Tenant`](crate::Tenant) handle (a borrow of the handle's cached pointer).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use arc_swap::Guard;
use http::HeaderValue;
use sfauth_core::AccessToken;
use url::Url;

use crate::clock;
use crate::error::Result;
use crate::state::{Cached, NEVER};

/// The scheme in front of the token in an `Authorization` header.
const BEARER: &str = "Bearer ";

/// A valid access token, borrowed from the manager's cache without copying it.
///
/// Hold it for the duration of one request, not longer: it pins the token it was created with,
/// so a long-lived guard keeps serving a token that may have been replaced.
///
/// ```no_run
/// # async fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) -> sfauth::Result<()> {
/// let token = manager.access_token(&key).await?;
/// let request = sfauth::http::Request::get(format!("{}services/data/v62.0/limits", token.instance_url()))
///     .header(sfauth::http::header::AUTHORIZATION, token.authorization())
///     .body(())
///     .map_err(|e| sfauth::Error::Config(e.to_string()))?;
/// # drop(request);
/// # Ok(())
/// # }
/// ```
pub struct AccessTokenGuard<'a> {
    view: View<'a>,
}

// What one view type costs a keyed hit (issue #12): arc-swap's guard alone is a pair of
// scalars, passed and moved in two registers; an enum of it and a borrow is an aggregate
// (rustc gives an enum a scalar pair only when its other variants are empty, or each
// variant is one scalar), which callers move through memory. Measured with perf annotate on
// `manager/cached_token_1t`, the caller writes the guard as two 8-byte stores and reads it
// back as one 16-byte load, a store-forwarding stall: 34-35 ns a hit against 28-29 ns at
// 15afdac in the same run. Tried and measured no better: returning arc-swap's guard from the
// lookup and wrapping it in the caller, `#[inline(always)]` on `access_token`, a boxed `dyn`
// slow path, `repr(align(16))`, `repr(u8)`, and a struct of two options in place of the
// enum. Two view types would win the nanoseconds back at the price of every adapter function
// taking either.
enum View<'a> {
    /// Through a key: the guard keeps the token alive on its own.
    Owned(Guard<Arc<Cached>>),
    /// Through a handle: a borrow of the handle's cached pointer, as cheap as a reference.
    Borrowed(&'a Cached),
}

impl AccessTokenGuard<'static> {
    pub(crate) fn owned(guard: Guard<Arc<Cached>>) -> Self {
        Self {
            view: View::Owned(guard),
        }
    }
}

impl<'a> AccessTokenGuard<'a> {
    pub(crate) fn borrowed(cached: &'a Cached) -> Self {
        Self {
            view: View::Borrowed(cached),
        }
    }

    #[inline]
    fn cached(&self) -> &Cached {
        match &self.view {
            View::Owned(guard) => guard,
            View::Borrowed(cached) => cached,
        }
    }

    /// The access token.
    #[inline]
    pub fn access_token(&self) -> &AccessToken {
        &self.cached().access_token
    }

    /// The access token in the clear, for an `Authorization: Bearer` header.
    #[inline]
    pub fn secret(&self) -> &str {
        self.cached().access_token.expose_secret()
    }

    /// The `Authorization: Bearer …` header value, marked sensitive (so that `http` and its
    /// users leave it out of their `Debug` output).
    pub fn authorization(&self) -> HeaderValue {
        // Written once into a buffer of the right size that the header value then owns: one
        // allocation per request, where formatting and `from_str` made three (an adapter calls
        // this on every request it sends).
        let token = self.secret();
        let mut bytes = bytes::BytesMut::with_capacity(BEARER.len().saturating_add(token.len()));
        bytes.extend_from_slice(BEARER.as_bytes());
        bytes.extend_from_slice(token.as_bytes());
        let mut value = HeaderValue::from_maybe_shared(bytes.freeze())
            // An access token is printable ASCII; anything else cannot authenticate anyway.
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        value.set_sensitive(true);
        value
    }

    /// The base URL for API calls.
    pub fn instance_url(&self) -> &Url {
        &self.cached().instance_url
    }

    /// When the access token was issued, if Salesforce said.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.cached().issued_at
    }

    /// When the access token expires as far as the manager knows (from the response, a JWT
    /// `exp`, introspection, the configured session timeout or a learned lifetime), if at all.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let at = self.cached().expires_at_ms;
        (at != NEVER).then(|| clock::from_ms(at))
    }
}

/// The future of an `access_token` call: a fresh token's holds just what makes its guard (`R`,
/// a guard or a handle's borrow of its cached token), a miss's the boxed slow path `S`.
///
/// Not `Either<Ready<Result<AccessTokenGuard>>, S>`: that keeps a whole `Result` in every hit's
/// future, and an [`Error`](crate::Error) is 72 bytes with byte-sized fields right after its
/// tag, so the compiler moved each hit's future through the stack in unaligned pieces and the
/// loads after those stores stalled (issue #12). A handle's hit holds a plain borrow, so that
/// its future needs no drop at all once polled.
pub(crate) enum TokenFuture<R, S> {
    Ready(Option<R>),
    Slow(S),
}

impl<'a, R, S> Future for TokenFuture<R, S>
where
    R: IntoGuard<'a> + Unpin,
    S: Future<Output = Result<AccessTokenGuard<'a>>> + Unpin,
{
    type Output = Result<AccessTokenGuard<'a>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(ready) => match ready.take() {
                Some(ready) => Poll::Ready(Ok(ready.into_guard())),
                // As `std::future::Ready`, which this replaces, does.
                None => panic!("`access_token` polled after completion"),
            },
            Self::Slow(slow) => Pin::new(slow).poll(cx),
        }
    }
}

/// What a [`TokenFuture`] hit turns into its guard. Not `From`, which would put an impl naming
/// a crate-private type on the public guard.
pub(crate) trait IntoGuard<'a> {
    fn into_guard(self) -> AccessTokenGuard<'a>;
}

impl<'a> IntoGuard<'a> for AccessTokenGuard<'a> {
    #[inline]
    fn into_guard(self) -> AccessTokenGuard<'a> {
        self
    }
}

impl<'a> IntoGuard<'a> for &'a Cached {
    #[inline]
    fn into_guard(self) -> AccessTokenGuard<'a> {
        AccessTokenGuard::borrowed(self)
    }
}

impl fmt::Debug for AccessTokenGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenGuard")
            .field("instance_url", &self.cached().instance_url.as_str())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CachedState;

    fn cached(token: &str) -> Cached {
        Cached {
            access_token: AccessToken::new(token.to_owned()),
            instance_url: Url::parse("https://na1.my.salesforce.com").unwrap(),
            issued_at: None,
            version: 0,
            generation: 0,
            refresh_at_ms: NEVER,
            expires_at_ms: NEVER,
            obtained_at_ms: 0,
            state: CachedState::Active,
        }
    }

    #[test]
    fn authorization_is_the_bearer_header_marked_sensitive() {
        let token = "00D5e000000EMU1!AQ0AQ.token_value";
        let cached = cached(token);
        let value = AccessTokenGuard::borrowed(&cached).authorization();
        assert_eq!(value.as_bytes(), format!("Bearer {token}").as_bytes());
        assert!(value.is_sensitive());
        // A token that cannot be a header value is not sent in part.
        let cached = self::cached("bad\ntoken");
        let value = AccessTokenGuard::borrowed(&cached).authorization();
        assert_eq!(value, "Bearer");
    }
}
