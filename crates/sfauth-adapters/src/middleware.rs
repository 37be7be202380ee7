//! [`SalesforceAuth`]: a reqwest-middleware [`Middleware`] that carries a tenant's valid access
//! token on every request, and renews it once when Salesforce says the session is dead.

use std::fmt;
use std::sync::{Arc, Mutex};

use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{Extensions, HeaderValue};
use reqwest::{Request, Response, Url};
use reqwest_middleware::{Middleware, Next};
use sfauth::{TokenKey, TokenManager};
use tracing::{Instrument as _, Span};

use crate::error::Error;
use crate::replay::{self, Aim};

/// Awaits `future` in `span`, entered on each poll only when somebody listens. A macro rather
/// than an `async fn`, whose future would hold `future` twice more in the middleware's own.
macro_rules! in_span {
    ($span:expr, $future:expr) => {
        if $span.is_disabled() {
            $future.await
        } else {
            $future.instrument($span.clone()).await
        }
    };
}

/// A reqwest-middleware [`Middleware`] that authenticates requests to a tenant's Salesforce
/// instance with the [`TokenManager`]'s token.
///
/// For each request it:
///
/// - takes the tenant's access token from the manager (from its cache, or refreshed first);
/// - aims the request at the tenant's current `instance_url` when its URL is on the
///   [`INSTANCE`](crate::INSTANCE) placeholder (write `client.get(instance("/services/data/…"))`
///   with [`instance`](crate::instance): reqwest refuses a relative URL before any middleware
///   runs), or leaves it where it is when it is already on the instance;
/// - sets `Authorization: Bearer …` (marked sensitive);
/// - on a 401 whose body is Salesforce's `INVALID_SESSION_ID` "Session expired or invalid",
///   reports the dead token with [`TokenManager::session_expired`] (concurrent requests that saw
///   the same dead token share one refresh) and sends the request once more with the new token,
///   re-aimed at the (possibly migrated) instance. Only when the body can be sent again (none,
///   or one [`Request::try_clone`] copies): a streamed body is never retried, its 401 is
///   returned.
///
/// It refreshes at most once per request, never in a loop: the second answer is returned
/// whatever it is. A 401 a refresh does not fix ("This session is not valid for use with the
/// REST API", any other 401 body) and every 403 are returned as they are.
///
/// A request for another host is sent untouched, without the token: the token never leaves for
/// a host that is not the tenant's instance.
///
/// # Which tenant
///
/// [`SalesforceAuth::new`] serves one tenant. [`SalesforceAuth::per_request`] serves any: name
/// the tenant on each request with
/// `reqwest_middleware::RequestBuilder::with_extension(key)`. A key in the request's extensions
/// wins over the middleware's own; a request naming none fails with
/// [`Error::NoTenant`](crate::Error::NoTenant).
///
/// # Tracing
///
/// Each request runs in an `INFO` span named `sfauth.request` with the tenant's short key, the
/// attempt (2 after a refresh), whether it refreshed, and the final status; never a token, a
/// header or a query string. It is made only when a `tracing` subscriber takes `INFO`.
///
/// # Errors
///
/// The middleware's own failures (a tenant that needs a new login, a refresh that failed, no
/// tenant named) come back as `reqwest_middleware::Error::Middleware` wrapping this crate's
/// [`Error`](crate::Error); [`adapter_error`] finds it, or downcast the `anyhow::Error` yourself
/// (`error.downcast_ref::<sfauth_adapters::Error>()`). Network errors stay
/// `reqwest_middleware::Error::Reqwest`.
///
/// # Example
///
/// ```no_run
/// use sfauth_adapters::{ErrorKind, SalesforceAuth, adapter_error, instance};
///
/// # async fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) -> Result<(), Box<dyn std::error::Error>> {
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(SalesforceAuth::new(manager, key))
///     .build();
/// match client
///     .get(instance("/services/data/v62.0/query?q=SELECT+Id+FROM+Account"))
///     .send()
///     .await
/// {
///     Ok(response) => println!("{}", response.text().await?),
///     Err(error) if adapter_error(&error).map(|e| e.kind()) == Some(ErrorKind::ReauthorizationRequired) => {
///         println!("ask the org's admin to connect again");
///     }
///     Err(error) => return Err(error.into()),
/// }
/// # Ok(())
/// # }
/// ```
///
/// Per request, for many tenants:
///
/// ```no_run
/// use sfauth_adapters::{SalesforceAuth, instance};
///
/// # async fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) -> reqwest_middleware::Result<()> {
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(SalesforceAuth::per_request(manager))
///     .build();
/// let limits = client
///     .get(instance("/services/data/v62.0/limits"))
///     .with_extension(key)
///     .send()
///     .await?;
/// # drop(limits);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SalesforceAuth {
    manager: TokenManager,
    key: Option<TokenKey>,
    /// The `Authorization` value made for the last request, reused while the token is the same:
    /// making one copies and checks the token byte by byte and allocates (about 450
    /// instructions), a reuse compares it and bumps a reference count. One slot, shared by the
    /// clones: a middleware for one tenant always hits it.
    authorization: Arc<Mutex<Option<HeaderValue>>>,
}

