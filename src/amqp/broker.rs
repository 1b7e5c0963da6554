//! One shared AMQP connection, re-established on demand after a loss.

use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::AmqpError;

/// The connection to RabbitMQ. Callers ask for channels; when the connection is
/// gone the next request reconnects, so restarted workers recover by themselves.
pub struct Broker {
    url: String,
    connection: Mutex<Option<Connection>>,
}

impl Broker {
    /// Connect once (fails fast: start-up should say the broker is unreachable).
    pub async fn connect(url: &str) -> Result<Broker, AmqpError> {
        let connection = open(url).await?;
        Ok(Broker {
            url: url.to_owned(),
            connection: Mutex::new(Some(connection)),
        })
    }

    /// A new channel on the live connection, reconnecting first if needed.
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        let mut guard = self.connection.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.status().connected()
        {
            return conn
                .create_channel()
                .await
                .map_err(AmqpError::op("channel.open"));
        }
        let conn = open(&self.url).await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(AmqpError::op("channel.open"));
        *guard = Some(conn);
        channel
    }

    /// Whether the connection is up right now.
    pub async fn is_connected(&self) -> bool {
        let guard = self.connection.lock().await;
        guard.as_ref().is_some_and(|c| c.status().connected())
    }

    /// Close the connection (shutdown).
    pub async fn close(&self) {
        if let Some(conn) = self.connection.lock().await.take() {
            let _ = conn.close(200, "keyrelay shutting down".into()).await;
        }
    }
}

async fn open(url: &str) -> Result<Connection, AmqpError> {
    let props = ConnectionProperties::default().with_connection_name("keyrelay".into());
    match tokio::time::timeout(Duration::from_secs(15), Connection::connect(url, props)).await {
        Ok(result) => result.map_err(AmqpError::Connect),
        Err(_) => Err(AmqpError::Connect(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connection attempt timed out after 15 s",
        )))),
    }
}
