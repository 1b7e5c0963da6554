//! A pool's prices (its own over the price table's), what a call cost,
//! and what one is expected to cost before it is made.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::warn;

use super::estimate::{estimate_tokens, prompt_tokens};
use keyrelay_core::metrics as m;
use keyrelay_core::provider::{ProviderKind, ProviderRequest, Usage};
use keyrelay_core::spend::{Price, PriceTable, cost_usd};

/// A pool's prices: its own over the price table's.
pub struct PoolPrices {
    pool: String,
    provider: ProviderKind,
    table: Arc<PriceTable>,
    own: BTreeMap<String, Price>,
    /// Models already warned about (once each).
    warned: Mutex<HashSet<String>>,
}

impl PoolPrices {
    pub fn new(
        pool: &str,
        provider: ProviderKind,
        table: Arc<PriceTable>,
        own: BTreeMap<String, Price>,
    ) -> PoolPrices {
        PoolPrices {
            pool: pool.to_owned(),
            provider,
            table,
            own,
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The price of `model`, if it has one.
    pub fn price(&self, model: &str) -> Option<&Price> {
        self.own
            .get(model)
            .or_else(|| self.table.get(self.provider, model))
    }

    /// What `usage` of `model` cost; `None` (with a warning once per model
    /// and a counter) when the model has no price. No tokens cost 0.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        if usage.is_empty() {
            return Some(0.0);
        }
        match self.price(model) {
            Some(price) => Some(cost_usd(price, usage)),
            None => {
                metrics::counter!(m::UNPRICED_CALLS_TOTAL, "pool" => self.pool.clone(), "model" => model.to_owned())
                    .increment(1);
                let new = self
                    .warned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(model.to_owned());
                if new {
                    warn!(pool = %self.pool, model, "no price for this model: its calls cost null; add it to the pool's [pools.prices] or to spend.prices_file");
                }
                None
            }
        }
    }

    /// What a call of `request` is expected to cost at most: its prompt
    /// estimate and its whole output allowance (0 without a price).
    pub fn estimate(&self, request: &ProviderRequest) -> f64 {
        let Some(price) = self.price(&request.model) else {
            return 0.0;
        };
        let input = prompt_tokens(request, self.provider);
        let usage = Usage {
            input_tokens: input,
            output_tokens: estimate_tokens(request, self.provider) - input,
            ..Usage::default()
        };
        cost_usd(price, &usage)
    }
}