impl fmt::Debug for SalesforceAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceAuth")
            .field(
                "tenant",
                &self.key.as_ref().map(|key| key.short().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl SalesforceAuth {
    /// A middleware for the one tenant `key` (a request may still name another in its
    /// extensions).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) {
    /// let auth = sfauth_adapters::SalesforceAuth::new(manager, key);
    /// # drop(auth);
    /// # }
    /// ```
    pub fn new(manager: TokenManager, key: TokenKey) -> Self {
        Self {
            manager,
            key: Some(key),
            authorization: Arc::default(),
        }
    }

    /// A middleware for whichever tenant each request names in its extensions
    /// (`RequestBuilder::with_extension(key)`).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let auth = sfauth_adapters::SalesforceAuth::per_request(manager);
    /// # drop(auth);
    /// # }
    /// ```
    pub fn per_request(manager: TokenManager) -> Self {
        Self {
            manager,
            key: None,
            authorization: Arc::default(),
        }
    }

    /// The token manager.
    ///
    /// ```no_run
    /// # fn run(auth: sfauth_adapters::SalesforceAuth) {
    /// println!("{:?}", auth.manager().stats());
    /// # }
    /// ```
    pub fn manager(&self) -> &TokenManager {
        &self.manager
    }

    /// The middleware's own tenant, if it has one.
    ///
    /// ```no_run
    /// # fn run(auth: sfauth_adapters::SalesforceAuth) {
    /// if let Some(key) = auth.key() {
    ///     println!("for {}", key.short());
    /// }
    /// # }
    /// ```
    pub fn key(&self) -> Option<&TokenKey> {
        self.key.as_ref()
    }

    /// The `Authorization` value for `token`: the last one made, if it carries this token.
    fn authorization(&self, token: &sfauth::AccessTokenGuard<'_>) -> HeaderValue {
        // A request that finds the slot busy (or poisoned) makes its own value rather than wait.
        let Ok(mut last) = self.authorization.try_lock() else {
            return token.authorization();
        };
        let secret = token.secret().as_bytes();
        if let Some(value) = last.as_ref()
            && value.as_bytes().strip_prefix(BEARER) == Some(secret)
        {
            return value.clone();
        }
        let value = token.authorization();
        *last = Some(value.clone());
        value
    }

    /// The request whose body cannot be copied (a stream): aimed, authenticated and sent once,
    /// its answer returned whatever it is. Out of line and boxed, as it is rare.
    #[inline(never)]
    fn send_once<'a>(
        &'a self,
        span: &'a Span,
        token: sfauth::AccessTokenGuard<'static>,
        placed: Placement,
        mut request: Request,
        extensions: &'a mut Extensions,
        next: Next<'a>,
    ) -> BoxFuture<'a, reqwest_middleware::Result<Response>> {
        Box::pin(async move {
            aim_at(&mut request, placed, &token, self.authorization(&token))?;
            drop(token);
            let response = in_span!(span, next.run(request, extensions));
            record_status(span, &response);
            response
        })
    }

    #[inline(never)]
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one request, handed over whole"
    )]
    fn after_401<'a>(
        &'a self,
        key: &'a TokenKey,
        span: &'a Span,
        token: sfauth::AccessTokenGuard<'static>,
        placed: Placement,
        mut retry: Request,
        response: Response,
        extensions: &'a mut Extensions,
        next: Next<'a>,
    ) -> BoxFuture<'a, reqwest_middleware::Result<Response>> {
        Box::pin(async move {
            let (response, body) = buffer(response).await?;
            if !replay::refreshable(response.status(), &body) {
                return Ok(rebuild(response, body));
            }
            // The 401 means the request was refused before anything was done, so sending a
            // POST again does not do its work twice.
            let fresh = self
                .manager
                .session_expired(key, token.access_token())
                .await
                .map_err(middleware)?;
            drop(token);
            replay::record_retry(span);
            // The new token's instance may have moved (a migration): the retry is placed
            // against it, keeping the first aim (a path on the placeholder stays one, and is
            // never sent as it is).
            let again = Placement {
                aim: placed.aim,
                as_is: aim_of(retry.url(), fresh.instance_url()).as_is,
            };
            aim_at(&mut retry, again, &fresh, self.authorization(&fresh))?;
            next.run(retry, extensions).await
        })
    }
}

