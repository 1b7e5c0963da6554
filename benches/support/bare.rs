//! The bare worker: what the broker-limit loop can add per delivery, so the gap
//! between it and keyrelay splits into what any worker doing keyrelay's job
//! must pay and what keyrelay's own machinery costs.
//!
//! `--call`: read the job, call the mock provider (Gemini API, one reqwest
//! client, consumer k uses key k; h2c with `--http2`), read the answer's text
//! and put it in the reply. `--store` (with `--call`): first look the job id
//! up in sled (a redelivered job's stored answer saves a second call), and
//! before the reply insert it under the job id and wait for a flush through
//! keyrelay's own group committer: the least a worker must do to never lose
//! an answered job nor pay for it twice. Neither does routing, budgets,
//! metrics, retries or error handling.

use anyhow::Context as _;
use keyrelay_core::store::GroupCommit;
use serde_json::{Value, json};

/// Which steps to add to the broker loop.
#[derive(Debug, Clone, Copy)]
pub struct Steps {
    pub call: bool,
    pub store: bool,
    /// Speak h2c to the mock, as keyrelay does with `--http2`.
    pub http2: bool,
}

/// The extra steps of one run; `None` is the plain broker loop.
pub struct BareWork {
    call: Option<ProviderCall>,
    store: Option<Durable>,
}

struct ProviderCall {
    http: reqwest::Client,
    url: String,
    /// One secret per consumer (the mock's keys, in config order).
    secrets: Vec<String>,
}

struct Durable {
    results: sled::Tree,
    commit: GroupCommit,
    _dir: tempfile::TempDir,
}

impl BareWork {
    /// `base_url` and `key_files` are the mock's and the bench keys'; must run
    /// inside tokio (the committer is a task).
    pub fn new(
        steps: Steps,
        base_url: Option<String>,
        key_files: &[std::path::PathBuf],
    ) -> anyhow::Result<BareWork> {
        let call = match (steps.call, base_url) {
            (false, _) => None,
            (true, None) => anyhow::bail!("--call needs the mock provider"),
            (true, Some(base)) => Some(ProviderCall {
                http: http_client(steps.http2)?,
                url: format!("{base}/v1beta/models/model-a:generateContent"),
                secrets: key_files
                    .iter()
                    .map(|p| std::fs::read_to_string(p).map(|s| s.trim().to_owned()))
                    .collect::<Result<_, _>>()?,
            }),
        };
        let store = match steps.store {
            false => None,
            true => {
                let dir = tempfile::tempdir()?;
                let db = sled::Config::new()
                    .path(dir.path())
                    .cache_capacity(keyrelay_core::store::DEFAULT_CACHE_BYTES)
                    .flush_every_ms(Some(1000))
                    .open()?;
                Some(Durable {
                    results: db.open_tree("results")?,
                    commit: GroupCommit::spawn(db),
                    _dir: dir,
                })
            }
        };
        anyhow::ensure!(
            store.is_none() || call.is_some(),
            "--store needs --call (it stores the answer)"
        );
        Ok(BareWork { call, store })
    }

    /// What the report says this loop did.
    pub fn label(&self) -> &'static str {
        match (&self.call, &self.store) {
            (None, _) => "reply + ack",
            (Some(_), None) => "provider call + reply + ack",
            (Some(_), Some(_)) => "provider call + sled (flushed) + reply + ack",
        }
    }

    /// The reply's body for `job` (a delivery's body) taken by consumer
    /// `consumer`, after the steps this run does; `None` (send the canned
    /// reply) when it calls nothing.
    pub async fn reply(&self, consumer: usize, job: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(call) = &self.call else {
            return Ok(None);
        };
        let job: Value = serde_json::from_slice(job).context("job is not JSON")?;
        let (id, prompt) = (job["id"].as_str().unwrap_or(""), &job["prompt"]);
        if let Some(store) = &self.store
            && let Some(stored) = store.results.get(id.as_bytes())?
        {
            return Ok(Some(stored.to_vec()));
        }
        let text = call.answer(consumer, prompt).await?;
        let reply = serde_json::to_vec(&json!({
            "id": id, "status": "succeeded", "text": text, "metadata": job["metadata"],
        }))?;
        if let Some(store) = &self.store {
            store.results.insert(id.as_bytes(), reply.as_slice())?;
            store.commit.flush().await?;
        }
        Ok(Some(reply))
    }
}

fn http_client(http2: bool) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder();
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder
    };
    Ok(builder.build()?)
}

impl ProviderCall {
    async fn answer(&self, consumer: usize, prompt: &Value) -> anyhow::Result<String> {
        let secret = &self.secrets[consumer % self.secrets.len()];
        let body = json!({
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {},
        });
        let response = self
            .http
            .post(&self.url)
            .header("x-goog-api-key", secret)
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        let answer: Value = serde_json::from_slice(&response.bytes().await?)?;
        let text = &answer["candidates"][0]["content"]["parts"][0]["text"];
        text.as_str()
            .map(str::to_owned)
            .context("provider answer without text")
    }
}
