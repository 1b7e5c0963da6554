//! What a call will use before it is made: tokens (for the key's limits)
//! and, from them, money (for budgets).

use keyrelay_core::provider::ProviderRequest;

/// Tokens a call may use, before it is made: ~4 characters a token for the
/// prompt, plus the output allowance (providers count it against tpm).
pub fn estimate_tokens(request: &ProviderRequest) -> u64 {
    prompt_tokens(request) + u64::from(request.max_output_tokens.unwrap_or(0))
}

/// The prompt's tokens, estimated at ~4 characters a token.
pub fn prompt_tokens(request: &ProviderRequest) -> u64 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    (chars as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyrelay_core::provider::{ChatMessage, Role};

    #[test]
    fn token_estimate_counts_prompt_and_output_allowance() {
        let request = ProviderRequest {
            model: "m".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: "x".repeat(10),
            }],
            json_output: false,
            max_output_tokens: Some(100),
            temperature: None,
            user: None,
        };
        assert_eq!(estimate_tokens(&request), 3 + 100);
    }
}
