//! [`SalesforceAuthLayer`] and [`SalesforceAuthService`]: what [`SalesforceAuth`] does for
//! reqwest, as a tower layer over `http::Request<B>` → `http::Response<ResBody>`, for clients
//! built from tower services (hyper-util's `Client`, tonic, an axum-style client stack).
//!
//! [`SalesforceAuth`]: crate::SalesforceAuth

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{Request, Response, Uri};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Either, Empty, Full};
use sfauth::{AccessTokenGuard, TokenKey, TokenManager};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument as _;

use crate::error::Error;
use crate::replay::{self, Aim};

/// The error of a [`SalesforceAuthService`], as tower's own middleware return theirs: the
/// inner service's error, an error reading a 401's body, or this crate's [`Error`], boxed.
/// Find ours with `error.downcast_ref::<sfauth_adapters::Error>()`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that can say whether it can be sent a second time, and give a copy if so.
///
/// [`SalesforceAuthService`] retries a request after a refresh only with such a copy: a body
/// already in memory ([`Full`], [`Empty`], [`Bytes`], `String`, `Vec<u8>`, `()`) is copied
/// cheaply; a streamed one ([`BoxBody`], [`UnsyncBoxBody`]) cannot be, and its 401 is returned.
/// [`Either`] of two such bodies lets one client send both kinds.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use sfauth_adapters::TryCloneBody;
///
/// let body = Full::new(Bytes::from_static(b"{}"));
/// assert!(body.try_clone_body().is_some());
/// ```
pub trait TryCloneBody: Sized {
    /// A copy of the body to send again, or `None` when it can be sent only once.
    fn try_clone_body(&self) -> Option<Self>;
}

impl<D: Clone> TryCloneBody for Full<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> TryCloneBody for Empty<D> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(*self)
    }
}

