//! The postgres sink's connection URL: parsed by tokio-postgres, shown with its password
//! hidden (reports, errors and the terminal never print it).

use std::fmt;
use std::str::FromStr;

use tokio_postgres::config::Host;

/// A parsed `postgres://user:password@host:port/database` URL.
#[derive(Clone)]
pub struct DbUrl {
    /// What tokio-postgres made of it.
    pub config: tokio_postgres::Config,
    shown: String,
}

impl DbUrl {
    /// Parses a URL (or libpq `key=value` string); `Err` when tokio-postgres cannot read it
    /// or it names no TCP host.
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
        if !config.get_hosts().iter().any(|h| matches!(h, Host::Tcp(_))) {
            return Err("the URL names no TCP host".into());
        }
        Ok(DbUrl {
            config,
            shown: redact(url),
        })
    }

    /// The first TCP host and its port (5432 when none is given).
    pub fn host_port(&self) -> (String, u16) {
        let host = self
            .config
            .get_hosts()
            .iter()
            .find_map(|h| match h {
                Host::Tcp(h) => Some(h.clone()),
                #[cfg(unix)]
                Host::Unix(_) => None,
            })
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        (host, port)
    }

    /// The user, password and database for the replication connection.
    pub fn credentials(&self) -> (String, String, String) {
        let user = self.config.get_user().unwrap_or("postgres").to_owned();
        let password = self
            .config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let db = self.config.get_dbname().unwrap_or(&user).to_owned();
        (user, password, db)
    }
}

impl fmt::Display for DbUrl {
    /// The URL with its password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// `url` with the password hidden: `user:***@` in a URL, `password=***` in key=value form.
pub fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    let re = regex::Regex::new(r"password\s*=\s*('[^']*'|\S+)").expect("a valid pattern");
    re.replace_all(url, "password=***").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        assert_eq!(
            redact("postgres://exactly:s3cr3t@127.0.0.1:5432/exactly"),
            "postgres://exactly:***@127.0.0.1:5432/exactly"
        );
        assert_eq!(
            redact("postgresql://u@h/db?sslmode=disable"),
            "postgresql://u@h/db?sslmode=disable"
        );
        assert_eq!(
            redact("host=h user=u password='a b' dbname=d"),
            "host=h user=u password=*** dbname=d"
        );
        let url = DbUrl::parse("postgres://exactly:s3cr3t@127.0.0.1:5433/db").unwrap();
        assert_eq!(url.host_port(), ("127.0.0.1".into(), 5433));
        assert_eq!(
            url.credentials(),
            ("exactly".into(), "s3cr3t".into(), "db".into())
        );
        assert!(!url.to_string().contains("s3cr3t"));
        assert!(DbUrl::parse("not a url at all ::").is_err());
    }
}
