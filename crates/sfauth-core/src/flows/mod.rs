//! The flows: each builds a request, sends it over an [`HttpTransport`](crate::http::HttpTransport)
//! and parses the answer. They are methods of [`OAuthClient`](crate::OAuthClient); this module
//! holds their input and output types.

mod grants;
mod introspect;

pub use grants::{TokenExchange, token_type};
pub use introspect::Introspection;
