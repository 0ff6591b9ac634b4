//! Who wrote a committed transaction. A statement trigger the sink installs for the run on the
//! watched table emits a transactional logical message (`pg_logical_emit_message`) carrying
//! the writing backend's pid and its connection's two ends (`inet_client_addr/port`,
//! `inet_server_addr/port`, what `pg_stat_activity` shows as `client_addr`/`client_port`); it
//! arrives inside the transaction in the replication stream. The client end is then looked up
//! in `/proc` by the reader the HTTP sink uses ([`SocketOwners`]): the consumer process that
//! holds that socket wrote the row. A consumer connected over a unix socket, from another host
//! or network namespace, or gone before the lookup, is `unknown` with the reason.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::sink::owner::{Owner, SocketOwners, Unknown};
use crate::timeline::{AttributedBy, Attribution};

/// How long one socket-owner lookup may take.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// The prefix of the trigger's logical messages.
pub const MESSAGE_PREFIX: &str = "exactly.writer";

/// The writing backend, as its trigger message told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The backend's pid (on the database host).
    pub pid: u32,
    /// The client's end of the connection, when it came over TCP.
    pub client: Option<SocketAddr>,
    /// The server's end of it.
    pub server: Option<SocketAddr>,
}

impl Backend {
    /// Reads `pid client_addr client_port server_addr server_port` (concat_ws skips NULLs,
    /// so a unix-socket connection is the pid alone).
    pub fn parse(text: &str) -> Option<Backend> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let pid = parts.first()?.parse().ok()?;
        let addr = |ip: Option<&&str>, port: Option<&&str>| -> Option<SocketAddr> {
            Some(SocketAddr::new(
                ip?.parse::<IpAddr>().ok()?,
                port?.parse().ok()?,
            ))
        };
        Some(Backend {
            pid,
            client: addr(parts.get(1), parts.get(2)),
            server: addr(parts.get(3), parts.get(4)),
        })
    }
}

/// The SQL that installs the writer trigger `name` on `table` (dropped by [`drop_sql`]).
pub fn install_sql(name: &str, table: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ \
         BEGIN PERFORM pg_logical_emit_message(true, '{MESSAGE_PREFIX}', concat_ws(' ', \
         pg_backend_pid(), host(inet_client_addr()), inet_client_port(), \
         host(inet_server_addr()), inet_server_port())); RETURN NULL; END $$; \
         CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table} \
         FOR EACH STATEMENT EXECUTE FUNCTION {name}();"
    )
}

/// The SQL that removes the writer trigger again.
pub fn drop_sql(name: &str, table: &str) -> String {
    format!("DROP TRIGGER IF EXISTS {name} ON {table}; DROP FUNCTION IF EXISTS {name}();")
}

/// Who made a transaction's effects: (instance, incarnation) and the evidence.
pub async fn attribute(
    owners: &SocketOwners,
    backend: Option<Backend>,
) -> ((Option<u32>, Option<u32>), Attribution) {
    let unknown = |note: String| {
        (
            (None, None),
            Attribution {
                by: Some(AttributedBy::Unknown),
                note: Some(note),
                ..Attribution::default()
            },
        )
    };
    let Some(backend) = backend else {
        return unknown("the transaction carried no writer message (the trigger was not installed, or the row came from a session that bypassed it)".into());
    };
    let (Some(client), Some(server)) = (backend.client, backend.server) else {
        return unknown(format!(
            "backend pid {} is connected over a unix socket: no TCP client port to trace",
            backend.pid
        ));
    };
    match lookup(owners, client, server, backend.pid).await {
        Ok(owner) => (
            (Some(owner.instance), Some(owner.incarnation)),
            Attribution {
                by: Some(AttributedBy::Socket),
                pid: Some(owner.pid),
                note: Some(format!(
                    "database backend pid {}, client port {}",
                    backend.pid,
                    client.port()
                )),
                row: None,
                record: None,
            },
        ),
        Err(u) => unknown(format!(
            "database backend pid {}, client {client}: {}",
            backend.pid, u.reason
        )),
    }
}

async fn lookup(
    owners: &SocketOwners,
    client: SocketAddr,
    server: SocketAddr,
    backend: u32,
) -> Result<Owner, Unknown> {
    let connection = u64::from(backend);
    if let Some(owner) = owners.known(client, connection) {
        return Ok(owner);
    }
    let owners = owners.clone();
    let task = tokio::task::spawn_blocking(move || owners.owner(client, server, connection));
    match tokio::time::timeout(LOOKUP_DEADLINE, task).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => Err(Unknown {
            reason: format!("the socket lookup failed: {e}"),
        }),
        Err(_) => Err(Unknown {
            reason: format!("the socket lookup took longer than {LOOKUP_DEADLINE:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_message_names_the_backend_and_both_ends() {
        let b = Backend::parse("4242 127.0.0.1 51234 127.0.0.1 5432").unwrap();
        assert_eq!(b.pid, 4242);
        assert_eq!(b.client, Some("127.0.0.1:51234".parse().unwrap()));
        assert_eq!(b.server, Some("127.0.0.1:5432".parse().unwrap()));
        let unix = Backend::parse("77").unwrap();
        assert_eq!((unix.client, unix.server), (None, None));
        assert_eq!(Backend::parse("not a pid"), None);
    }
}