/// A boxed future, as reqwest-middleware's own.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Middleware for SalesforceAuth {
    // Written out rather than through `async_trait`, which would keep a second copy of the
    // request in the future it boxes for every request. The future is kept small on purpose (a
    // few hundred bytes: no copy of the request beside the one sent, the rare paths boxed out of
    // line), as every request allocates and moves it.
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        request: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> BoxFuture<'async_trait, reqwest_middleware::Result<Response>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            // The request's extensions go down the chain mutably, so a key named there is
            // copied out of them (boxed, to keep the future small); the middleware's own is only
            // borrowed.
            let named = extensions
                .get::<TokenKey>()
                .map(|key| Box::new(key.clone()));
            let key = replay::tenant(named.as_deref(), self.key.as_ref()).map_err(middleware)?;
            let span = replay::span(key);
            let token = in_span!(span, self.manager.access_token(key)).map_err(middleware)?;
            let placed = aim_of(request.url(), token.instance_url());
            if placed.aim == Aim::Elsewhere {
                drop(token);
                let response = in_span!(span, next.run(request, extensions));
                record_status(&span, &response);
                return response;
            }
            // The copy is sent and the request kept for a retry, both before the token is set,
            // so that the one kept carries no stale header. A streamed body cannot be copied,
            // nor sent twice.
            // The copy lives in this block alone: a local that lived on past the send's await,
            // even moved out, would keep a second request's room (264 bytes) in this future.
            let sending = match copy(&request) {
                Some(mut sent) => {
                    aim_at(&mut sent, placed, &token, self.authorization(&token))?;
                    next.clone().run(sent, extensions)
                }
                None => {
                    return self
                        .send_once(&span, token, placed, request, extensions, next)
                        .await;
                }
            };
            let response = in_span!(span, sending);
            let response = match response {
                Ok(response)
                    if replay::worth_reading(response.status(), || content_length(&response)) =>
                {
                    response
                }
                response => {
                    record_status(&span, &response);
                    return response;
                }
            };
            // Out of line and boxed, and made only on a 401: reading the body, the refresh and
            // the retry make a future several kilobytes large (the manager's refresh is in it),
            // which every request would otherwise carry and move.
            let response = in_span!(
                span,
                self.after_401(
                    key, &span, token, placed, request, response, extensions, next
                )
            );
            record_status(&span, &response);
            response
        })
    }
}

/// Records the final status in `span`.
fn record_status(span: &Span, response: &reqwest_middleware::Result<Response>) {
    // A disabled span still looks the field up by name before it finds nobody to tell.
    if span.is_disabled() {
        return;
    }
    if let Ok(response) = response {
        span.record("status", response.status().as_u16());
    }
}

/// This crate's [`Error`](crate::Error) inside a `reqwest_middleware::Error`, if that is what
/// `error` is: how a caller of a client with [`SalesforceAuth`] tells "this tenant must log in
/// again" ([`ErrorKind::ReauthorizationRequired`](crate::ErrorKind::ReauthorizationRequired))
/// from a network error.
///
/// ```
/// use sfauth_adapters::{Error, adapter_error};
///
/// let error = reqwest_middleware::Error::middleware(Error::NoTenant);
/// assert!(matches!(adapter_error(&error), Some(Error::NoTenant)));
/// ```
pub fn adapter_error(error: &reqwest_middleware::Error) -> Option<&Error> {
    match error {
        reqwest_middleware::Error::Middleware(error) => error.downcast_ref::<Error>(),
        _ => None,
    }
}

