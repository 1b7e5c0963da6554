//! `[[pools]]` and `[[pools.keys]]`: a provider account, its keys and what
//! the pool's client and keys are built from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::defaults;
use crate::provider::client::{HttpSettings, HttpTimeouts, HttpVersion};
use crate::provider::token_field::{TokenField, TokenFields};
use crate::provider::{ProviderKind, ProviderOptions};
use crate::secret::ApiKey;
use crate::spend::Price;

/// `[[pools]]`: one provider account and its keys, fed by one queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool name; jobs are consumed from `<queue_prefix>.jobs.<name>`.
    pub name: String,
    /// Which wire protocol the pool speaks (`gemini`, `openai`, `anthropic`, `azure`).
    pub provider: ProviderKind,
    /// API base URL (mock provider, vLLM, Ollama ... for `openai`; the
    /// resource's endpoint for `azure`). Optional for the built-in public
    /// providers: validation fills in their public endpoint.
    #[serde(default)]
    pub base_url: String,
    /// Model used by jobs that name none.
    pub default_model: String,
    /// When set, jobs naming another model fail with `invalid_job`.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Cooldown after a rate limit whose answer gave no retry delay, in seconds.
    #[serde(default = "defaults::cooldown_secs")]
    pub default_cooldown_secs: u64,
    /// IANA time zone of the provider's daily quota reset (Gemini: America/Los_Angeles).
    #[serde(default)]
    pub daily_reset_timezone: Option<String>,
    /// When set, quota "days" last this many seconds instead of a calendar day
    /// (emulators, custom quotas): exhaustion and rpd/tpd reset at multiples of it.
    #[serde(default)]
    pub quota_period_secs: Option<u64>,
    /// Length of the rpm/tpm window in seconds (60 for real providers).
    #[serde(default = "defaults::rate_window_secs")]
    pub rate_window_secs: u64,
    /// Speak HTTP/2 from the first byte to an `http://` endpoint that serves it in
    /// clear text (h2c). `https://` endpoints negotiate HTTP/2 through TLS anyway.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
    /// Calls one HTTP/2 connection carries at once. A pool that may speak
    /// HTTP/2 (https, or `http2_prior_knowledge`) builds ⌈sum of its keys'
    /// `concurrency` / this⌉ clients, one HTTP/2 connection each, so no call
    /// waits behind a server's stream limit (RFC 9113 asks servers for at
    /// least 100). A plain http:// pool speaks HTTP/1.1 and builds one.
    #[serde(default = "defaults::http2_max_streams")]
    pub http2_max_streams: u32,
    /// `openai`/`azure`: the field carrying a job's `max_tokens`: `auto` (by
    /// model: `max_completion_tokens` for o1/o3/o4/gpt-5, else `max_tokens`),
    /// `max_tokens` or `max_completion_tokens`. A provider answering
    /// "Unsupported parameter" for one gets the other, once per call.
    #[serde(default)]
    pub max_tokens_field: TokenField,
    /// Per-model overrides of `max_tokens_field` (Azure deployments have names
    /// of their own: `{ "my-o3" = "max_completion_tokens" }`).
    #[serde(default)]
    pub max_tokens_field_by_model: BTreeMap<String, TokenField>,
    /// `azure`: the `api-version` query parameter (default 2024-10-21).
    #[serde(default)]
    pub api_version: Option<String>,
    /// US dollars the pool may spend per UTC day (all keys together).
    #[serde(default)]
    pub budget_usd_per_day: Option<f64>,
    /// US dollars the pool may spend per UTC month.
    #[serde(default)]
    pub budget_usd_per_month: Option<f64>,
    /// What each user (a job's `user`) may spend per UTC day, unless raised
    /// through the admin API.
    #[serde(default)]
    pub user_budget_usd_per_day: Option<f64>,
    /// What each user may spend per UTC month.
    #[serde(default)]
    pub user_budget_usd_per_month: Option<f64>,
    /// A pool at its budget: `wait` (jobs stay queued until the budget resets
    /// or is raised) or `fail` (jobs fail with `budget_exceeded`).
    #[serde(default)]
    pub on_budget_exceeded: OnBudgetExceeded,
    /// Prices for this pool's models, over the price table's
    /// (`[pools.prices."my-model"] input = 0.5, output = 1.5`, USD per 1M tokens).
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// The pool's keys (at least one).
    pub keys: Vec<KeyConfig>,
}

