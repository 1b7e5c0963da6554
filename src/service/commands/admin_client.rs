//! A small client of keyrelay's admin API for the CLI commands (`status`,
//! `keys`, `results`): bearer token, JSON, and errors that read as one line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keyrelay_core::config::Config;
use serde_json::Value;
use thiserror::Error;

/// Where the admin API is and how to authenticate: flags, the environment,
/// else the config file (its listen address and `[admin]` tokens), as the
/// service itself reads them.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Base URL of keyrelay's HTTP endpoint; default: the config's
    /// metrics.listen, else http://127.0.0.1:9464.
    #[arg(long, env = "KEYRELAY_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Bearer token; default: KEYRELAY_READ_TOKEN (enough for reads), then
    /// the config's admin or read-only token.
    #[arg(long, env = "KEYRELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The config file the URL and token are read from when not given
    /// (default: config/keyrelay.toml, when there is one).
    #[arg(long, short, env = "KEYRELAY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config read when `-c` is not given, if it exists.
const DEFAULT_CONFIG: &str = "config/keyrelay.toml";
/// The admin URL when neither a flag nor a config says.
const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9464";

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "no admin token: pass --token, set KEYRELAY_ADMIN_TOKEN (or KEYRELAY_READ_TOKEN for reads), or point -c at a config whose [admin] names one{0}"
    )]
    NoToken(String),
    #[error("{0}")]
    Config(String),
    #[error("admin API at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("admin API refused the token ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("admin API answered {status}: {message}")]
    Api { status: u16, message: String },
    /// 503 `busy`: too many heavy reads at once; worth retrying after `retry_after`.
    #[error("admin API is busy: {message}")]
    Busy {
        message: String,
        retry_after: Duration,
    },
    #[error("admin API at {url} sent an answer that is not JSON: {reason}")]
    BadAnswer { url: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Times a GET answered `busy` is tried again (after the server's
/// `Retry-After`), so a `keyrelay results` export of many pages survives a
/// moment of admin load.
const BUSY_RETRIES: u32 = 5;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub fn new(args: &AdminArgs) -> Result<AdminClient, ClientError> {
        let given = args.token.clone().filter(|t| !t.is_empty());
        // The config is read only for what the flags and environment leave
        // open: a broken config does not stop `--admin-url X --token T`.
        let config = match (&args.admin_url, &given) {
            (Some(_), Some(_)) => None,
            _ => config_of(args)?,
        };
        let base = match (&args.admin_url, &config) {
            (Some(url), _) => url.clone(),
            (None, Some(config)) => url_of(config.metrics.listen),
            (None, None) => DEFAULT_ADMIN_URL.to_owned(),
        };
        // A token from the config goes only to the address from the same
        // config, never to a URL named elsewhere.
        let from_config = match (&args.admin_url, &config) {
            (None, Some(config)) => config_token(config),
            _ => None,
        };
        let read_only = std::env::var("KEYRELAY_READ_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let token = given.or(from_config).or(read_only).ok_or_else(|| {
            ClientError::NoToken(match &config {
                Some(config) if config.admin.dev_token => format!(
                    " (no dev admin token at {}: is `keyrelay run` up, started from this directory?)",
                    super::dev_token::path(config).display()
                ),
                _ => String::new(),
            })
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Client(e.to_string()))?;
        Ok(AdminClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// GET `path`; a `busy` answer is retried up to [`BUSY_RETRIES`] times.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        let mut retries = 0;
        loop {
            match self.send(self.http.get(self.url(path))).await {
                Err(ClientError::Busy { retry_after, .. }) if retries < BUSY_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(retry_after).await;
                }
                answer => return answer,
            }
        }
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let mut req = self.http.post(self.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, ClientError> {
        let resp =
            req.bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    reason: root_cause(&e),
                })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let value: Result<Value, _> = serde_json::from_str(&text);
        if (200..300).contains(&status) {
            return value.map_err(|e| ClientError::BadAnswer {
                url: self.base.clone(),
                reason: e.to_string(),
            });
        }
        let value = value.unwrap_or_default();
        let message = value["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(match status {
            401 | 403 => ClientError::Refused { status, message },
            503 if value["error"] == "busy" => ClientError::Busy {
                message,
                retry_after: retry_delay(retry_after.as_deref()),
            },
            _ => ClientError::Api { status, message },
        })
    }
}

/// How long to wait before retrying a `busy` answer: its `Retry-After` in
/// seconds, at least 1 s and at most [`MAX_RETRY_AFTER`].
fn retry_delay(header: Option<&str>) -> Duration {
    let secs = header
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.max(1)).min(MAX_RETRY_AFTER)
}

/// The innermost error's text (reqwest's top level only says "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Encode one path segment or query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The config `-c` names (an error if it cannot be read), else the default
/// file when it exists and reads (else nothing: flags and environment only).
fn config_of(args: &AdminArgs) -> Result<Option<Config>, ClientError> {
    if let Some(path) = &args.config {
        return Config::load_without_keys(path)
            .map(Some)
            .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())));
    }
    let default = Path::new(DEFAULT_CONFIG);
    if !default.is_file() {
        return Ok(None);
    }
    Ok(Config::load_without_keys(default).ok())
}

/// The config's admin token, else its read-only one, else the development
/// token its instance wrote (a loopback-only instance without tokens).
fn config_token(config: &Config) -> Option<String> {
    let admin = &config.admin;
    admin
        .admin_token
        .as_ref()
        .or(admin.read_token.as_ref())
        .map(|t| t.expose().to_owned())
        .or_else(|| super::dev_token::read(config))
}

/// The URL of a listen address: an unspecified address (0.0.0.0, ::) is
/// reached on loopback.
fn url_of(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_become_urls() {
        assert_eq!(
            url_of("0.0.0.0:9464".parse().unwrap()),
            "http://127.0.0.1:9464"
        );
        assert_eq!(url_of("[::]:9464".parse().unwrap()), "http://[::1]:9464");
        assert_eq!(url_of("10.0.0.5:80".parse().unwrap()), "http://10.0.0.5:80");
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        for (header, secs) in [
            (Some("1"), 1),
            (Some(" 3 "), 3),
            (Some("0"), 1),
            (Some("3600"), 10),
            (Some("Wed, 21 Oct 2026 07:28:00 GMT"), 1),
            (None, 1),
        ] {
            assert_eq!(retry_delay(header), Duration::from_secs(secs), "{header:?}");
        }
    }
}