/// `error` as reqwest-middleware carries a middleware's failure.
fn middleware(error: impl Into<Error>) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error.into())
}

/// Where a request's URL is aimed for a tenant, and whether it can be sent there as it is.
#[derive(Clone, Copy)]
struct Placement {
    aim: Aim,
    /// An absolute URL already on the instance, which rebuilding would give back unchanged at
    /// the cost of a parse: one without user information or a fragment (a rebuilt URL has
    /// neither, beyond the instance's own).
    as_is: bool,
}

/// Where `url` is aimed for a tenant on `instance`.
fn aim_of(url: &Url, instance: &Url) -> Placement {
    let (aim, same_origin) = replay::aim_url(url, instance);
    let as_is = aim == Aim::Instance
        && url.fragment().is_none()
        && (same_origin || (url.username().is_empty() && url.password().is_none()));
    Placement { aim, as_is }
}

/// The scheme in front of the token in the `Authorization` header `AccessTokenGuard` makes.
const BEARER: &[u8] = b"Bearer ";

/// Points `request` (still at the URL it was built with) at the instance of `token`, unless it
/// can be sent as it is, and sets its `Authorization` header to `authorization`. `placed` is
/// where the URL stands against that token's instance.
fn aim_at(
    request: &mut Request,
    placed: Placement,
    token: &sfauth::AccessTokenGuard<'_>,
    authorization: HeaderValue,
) -> reqwest_middleware::Result<()> {
    if !placed.as_is {
        let url = request.url();
        let path_and_query = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let target = replay::target_url(placed.aim, path_and_query, token.instance_url())
            .ok_or_else(|| middleware(Error::InvalidTarget))?;
        *request.url_mut() = target;
    }
    request.headers_mut().insert(AUTHORIZATION, authorization);
    Ok(())
}