/// `[[pools.keys]]`: one API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// What logs, metrics, replies and the store call this key.
    pub name: String,
    /// Environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the key (trailing whitespace ignored).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Lower is preferred: the broker serves the lowest-priority-number keys first.
    #[serde(default = "defaults::priority")]
    pub priority: u8,
    /// Jobs in flight on this key at once (the channel's prefetch).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: u16,
    /// Requests per minute (any 60 s window), enforced before each call.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute (estimated before the call, corrected after).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests per provider day.
    #[serde(default)]
    pub rpd: Option<u32>,
    /// Tokens per provider day.
    #[serde(default)]
    pub tpd: Option<u64>,
    /// Keys sharing one provider quota (Gemini: a Google Cloud project; OpenAI:
    /// an organisation): a daily exhaustion of one parks them all.
    #[serde(default)]
    pub quota_group: Option<String>,
    /// US dollars this key may spend per UTC day; at it, the key leaves
    /// rotation until midnight UTC.
    #[serde(default)]
    pub budget_usd_per_day: Option<f64>,
    /// US dollars this key may spend per UTC month.
    #[serde(default)]
    pub budget_usd_per_month: Option<f64>,
    /// The resolved secret (filled by validation, never deserialized).
    #[serde(skip, default = "defaults::empty_key")]
    pub secret: ApiKey,
}

/// What a pool at its budget does with jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBudgetExceeded {
    /// Jobs stay in the queue (nothing is lost) until the budget resets or is raised.
    #[default]
    Wait,
    /// Jobs fail with `budget_exceeded` (dead-lettered, so they can be replayed).
    Fail,
}

impl KeyConfig {
    /// The key's money budget.
    pub fn budget(&self) -> crate::spend::Budget {
        crate::spend::Budget {
            usd_per_day: self.budget_usd_per_day,
            usd_per_month: self.budget_usd_per_month,
        }
    }

    /// The limits this key declares (`rpm`, `tpm`, `rpd`, `tpd`), for its budget.
    pub fn limits(&self) -> crate::keys::Limits {
        crate::keys::Limits {
            rpm: self.rpm,
            tpm: self.tpm,
            rpd: self.rpd,
            tpd: self.tpd,
        }
    }
}

impl PoolConfig {
    /// The pool's money budget (all keys together).
    pub fn budget(&self) -> crate::spend::Budget {
        crate::spend::Budget {
            usd_per_day: self.budget_usd_per_day,
            usd_per_month: self.budget_usd_per_month,
        }
    }

    /// The budget of each user of the pool.
    pub fn user_budget(&self) -> crate::spend::Budget {
        crate::spend::Budget {
            usd_per_day: self.user_budget_usd_per_day,
            usd_per_month: self.user_budget_usd_per_month,
        }
    }

    /// The time zone of the daily reset: configured, else the provider's own.
    pub fn reset_timezone(&self) -> &str {
        match (&self.daily_reset_timezone, self.provider) {
            (Some(tz), _) => tz,
            (None, ProviderKind::Gemini) => "America/Los_Angeles",
            (None, _) => "UTC",
        }
    }

    /// Calls the pool's keys may make at once.
    pub fn calls_at_once(&self) -> usize {
        self.keys.iter().map(|k| usize::from(k.concurrency)).sum()
    }

    /// What the pool's provider implementation reads from its config.
    pub fn provider_options(&self) -> ProviderOptions {
        ProviderOptions {
            token_fields: TokenFields::new(
                self.max_tokens_field,
                self.max_tokens_field_by_model.clone(),
            ),
            api_version: self.api_version.clone(),
        }
    }

    /// The largest `tpm` any key declares, when every key declares one: a job
    /// estimated above it can run on no key of the pool.
    pub fn largest_declared_tpm(&self) -> Option<u64> {
        self.keys
            .iter()
            .map(|k| k.tpm)
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .max()
    }

    /// HTTP clients (one HTTP/2 connection each) for every call at once; one
    /// when the pool can only speak HTTP/1.1, whose client opens a connection
    /// per call in flight anyway.
    pub fn http_lanes(&self) -> usize {
        if !self.may_speak_http2() {
            return 1;
        }
        let streams = usize::try_from(self.http2_max_streams).unwrap_or(usize::MAX);
        crate::provider::connections::lanes_needed(self.calls_at_once(), streams)
    }

    /// HTTP/2 needs TLS (negotiated through ALPN) or `http2_prior_knowledge`:
    /// a plain `http://` endpoint without it is spoken to in HTTP/1.1.
    fn may_speak_http2(&self) -> bool {
        // Parsed as validation and the client parse it (the parser itself
        // drops surrounding spaces).
        let plain = reqwest::Url::parse(&self.base_url).is_ok_and(|u| u.scheme() == "http");
        self.http2_prior_knowledge || !plain
    }

    /// How the pool's client connects: enough lanes for every call its keys
    /// may make at once.
    pub fn http_settings(&self, timeouts: HttpTimeouts) -> HttpSettings {
        HttpSettings {
            timeouts,
            version: if self.http2_prior_knowledge {
                HttpVersion::Http2PriorKnowledge
            } else {
                HttpVersion::Negotiated
            },
            lanes: self.http_lanes(),
            instance: None,
        }
    }
}
