//! What a call will use before it is made: tokens (for the key's limits)
//! and, from them, money (for budgets).
//!
//! Text is ~4 characters a token. Images and PDF pages are priced by the
//! largest of the three providers' published rules, so a key's tokens per
//! minute are not overrun whichever provider the pool speaks (the provider's
//! count corrects the estimate once the call answers).

use keyrelay_core::provider::{ContentPart, Media, MessageContent, ProviderRequest};

/// Tokens a call may use, before it is made: the prompt, plus the output
/// allowance (providers count it against tpm).
pub fn estimate_tokens(request: &ProviderRequest) -> u64 {
    prompt_tokens(request) + u64::from(request.max_output_tokens.unwrap_or(0))
}

/// The prompt's tokens: its text at ~4 characters a token, its images and
/// its documents' pages.
pub fn prompt_tokens(request: &ProviderRequest) -> u64 {
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
                ContentPart::Image(m) => media += image_tokens(m),
                ContentPart::Document(m) => media += document_tokens(m),
            }
        }
    }
    (chars as u64).div_ceil(4) + media
}

/// An image whose size is not known (a URL): Anthropic's ceiling for one
/// image ("more than ~1,600 tokens, it is first scaled down").
pub const UNKNOWN_IMAGE_TOKENS: u64 = 1_600;
/// One PDF page: Anthropic's upper figure (each page is its text plus an
/// image of it: "1,500-3,000 tokens per page"); Gemini counts 258.
pub const PDF_PAGE_TOKENS: u64 = 3_000;
/// A PDF given by URL, whose pages are not known here: ten pages.
pub const UNKNOWN_PDF_PAGES: u64 = 10;

fn image_tokens(media: &Media) -> u64 {
    let Some(size) = media.bytes().and_then(|b| imagesize::blob_size(&b).ok()) else {
        return UNKNOWN_IMAGE_TOKENS;
    };
    let (w, h) = (size.width as u64, size.height as u64);
    anthropic_image(w, h)
        .max(openai_image(w, h))
        .max(gemini_image(w, h))
}

/// Anthropic: width × height / 750, after scaling the long edge to 1,568 px.
fn anthropic_image(w: u64, h: u64) -> u64 {
    let (w, h) = fit_long_edge(w, h, 1_568);
    (w * h).div_ceil(750)
}

/// OpenAI (detail high): fit in 2,048², shortest side down to 768, then 170
/// per 512-px tile plus 85.
fn openai_image(w: u64, h: u64) -> u64 {
    let (w, h) = fit_long_edge(w, h, 2_048);
    let short = w.min(h).max(1);
    let (w, h) = if short > 768 {
        (w * 768 / short, h * 768 / short)
    } else {
        (w, h)
    };
    85 + 170 * w.div_ceil(512) * h.div_ceil(512)
}

/// Gemini: 258 for an image within 384 px, else 258 per 768-px tile.
fn gemini_image(w: u64, h: u64) -> u64 {
    if w <= 384 && h <= 384 {
        return 258;
    }
    258 * w.div_ceil(768) * h.div_ceil(768)
}

fn fit_long_edge(w: u64, h: u64, edge: u64) -> (u64, u64) {
    let long = w.max(h).max(1);
    if long <= edge {
        (w, h)
    } else {
        (w * edge / long, h * edge / long)
    }
}

fn document_tokens(media: &Media) -> u64 {
    let pages = media
        .bytes()
        .map(|b| pdf_pages(&b))
        .unwrap_or(UNKNOWN_PDF_PAGES);
    pages.max(1) * PDF_PAGE_TOKENS
}

/// The pages of a PDF: its `/Type /Page` objects (not `/Pages`). A count,
/// not a parse: compressed object streams hide pages, so never fewer than 1.
fn pdf_pages(bytes: &[u8]) -> u64 {
    let mut pages = 0;
    for needle in [&b"/Type /Page"[..], &b"/Type/Page"[..]] {
        let mut rest = bytes;
        while let Some(at) = find(rest, needle) {
            rest = &rest[at + needle.len()..];
            if rest.first() != Some(&b's') {
                pages += 1;
            }
        }
    }
    pages.max(1)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use keyrelay_core::provider::{ChatMessage, Role};

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
        assert_eq!(estimate_tokens(&r), 3 + 100);
    }

    /// A PNG header of `w` × `h` (enough for its size to be read).
    fn png(w: u32, h: u32) -> String {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&w.to_be_bytes());
        b.extend_from_slice(&h.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    fn image(data: Option<String>) -> MessageContent {
        MessageContent::Parts(vec![ContentPart::Image(Media {
            url: data.is_none().then(|| "https://example.com/a.png".into()),
            media_type: Some("image/png".into()),
            data,
        })])
    }

    #[test]
    fn images_are_priced_by_the_largest_published_rule() {
        // 200×200: Anthropic 54, OpenAI 85+170, Gemini 258.
        assert_eq!(prompt_tokens(&request(image(Some(png(200, 200))))), 258);
        // 1024×1024: Anthropic 1,399 (1024²/750), OpenAI 765, Gemini 1,032.
        assert_eq!(prompt_tokens(&request(image(Some(png(1024, 1024))))), 1_399);
        assert_eq!(prompt_tokens(&request(image(None))), UNKNOWN_IMAGE_TOKENS);
    }

    #[test]
    fn pdf_pages_are_counted() {
        let pdf = b"%PDF-1.4 1 0 obj << /Type /Pages /Count 2 >> 2 0 obj << /Type /Page >> 3 0 obj <</Type/Page>>";
        assert_eq!(pdf_pages(pdf), 2);
        let data = base64::engine::general_purpose::STANDARD.encode(pdf);
        let doc = MessageContent::Parts(vec![ContentPart::Document(Media {
            url: None,
            data: Some(data),
            media_type: Some("application/pdf".into()),
        })]);
        assert_eq!(prompt_tokens(&request(doc)), 2 * PDF_PAGE_TOKENS);
    }
}