/// A copy of `request`, or `None` when its body cannot be copied (a stream).
///
/// A request without a body (most API calls: GET, DELETE) is copied by hand: reqwest 0.13's
/// `Request::try_clone` sets the copy's timeout through the request's private extensions, which
/// allocates a map for them even when there is no timeout, then drops that map to copy the
/// extensions over it (about 600 of its 1,100 instructions, on every request). Those extensions
/// are reqwest's own (no public call reads or writes them) and hold nothing but that timeout,
/// the one thing `Client::execute` reads from them; so method, URL, headers, version and timeout
/// are the whole of such a request. A body is copied by `try_clone` alone (reqwest keeps the
/// cheap copy of a body to itself).
fn copy(request: &Request) -> Option<Request> {
    if request.body().is_some() {
        return request.try_clone();
    }
    let mut copy = Request::new(request.method().clone(), request.url().clone());
    // Cloning an empty header map (the usual request: the token is set afterwards) and dropping
    // the clone costs about 200 instructions; the new request's own empty map costs nothing.
    if !request.headers().is_empty() {
        *copy.headers_mut() = request.headers().clone();
    }
    *copy.version_mut() = request.version();
    if let Some(timeout) = request.timeout() {
        *copy.timeout_mut() = Some(*timeout);
    }
    Some(copy)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A URL is sent as it is only when rebuilding it would give it back unchanged.
    #[test]
    fn only_a_plain_url_on_the_instance_is_sent_as_it_is() {
        let url = |s: &str| Url::parse(s).unwrap();
        let plain = url("http://127.0.0.1:8080");
        let with_user = url("https://u@na1.my.salesforce.com");
        // Request, instance, aim, sent as it is.
        let cases = [
            ("http://127.0.0.1:8080/x?q=1", &plain, Aim::Instance, true),
            ("HTTP://127.0.0.1:8080/x", &plain, Aim::Instance, true),
            ("http://u:p@127.0.0.1:8080/x", &plain, Aim::Instance, false),
            ("http://127.0.0.1:8080/x#top", &plain, Aim::Instance, false),
            ("https://sfauth.invalid/x", &plain, Aim::Relative, false),
            ("http://127.0.0.1:9/x", &plain, Aim::Elsewhere, false),
            (
                "https://u@na1.my.salesforce.com/x",
                &with_user,
                Aim::Instance,
                true,
            ),
            (
                "https://na1.my.salesforce.com/x",
                &with_user,
                Aim::Instance,
                true,
            ),
            (
                "https://v@na1.my.salesforce.com/x",
                &with_user,
                Aim::Instance,
                false,
            ),
        ];
        for (request, instance, aim, as_is) in cases {
            let request = url(request);
            let placed = aim_of(&request, instance);
            assert_eq!(
                (placed.aim, placed.as_is),
                (aim, as_is),
                "{request} on {instance}"
            );
            // What `aim_at` would build in its place is the same URL when it is sent as it is
            // (but for an instance's own user information, which a request need not repeat).
            if placed.aim != Aim::Elsewhere && instance.username().is_empty() {
                let path_and_query = &request[url::Position::BeforePath..url::Position::AfterQuery];
                let rebuilt = replay::target_url(placed.aim, path_and_query, instance).unwrap();
                assert_eq!(rebuilt == request, as_is, "{request} on {instance}");
            }
        }
    }

    /// A copy made by hand is the request `try_clone` makes, field by field. (A streamed body,
    /// which has no copy, is tests/it/middleware.rs's `a_streamed_body_is_not_sent_twice`.)
    #[test]
    fn a_copy_is_the_whole_request() {
        let client = reqwest::Client::new();
        let with_everything = client
            .delete("https://sfauth.invalid/services/data/v62.0/sobjects/Account/001?x=1")
            .header("x-custom", "1")
            .version(http::Version::HTTP_2)
            .timeout(Duration::from_secs(7))
            .build()
            .unwrap();
        let bare = client.get("https://sfauth.invalid/").build().unwrap();
        let with_body = client
            .post("https://sfauth.invalid/")
            .body("sent twice")
            .build()
            .unwrap();
        for request in [with_everything, bare, with_body] {
            let copy = copy(&request).unwrap();
            let clone = request.try_clone().unwrap();
            assert_eq!(copy.method(), clone.method());
            assert_eq!(copy.url(), clone.url());
            assert_eq!(copy.headers(), clone.headers());
            assert_eq!(copy.version(), clone.version());
            assert_eq!(copy.timeout(), clone.timeout());
            assert_eq!(
                copy.body().and_then(reqwest::Body::as_bytes),
                clone.body().and_then(reqwest::Body::as_bytes)
            );
        }
    }
}

fn content_length(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads the body of `response`, keeping everything else of it (status, version, headers,
/// extensions, URL) to give the response back unchanged.
async fn buffer(
    response: Response,
) -> reqwest_middleware::Result<(http::Response<()>, bytes::Bytes)> {
    let url = response.url().clone();
    let http: http::Response<reqwest::Body> = response.into();
    let (parts, body) = http.into_parts();
    // Back into a reqwest response with the body alone, to read it with reqwest's own reader.
    let bytes = Response::from(http::Response::new(body)).bytes().await?;
    let mut head = http::Response::from_parts(parts, ());
    head.extensions_mut().insert(ResponseUrl(url));
    Ok((head, bytes))
}

/// The response's URL, carried through [`buffer`] to [`rebuild`].
#[derive(Clone)]
struct ResponseUrl(Url);

/// `head` with `body` as a reqwest response again, with its URL.
fn rebuild(mut head: http::Response<()>, body: bytes::Bytes) -> Response {
    use reqwest::ResponseBuilderExt as _;

    let url = head.extensions_mut().remove::<ResponseUrl>();
    let (mut parts, ()) = head.into_parts();
    if let Some(ResponseUrl(url)) = url {
        // `ResponseBuilderExt::url` is reqwest's one public way to give a built response its URL.
        let carrier = http::Response::builder().url(url).body(());
        if let Ok(carrier) = carrier {
            parts.extensions.extend(carrier.into_parts().0.extensions);
        }
    }
    Response::from(http::Response::from_parts(parts, body))
}