impl TryCloneBody for Bytes {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for String {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for Vec<u8> {
    fn try_clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryCloneBody for () {
    fn try_clone_body(&self) -> Option<Self> {
        Some(())
    }
}

impl<D, E> TryCloneBody for BoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<D, E> TryCloneBody for UnsyncBoxBody<D, E> {
    fn try_clone_body(&self) -> Option<Self> {
        None
    }
}

impl<L: TryCloneBody, R: TryCloneBody> TryCloneBody for Either<L, R> {
    fn try_clone_body(&self) -> Option<Self> {
        match self {
            Either::Left(left) => left.try_clone_body().map(Either::Left),
            Either::Right(right) => right.try_clone_body().map(Either::Right),
        }
    }
}

/// Wraps a service in a [`SalesforceAuthService`].
///
/// ```no_run
/// use sfauth_adapters::SalesforceAuthLayer;
/// use tower_layer::Layer as _;
///
/// # fn run<S>(manager: sfauth::TokenManager, key: sfauth::TokenKey, client: S) {
/// let authenticated = SalesforceAuthLayer::new(manager, key).layer(client);
/// # drop(authenticated);
/// # }
/// ```
#[derive(Clone)]
pub struct SalesforceAuthLayer {
    manager: TokenManager,
    key: Option<TokenKey>,
}

impl fmt::Debug for SalesforceAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceAuthLayer")
            .field(
                "tenant",
                &self.key.as_ref().map(|key| key.short().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl SalesforceAuthLayer {
    /// A layer for the one tenant `key` (a request may still name another in its extensions).
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager, key: sfauth::TokenKey) {
    /// let layer = sfauth_adapters::SalesforceAuthLayer::new(manager, key);
    /// # drop(layer);
    /// # }
    /// ```
    pub fn new(manager: TokenManager, key: TokenKey) -> Self {
        Self {
            manager,
            key: Some(key),
        }
    }

    /// A layer for whichever tenant each request names with a [`TokenKey`] in its extensions.
    ///
    /// ```no_run
    /// # fn run(manager: sfauth::TokenManager) {
    /// let layer = sfauth_adapters::SalesforceAuthLayer::per_request(manager);
    /// # drop(layer);
    /// # }
    /// ```
    pub fn per_request(manager: TokenManager) -> Self {
        Self { manager, key: None }
    }
}

impl<S> Layer<S> for SalesforceAuthLayer {
    type Service = SalesforceAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SalesforceAuthService {
            inner,
            manager: self.manager.clone(),
            key: self.key.clone(),
        }
    }
}

/// A tower service that authenticates requests to a tenant's Salesforce instance, as
/// [`SalesforceAuth`](crate::SalesforceAuth) does for reqwest:
///
/// - a request whose URI is relative (`/services/data/v62.0/limits`, which `http::Uri` allows)
///   or on the [`INSTANCE`](crate::INSTANCE) placeholder is aimed at the tenant's current
///   `instance_url`; one already on the instance keeps its path; one for another host is passed
///   on untouched, without the token;
/// - `Authorization: Bearer …` is set (marked sensitive);
/// - on a 401 whose body is Salesforce's `INVALID_SESSION_ID` "Session expired or invalid", the
///   dead token is reported with [`TokenManager::session_expired`] and the request is sent once
///   more with the new token, re-aimed at the (possibly migrated) instance, when its body is
///   [`TryCloneBody`] and gives a copy. At most one refresh per request.
///
/// # Bodies
///
/// Request bodies must be [`TryCloneBody`]: `Full<Bytes>` for requests that may be retried, an
/// [`Either`] with a boxed streaming body for a client that also streams. Responses are passed
/// through as `Either::Left(ResBody)` untouched; only a 401 that had to be read to be
/// understood (and is returned, not retried) comes back as `Either::Right(Full<Bytes>)` with
/// its status, headers and body as they were.
///
/// Errors are [`BoxError`]: the inner service's, or this crate's [`Error`] (downcast it to
/// match [`ErrorKind::ReauthorizationRequired`](crate::ErrorKind::ReauthorizationRequired)).
///
/// ```no_run
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use sfauth_adapters::{BoxError, Error, ErrorKind, SalesforceAuthService};
/// use tower_service::Service;
///
/// # async fn run<S, ResBody>(manager: sfauth::TokenManager, key: sfauth::TokenKey, client: S) -> Result<(), BoxError>
/// # where
/// #     S: Service<http::Request<Full<Bytes>>, Response = http::Response<ResBody>> + Clone + Send + 'static,
/// #     S::Future: Send,
/// #     S::Error: Into<BoxError>,
/// #     ResBody: http_body_util::BodyExt<Data = Bytes> + Send + 'static,
/// #     ResBody::Error: Into<BoxError>,
/// # {
/// let mut service = SalesforceAuthService::new(client, manager, key);
/// let request = http::Request::get("/services/data/v62.0/limits").body(Full::new(Bytes::new()))?;
/// std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
/// match service.call(request).await {
///     Ok(response) => println!("{}", response.status()),
///     Err(error) if error.downcast_ref::<Error>().map(Error::kind) == Some(ErrorKind::ReauthorizationRequired) => {
///         println!("ask the org's admin to connect again");
///     }
///     Err(error) => return Err(error),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SalesforceAuthService<S> {
    inner: S,
    manager: TokenManager,
    key: Option<TokenKey>,
}

impl<S: fmt::Debug> fmt::Debug for SalesforceAuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SalesforceAuthService")
            .field("inner", &self.inner)
            .field(
                "tenant",
                &self.key.as_ref().map(|key| key.short().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl<S> SalesforceAuthService<S> {
    /// `inner`, authenticated as the tenant `key` (a request may still name another in its
    /// extensions).
    ///
    /// ```no_run
    /// # fn run<S>(manager: sfauth::TokenManager, key: sfauth::TokenKey, client: S) {
    /// let service = sfauth_adapters::SalesforceAuthService::new(client, manager, key);
    /// # drop(service);
    /// # }
    /// ```
    pub fn new(inner: S, manager: TokenManager, key: TokenKey) -> Self {
        Self {
            inner,
            manager,
            key: Some(key),
        }
    }

    /// `inner`, authenticated as whichever tenant each request names with a [`TokenKey`] in its
    /// extensions.
    ///
    /// ```no_run
    /// # fn run<S>(manager: sfauth::TokenManager, client: S) {
    /// let service = sfauth_adapters::SalesforceAuthService::per_request(client, manager);
    /// # drop(service);
    /// # }
    /// ```
    pub fn per_request(inner: S, manager: TokenManager) -> Self {
        Self {
            inner,
            manager,
            key: None,
        }
    }

    /// The inner service.
    ///
    /// ```no_run
    /// # fn run(service: sfauth_adapters::SalesforceAuthService<()>) {
    /// let () = *service.get_ref();
    /// # }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```no_run
    /// # fn run(mut service: sfauth_adapters::SalesforceAuthService<()>) {
    /// let () = *service.get_mut();
    /// # }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    ///
    /// ```no_run
    /// # fn run(service: sfauth_adapters::SalesforceAuthService<()>) {
    /// let () = service.into_inner();
    /// # }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The future of a [`SalesforceAuthService`] (`'static`), or of its 401 path.
type ResponseFuture<'a, ResBody> = Pin<
    Box<dyn Future<Output = Result<Response<Either<ResBody, Full<Bytes>>>, BoxError>> + Send + 'a>,
>;

impl<S, B, ResBody> Service<Request<B>> for SalesforceAuthService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: TryCloneBody + Send + 'static,
    // `BodyExt` names `http_body::Body` (its blanket subtrait): this crate depends on
    // http-body-util alone.
    ResBody: BodyExt<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = BoxError;
    type Future = ResponseFuture<'static, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was made ready goes with this call; this one keeps a fresh clone
        // (the usual tower way to own the inner service in a `'static` future).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let key = match replay::tenant(request.extensions().get(), self.key.as_ref()) {
            Ok(key) => key.clone(),
            Err(error) => return Box::pin(std::future::ready(Err(error.into()))),
        };
        let manager = self.manager.clone();
        let span = replay::span(&key);
        Box::pin(
            async move {
                let response = send(inner, manager, &key, request).await;
                if let Ok(response) = &response {
                    tracing::Span::current().record("status", response.status().as_u16());
                }
                response
            }
            .instrument(span),
        )
    }
}

async fn send<S, B, ResBody>(
    mut inner: S,
    manager: TokenManager,
    key: &TokenKey,
    mut request: Request<B>,
) -> Result<Response<Either<ResBody, Full<Bytes>>>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: TryCloneBody + Send,
    ResBody: BodyExt<Data = Bytes> + Send,
    ResBody::Error: Into<BoxError>,
{
    let token = manager.access_token(key).await.map_err(Error::from)?;
    let (aim, path_and_query) = aim_of(request.uri(), token.instance_url());
    if aim == Aim::Elsewhere {
        let response = inner.call(request).await.map_err(Into::into)?;
        return Ok(response.map(Either::Left));
    }
    // Copied before the token is set, so that the copy carries no stale header.
    let replay = try_clone(&request);
    aim_at(&mut request, aim, &path_and_query, &token)?;
    let response = inner.call(request).await.map_err(Into::into)?;
    if !replay::worth_reading(response.status(), || content_length(&response)) {
        return Ok(response.map(Either::Left));
    }
    // Out of line and boxed, and made only on a 401: the refresh makes this part's future
    // several kilobytes large, which every request would otherwise allocate and move.
    after_401(
        inner,
        manager,
        key,
        token,
        aim,
        path_and_query,
        replay,
        response,
    )
    .await
}

#[inline(never)]
#[allow(
    clippy::too_many_arguments,
    reason = "the state of one request, handed over whole"
)]
fn after_401<'a, S, B, ResBody>(
    mut inner: S,
    manager: TokenManager,
    key: &'a TokenKey,
    token: AccessTokenGuard<'static>,
    aim: Aim,
    path_and_query: String,
    replay: Option<Request<B>>,
    response: Response<ResBody>,
) -> ResponseFuture<'a, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send + 'a,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: TryCloneBody + Send + 'a,
    ResBody: BodyExt<Data = Bytes> + Send + 'a,
    ResBody::Error: Into<BoxError>,
{
    Box::pin(async move {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(Into::into)?.to_bytes();
        let Some(mut retry) = replay.filter(|_| replay::refreshable(parts.status, &body)) else {
            return Ok(Response::from_parts(parts, Either::Right(Full::new(body))));
        };
        // The 401 means the request was refused before anything was done, so sending a POST
        // again does not do its work twice.
        let fresh = manager
            .session_expired(key, token.access_token())
            .await
            .map_err(Error::from)?;
        drop(token);
        replay::record_retry(&tracing::Span::current());
        aim_at(&mut retry, aim, &path_and_query, &fresh)?;
        poll_fn(|cx| inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        let response = inner.call(retry).await.map_err(Into::into)?;
        Ok(response.map(Either::Left))
    })
}

/// A copy of `request` to send again, if its body gives one.
fn try_clone<B: TryCloneBody>(request: &Request<B>) -> Option<Request<B>> {
    let mut copy = Request::new(request.body().try_clone_body()?);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// Where `uri` is aimed for a tenant on `instance`, and its path with the query.
fn aim_of(uri: &Uri, instance: &url::Url) -> (Aim, String) {
    let aim = replay::aim(
        uri.scheme_str().unwrap_or("https"),
        uri.host(),
        uri.port_u16(),
        instance,
    );
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    (aim, path_and_query.to_owned())
}

/// Points `request` at the instance of `token` and sets its `Authorization` header.
fn aim_at<B>(
    request: &mut Request<B>,
    aim: Aim,
    path_and_query: &str,
    token: &AccessTokenGuard<'_>,
) -> Result<(), Error> {
    let target = replay::target(aim, path_and_query, token.instance_url())
        .and_then(|target| target.parse::<Uri>().ok())
        .ok_or(Error::InvalidTarget)?;
    *request.uri_mut() = target;
    request
        .headers_mut()
        .insert(AUTHORIZATION, token.authorization());
    Ok(())
}

fn content_length<T>(response: &Response<T>) -> Option<u64> {
    response
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
