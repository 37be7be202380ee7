//! `sfauth open [ALIAS] [--path P] [--url-only]`: opens the org in a browser as `sf org open`
//! does.
//!
//! The URL is a single-access frontdoor URL: `{instance_url}/services/oauth2/singleaccess` with
//! the access token as a bearer answers `{"frontdoor_uri": ".../secur/frontdoor.jsp?otp=..."}`,
//! a one-time password that starts a UI session (the Single-Access UI Bridge API, which
//! `sf org open` calls since plugin-org 4). A token without the `web` or `full` scope, or an
//! org that does not serve that API, falls back to `frontdoor.jsp?sid=`, which carries the
//! access token itself.

use serde::Deserialize;
use url::Url;

use crate::cli::OpenArgs;
use crate::commands::api::Authed;
use crate::error::{CliError, Result};
use crate::session::Context;

#[derive(Deserialize)]
struct SingleAccess {
    frontdoor_uri: String,
}

/// `sfauth open`.
pub(crate) async fn run(args: &OpenArgs, ctx: &Context) -> Result<()> {
    let alias = ctx.alias(args.alias.given());
    let start = args.path.as_deref().map(start_path).transpose()?;
    let mut authed = Authed::open(&alias, ctx).await?;
    let form = match &start {
        Some(path) => url::form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect_uri", path)
            .finish(),
        None => String::new(),
    };
    let response = authed
        .send("asking for a frontdoor URL", |instance, authorization| {
            http::Request::post(format!("{instance}/services/oauth2/singleaccess"))
                .header(http::header::AUTHORIZATION, authorization)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(http::header::ACCEPT, "application/json")
                .body(bytes::Bytes::from(form.clone()))
                .map_err(|e| CliError::other(format!("cannot build the request ({e})")))
        })
        .await?;
    let instance = authed.instance();
    let single = response
        .status()
        .is_success()
        .then(|| serde_json::from_slice::<SingleAccess>(response.body()).ok())
        .flatten()
        .and_then(|s| on_instance(&s.frontdoor_uri, &instance));
    let url = match single {
        Some(url) => url,
        None => {
            eprintln!(
                "note: the single-access API answered {} for alias {alias} (a token without the `web` scope is refused): using frontdoor.jsp with the session id",
                response.status().as_u16()
            );
            let mut url = Url::parse(&format!("{instance}/secur/frontdoor.jsp")).map_err(|e| {
                CliError::other(format!(
                    "the instance URL of alias {alias} is not usable ({e})"
                ))
            })?;
            url.query_pairs_mut()
                .append_pair("sid", authed.guard.secret());
            if let Some(path) = &start {
                url.query_pairs_mut().append_pair("retURL", path);
            }
            url
        }
    };
    if args.url_only {
        eprintln!(
            "warning: this URL logs whoever opens it in as alias {alias}'s user: do not paste it into chats, tickets or logs"
        );
        println!("{url}");
        return Ok(());
    }
    webbrowser::open(url.as_str()).map_err(|e| {
        CliError::other(format!(
            "cannot open a browser ({e}): set BROWSER, or run `sfauth open {alias} --url-only` and open the URL yourself"
        ))
    })?;
    eprintln!("Opened alias {alias} in your browser.");
    Ok(())
}

/// `--path`: a path on the instance, so that the URL cannot land somewhere else.
fn start_path(path: &str) -> Result<String> {
    if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') {
        Ok(path.to_owned())
    } else {
        Err(CliError::usage(format!(
            "--path {path} is not a path on the instance: give one that starts with /, such as /lightning/setup/SetupOneHome/home"
        )))
    }
}

/// The frontdoor URL, if it is on the instance's host: a URL that would hand the one-time
/// password to another host is not opened.
fn on_instance(uri: &str, instance: &str) -> Option<Url> {
    let url = Url::parse(uri).ok()?;
    let instance = Url::parse(instance).ok()?;
    (url.origin() == instance.origin() && url.path().ends_with("/secur/frontdoor.jsp"))
        .then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_frontdoor_urls_on_the_instance() {
        let instance = "https://acme.my.salesforce.com";
        assert!(
            on_instance(
                "https://acme.my.salesforce.com/secur/frontdoor.jsp?otp=x",
                instance
            )
            .is_some()
        );
        assert!(on_instance("https://evil.test/secur/frontdoor.jsp?otp=x", instance).is_none());
        assert!(on_instance("https://acme.my.salesforce.com/other?otp=x", instance).is_none());
        assert!(start_path("https://evil.test").is_err());
        assert!(start_path("/lightning/setup/SetupOneHome/home").is_ok());
    }
}
