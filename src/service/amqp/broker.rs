//! One shared AMQP connection, re-established on demand after a loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::error::AmqpError;
use super::settler::Settler;
use super::topology;
use keyrelay_core::config::Config;

/// How long `close` waits for settlers to send their last acks. Jobs still
/// running past the shutdown deadline keep theirs open, so this is bounded.
const SETTLERS_GRACE: Duration = Duration::from_secs(2);

/// The connection to RabbitMQ. Callers ask for channels; when the connection is
/// gone the next request reconnects (and re-declares the topology), so
/// restarted workers recover by themselves.
pub struct Broker {
    url: String,
    /// Shown in the management UI and `rabbitmqctl list_connections`.
    name: String,
    /// Queues to declare on every new connection (the service's own topology;
    /// none for clients such as `enqueue`).
    topology: Option<Arc<Config>>,
    /// Held only to look at or replace the connection: channels are opened
    /// outside the lock, so 1,000 workers starting at once open theirs in
    /// parallel instead of one round trip after another.
    connection: Mutex<Option<Arc<Connection>>>,
    /// The same connection for status checks: never held across an await, so
    /// `/readyz` answers at once even while a reconnect holds `connection`.
    current: std::sync::Mutex<Option<Arc<Connection>>>,
    /// Bumped on every (re)connect: a channel from an older generation belongs
    /// to a dead connection, whatever its own status says.
    generation: AtomicU64,
    /// The channels' settling tasks; `close` lets them send what they hold.
    settlers: TaskTracker,
    /// The heartbeat asked for (the broker may agree to less).
    heartbeat: u16,
    /// Set by `close`: a late user (the queue poller, a worker restarting)
    /// must not reconnect and re-declare the topology of a stopping service.
    closed: std::sync::atomic::AtomicBool,
}

impl Broker {
    /// A client connection (no topology of its own). Fails fast.
    pub async fn connect(url: &str) -> Result<Broker, AmqpError> {
        Self::open_with("keyrelay-client", url, None).await
    }

    /// The service's connection: declares every queue of `config` now and after
    /// each reconnect (a broker that lost its definitions gets them back).
    pub async fn for_service(config: Arc<Config>, instance: &str) -> Result<Broker, AmqpError> {
        let name = format!("keyrelay {} {instance}", config.broker.queue_prefix);
        let url = with_heartbeat(&config.broker.url, config.broker.heartbeat_secs);
        let mut broker = Self::open_with(&name, &url, Some(config.clone())).await?;
        broker.heartbeat = config.broker.heartbeat_secs;
        Ok(broker)
    }

    async fn open_with(
        name: &str,
        url: &str,
        topology: Option<Arc<Config>>,
    ) -> Result<Broker, AmqpError> {
        let broker = Broker {
            url: url.to_owned(),
            name: name.to_owned(),
            topology,
            connection: Mutex::new(None),
            current: std::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            heartbeat: 0,
            settlers: TaskTracker::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        let connection = Arc::new(broker.open().await?);
        broker.set_current(Some(connection.clone()));
        *broker.connection.lock().await = Some(connection);
        broker.generation.store(1, Ordering::Release);
        Ok(broker)
    }

    /// A new channel on the live connection, reconnecting first if needed.
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        Ok(self.channel_with_generation().await?.0)
    }

    /// A new channel and the connection generation it belongs to.
    pub async fn channel_with_generation(&self) -> Result<(Channel, u64), AmqpError> {
        let (conn, generation) = self.live_connection().await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(AmqpError::op("channel.open"))?;
        Ok((channel, generation))
    }

    /// The connection and its generation, reconnecting first if it is down.
    async fn live_connection(&self) -> Result<(Arc<Connection>, u64), AmqpError> {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
        {
            return Ok((conn.clone(), self.generation()));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(AmqpError::Closed);
        }
        warn!(connection = %self.name, "broker connection lost; reconnecting");
        let conn = Arc::new(self.open().await?);
        info!(connection = %self.name, "reconnected to the broker");
        self.set_current(Some(conn.clone()));
        *guard = Some(conn.clone());
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        Ok((conn, generation))
    }

    /// The heartbeat interval the broker agreed to, in seconds (0: none);
    /// the configured one until connected.
    pub fn heartbeat_secs(&self) -> u16 {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .map_or(self.heartbeat, |c| c.configuration().heartbeat())
    }

    /// The current connection generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the connection is up right now. Never waits: a reconnect in
    /// progress is "not connected".
    pub fn is_connected(&self) -> bool {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.as_ref().is_some_and(|c| c.status().connected())
    }

