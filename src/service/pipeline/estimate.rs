//! What a call will use before it is made: tokens (for the key's limits)
//! and, from them, money (for budgets).
//!
//! Text is ~4 characters a token. Images and PDF pages are counted by the
//! pool's provider's own published rule (each provider file's
//! `media_tokens`), from the size and pages read once when the job was
//! decoded; the provider's count corrects the estimate once the call answers.

use keyrelay_core::provider::{
    ContentPart, MessageContent, ProviderKind, ProviderRequest, registry,
};

/// Tokens a call may use, before it is made: the prompt, plus the output
/// allowance (providers count it against tpm).
pub fn estimate_tokens(request: &ProviderRequest, provider: ProviderKind) -> u64 {
    prompt_tokens(request, provider) + u64::from(request.max_output_tokens.unwrap_or(0))
}

/// The prompt's tokens: its text at ~4 characters a token, its images and
/// its documents' pages as `provider` counts them.
pub fn prompt_tokens(request: &ProviderRequest, provider: ProviderKind) -> u64 {
    let mut chars = 0usize;
    let mut media = 0u64;
    for message in &request.messages {
        let parts = match &message.content {
            MessageContent::Text(text) => {
                chars += text.len();
                continue;
            }
            MessageContent::Parts(parts) => parts,
        };
        for part in parts {
            match part {
                ContentPart::Text { text } => chars += text.len(),
                other => media += registry::media_tokens(provider, other),
            }
        }
    }
    (chars as u64).div_ceil(4) + media
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyrelay_core::provider::{ChatMessage, Media, Role};

    fn request(content: MessageContent) -> ProviderRequest {
        ProviderRequest {
            model: "m".into(),
            messages: vec![ChatMessage {
                role: Role::User,
                content,
            }],
            output: Default::default(),
            max_output_tokens: Some(100),
            temperature: None,
            user: None,
        }
    }

    #[test]
    fn token_estimate_counts_prompt_and_output_allowance() {
        let r = request(MessageContent::Text("x".repeat(10)));
        assert_eq!(estimate_tokens(&r, ProviderKind::Gemini), 3 + 100);
    }

    fn image(pixels: Option<(u32, u32)>) -> MessageContent {
        MessageContent::Parts(vec![ContentPart::Image(Media {
            url: pixels.is_none().then(|| "https://example.com/a.png".into()),
            data: pixels.map(|_| "AAAA".into()),
            media_type: Some("image/png".into()),
            pixels,
            pages: None,
        })])
    }

    /// The providers' own worked examples.
    #[test]
    fn images_are_counted_by_the_pools_provider() {
        let cases = [
            // Anthropic: 200×200 ≈ 54, 1000×1000 ≈ 1,334 (vision docs).
            (ProviderKind::Anthropic, Some((200, 200)), 54),
            (ProviderKind::Anthropic, Some((1000, 1000)), 1_334),
            (ProviderKind::Anthropic, None, 1_600),
            // OpenAI: 1024×1024 → 765, 2048×4096 → 1,105 (vision guide).
            (ProviderKind::Openai, Some((1024, 1024)), 765),
            (ProviderKind::Openai, Some((2048, 4096)), 1_105),
            (ProviderKind::Azure, Some((1024, 1024)), 765),
            // Gemini: within 384 px 258; else 258 a 768-px tile.
            (ProviderKind::Gemini, Some((384, 384)), 258),
            (ProviderKind::Gemini, Some((1024, 1024)), 1_032),
        ];
        for (provider, pixels, tokens) in cases {
            let got = prompt_tokens(&request(image(pixels)), provider);
            assert_eq!(got, tokens, "{provider:?} {pixels:?}");
        }
    }

    #[test]
    fn pdf_pages_are_counted_by_the_pools_provider() {
        let pdf = |pages| {
            MessageContent::Parts(vec![ContentPart::Document(Media {
                data: Some("AAAA".into()),
                media_type: Some("application/pdf".into()),
                pages,
                ..Media::default()
            })])
        };
        assert_eq!(
            prompt_tokens(&request(pdf(Some(3))), ProviderKind::Gemini),
            3 * 560
        );
        assert_eq!(
            prompt_tokens(&request(pdf(Some(3))), ProviderKind::Anthropic),
            3 * 2_500
        );
        // By URL: ten pages.
        assert_eq!(
            prompt_tokens(&request(pdf(None)), ProviderKind::Gemini),
            10 * 560
        );
    }
}
