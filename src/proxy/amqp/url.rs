//! The broker URL the consumer was configured with, cut around the `host:port` the proxy puts
//! its own listener in (credentials, vhost and query kept), and shown with its password hidden.
//!
//! Pure. Invariant: only `amqp://` is accepted (the proxy speaks plain AMQP); a password never
//! appears in a message.

/// Why a broker URL cannot be proxied (shown after "amqp proxy: bad broker url URL: ").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum UrlError {
    /// No `scheme://`.
    #[error("it has no scheme; write amqp://user:password@host:5672/%2f")]
    NoScheme,
    /// `amqps://`: the proxy speaks plain AMQP only.
    #[error("amqps:// (TLS) is not supported by the proxy; use amqp://")]
    Tls,
    /// A scheme other than amqp.
    #[error("unknown scheme {0}://; use amqp://")]
    UnknownScheme(String),
    /// An IPv6 host whose `[` is not closed.
    #[error("unclosed [ in the host")]
    UnclosedBracket,
    /// A port that is not a number from 0 to 65535.
    #[error("bad port {0:?}")]
    BadPort(String),
}

/// The upstream URL cut where the proxy's address goes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UrlParts {
    /// `amqp://user:pass@`
    pub(super) prefix: String,
    /// The broker's `host:port` to connect to.
    pub(super) address: String,
    /// `/vhost?query`, possibly empty.
    pub(super) suffix: String,
}

/// Splits `amqp://user:pass@host:port/vhost?query` into the parts around `host:port`.
pub(super) fn split_url(url: &str) -> Result<UrlParts, UrlError> {
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::NoScheme)?;
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" => {}
        "amqps" => return Err(UrlError::Tls),
        other => return Err(UrlError::UnknownScheme(other.to_string())),
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, suffix) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let close = h.find(']').ok_or(UrlError::UnclosedBracket)?;
        let port = h[close + 1..].strip_prefix(':').unwrap_or("");
        (format!("[{}]", &h[..close]), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    let host = if host.is_empty() {
        "localhost".to_string()
    } else {
        host
    };
    let port: u16 = if port.is_empty() {
        5672
    } else {
        port.parse()
            .map_err(|_| UrlError::BadPort(port.to_string()))?
    };
    Ok(UrlParts {
        prefix: format!("{scheme}://{userinfo}"),
        address: format!("{host}:{port}"),
        suffix: suffix.to_string(),
    })
}

/// `url` with the password replaced by `***`, for messages.
pub(super) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{scheme}://{}:***{}", &authority[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}