    fn set_current(&self, conn: Option<Arc<Connection>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// Declare `pool`'s job queue and delay queues again (after the broker
    /// cancelled its consumers: the queue was deleted). No-op on a client
    /// connection.
    pub async fn declare_pool(&self, channel: &Channel, pool: &str) -> Result<(), AmqpError> {
        match &self.topology {
            Some(config) => topology::declare_pool(channel, config, pool).await,
            None => Ok(()),
        }
    }

    /// A settler for a channel of this connection (see [`Settler`]).
    pub fn settler(&self, channel: Channel) -> Settler {
        Settler::spawn(channel, &self.settlers)
    }

    /// Close the connection, once the settlers whose jobs are done have sent
    /// their acks (up to [`SETTLERS_GRACE`]; what is left unacked returns to
    /// the queue and is answered from the store). `Err` if the broker did not
    /// confirm the close; either way the connection is gone afterwards.
    pub async fn close(&self) -> Result<(), AmqpError> {
        self.closed.store(true, Ordering::Release);
        self.settlers.close();
        if tokio::time::timeout(SETTLERS_GRACE, self.settlers.wait())
            .await
            .is_err()
        {
            warn!(
                settlers = self.settlers.len(),
                "closing with acks unsent; the broker redelivers those jobs"
            );
        }
        self.set_current(None);
        let Some(conn) = self.connection.lock().await.take() else {
            return Ok(());
        };
        let_dropped_channels_close(&conn).await;
        conn.close(200, "keyrelay shutting down".into())
            .await
            .map_err(AmqpError::op("connection.close"))
    }

    async fn open(&self) -> Result<Connection, AmqpError> {
        let props = ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let tls = match &self.topology {
            Some(config) => tls_config(&config.broker)?,
            None => OwnedTLSConfig::default(),
        };
        let failed = |e: &(dyn std::error::Error + 'static)| AmqpError::connect(&self.url, e);
        let runtime = lapin::runtime::default_runtime().map_err(|e| failed(&e))?;
        let connect = Connection::connect_with_config(&self.url, props, tls, runtime);
        let attempt = tokio::time::timeout(Duration::from_secs(15), connect);
        let conn = match attempt.await {
            Ok(result) => result.map_err(|e| failed(&e))?,
            Err(_) => {
                let timed_out = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection attempt timed out after 15 s",
                );
                return Err(failed(&timed_out));
            }
        };
        if let Some(config) = &self.topology {
            let channel = conn
                .create_channel()
                .await
                .map_err(AmqpError::op("channel.open"))?;
            topology::declare(&channel, config).await?;
            let _ = channel.close(200, "topology declared".into()).await;
        }
        Ok(conn)
    }
}

/// `url` with `heartbeat=secs` added, unless it sets one already (or is not a
/// URL: validation has said so by then, and lapin will too).
fn with_heartbeat(url: &str, secs: u16) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.query_pairs().any(|(k, _)| k == "heartbeat") => {
            parsed
                .query_pairs_mut()
                .append_pair("heartbeat", &secs.to_string());
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// lapin closes a dropped channel in the background, and fails the whole
/// connection ("invalid channel state: Closing (channel.close)") if that close
/// starts after the connection began closing: which is what shutdown does right
/// after the key workers let go of their channels. lapin handles its commands
/// in order, so one channel opened and closed here, a round trip each, lets
/// every close queued before it start first.
async fn let_dropped_channels_close(conn: &Connection) {
    if let Ok(channel) = conn.create_channel().await {
        let _ = channel.close(200, "keyrelay shutting down".into()).await;
    }
}

/// TLS settings for `amqps://`: a private CA and a client certificate, when
/// configured (otherwise the system's trust store and no client certificate).
fn tls_config(broker: &keyrelay_core::config::BrokerConfig) -> Result<OwnedTLSConfig, AmqpError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            let unreadable = std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
            AmqpError::connect(&broker.url, &unreadable)
        })
    };
    let cert_chain = match &broker.tls_ca_file {
        Some(path) => Some(String::from_utf8_lossy(&read(path)?).into_owned()),
        None => None,
    };
    let identity = match (&broker.tls_client_cert_file, &broker.tls_client_key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read(cert)?,
            key: read(key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

#[cfg(test)]
mod tests {
    use super::with_heartbeat;

    #[test]
    fn heartbeat_is_added_unless_the_url_sets_one() {
        assert_eq!(
            with_heartbeat("amqp://guest:guest@127.0.0.1:5672/%2f", 4),
            "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=4"
        );
        assert_eq!(
            with_heartbeat("amqp://h/v?frame_max=8192", 4),
            "amqp://h/v?frame_max=8192&heartbeat=4"
        );
        let own = "amqp://h/%2f?heartbeat=30";
        assert_eq!(with_heartbeat(own, 4), own);
    }
}
