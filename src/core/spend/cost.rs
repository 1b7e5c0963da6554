//! The cost of one call: its usage at its model's price.

use super::prices::Price;
use crate::provider::Usage;

/// US dollars for `usage` at `price`. Cached prompt tokens are charged at
/// the cached rate and cache writes at theirs (each `input` when the price
/// names none); a prompt above the long-context threshold puts the whole
/// request at the long rates, as Gemini and Anthropic bill it.
pub fn cost_usd(price: &Price, usage: &Usage) -> f64 {
    let long = price
        .long_context_threshold
        .is_some_and(|t| usage.input_tokens > t);
    let (input, output, cached) = if long {
        (
            price.input_long.unwrap_or(price.input),
            price.output_long.unwrap_or(price.output),
            price
                .cached_input_long
                .or(price.cached_input)
                .unwrap_or(price.input),
        )
    } else {
        (
            price.input,
            price.output,
            price.cached_input.unwrap_or(price.input),
        )
    };
    let cache_write = price.cache_write.unwrap_or(input);
    let cached_tokens = usage.cached_input_tokens.min(usage.input_tokens);
    let written = usage
        .cache_write_tokens
        .min(usage.input_tokens - cached_tokens);
    let plain = usage.input_tokens - cached_tokens - written;
    let micro = plain as f64 * input
        + cached_tokens as f64 * cached
        + written as f64 * cache_write
        + usage.output_tokens as f64 * output;
    micro / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64, cached: Option<f64>, write: Option<f64>) -> Price {
        Price {
            input,
            output,
            cached_input: cached,
            cache_write: write,
            long_context_threshold: None,
            input_long: None,
            output_long: None,
            cached_input_long: None,
        }
    }

    fn usage(input: u64, output: u64, cached: u64, written: u64, reasoning: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            cache_write_tokens: written,
            reasoning_tokens: reasoning,
            cost_usd: None,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Each provider's usage as its parser turns it into [`Usage`] (see the
    /// parsers' tests for the wire fields), at that provider's price.
    #[test]
    fn cost_per_provider_usage() {
        let cases = [
            (
                "openai: 1,000 prompt tokens of which 400 cached, 500 completion of which 200 reasoning (gpt-4o-mini 0.15/0.075/0.60)",
                price(0.15, 0.60, Some(0.075), None),
                usage(1_000, 500, 400, 0, 200),
                (600.0 * 0.15 + 400.0 * 0.075 + 500.0 * 0.60) / 1e6,
            ),
            (
                "gemini: prompt 2,000 with 1,000 cachedContentTokenCount, 300 candidates + 700 thoughts (2.5 flash 0.30/0.03/2.50)",
                price(0.30, 2.50, Some(0.03), None),
                usage(2_000, 1_000, 1_000, 0, 700),
                (1_000.0 * 0.30 + 1_000.0 * 0.03 + 1_000.0 * 2.50) / 1e6,
            ),
            (
                "anthropic: input 100 + cache_read 5,000 + cache_creation 2,000, output 400 (sonnet 4: 3/0.30/3.75/15)",
                price(3.0, 15.0, Some(0.30), Some(3.75)),
                usage(7_100, 400, 5_000, 2_000, 0),
                (100.0 * 3.0 + 5_000.0 * 0.30 + 2_000.0 * 3.75 + 400.0 * 15.0) / 1e6,
            ),
            (
                "no cached price: cached tokens cost the input rate",
                price(1.0, 2.0, None, None),
                usage(1_000, 0, 1_000, 0, 0),
                1_000.0 / 1e6,
            ),
            (
                "no tokens, no cost",
                price(1.0, 2.0, None, None),
                usage(0, 0, 0, 0, 0),
                0.0,
            ),
        ];
        for (name, p, u, want) in cases {
            let got = cost_usd(&p, &u);
            assert!(close(got, want), "{name}: {got} != {want}");
        }
    }

    #[test]
    fn a_long_prompt_puts_the_whole_request_at_the_long_rates() {
        let mut p = price(1.25, 10.0, Some(0.125), None);
        p.long_context_threshold = Some(200_000);
        p.input_long = Some(2.50);
        p.output_long = Some(15.0);
        p.cached_input_long = Some(0.25);
        let at = cost_usd(&p, &usage(200_000, 1_000, 0, 0, 0));
        assert!(close(at, (200_000.0 * 1.25 + 1_000.0 * 10.0) / 1e6), "{at}");
        let above = cost_usd(&p, &usage(200_001, 1_000, 1, 0, 0));
        let want = (200_000.0 * 2.50 + 0.25 + 1_000.0 * 15.0) / 1e6;
        assert!(close(above, want), "{above} != {want}");
    }

    #[test]
    fn inconsistent_counts_never_charge_a_token_twice() {
        // More cached than prompt tokens (a provider's rounding): capped.
        let p = price(1.0, 0.0, Some(0.5), Some(2.0));
        let got = cost_usd(&p, &usage(100, 0, 150, 50, 0));
        assert!(close(got, 100.0 * 0.5 / 1e6), "{got}");
    }
}
