//! What a chat message says: plain text, or a list of parts (text, images,
//! PDF documents). Parsed and checked here once; each provider file maps the
//! parts to its own form and says which it cannot take.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A message's `content`: a string, or a list of parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text (contract v1).
    Text(String),
    /// Text, images and documents, in order.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The words.
        text: String,
    },
    /// An image, by URL or as base64 bytes.
    Image(Media),
    /// A document (PDF), by URL or as base64 bytes.
    Document(Media),
}

/// Where the bytes of an image or a document are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Media {
    /// An `http(s)` URL the provider fetches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The bytes, base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// `image/png`, `application/pdf`, ...: required with `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// An image's width and height, read once from the bytes' header (for
    /// token estimates; `None` for a URL or an unreadable header).
    #[serde(skip)]
    pub pixels: Option<(u32, u32)>,
    /// A PDF's pages, counted once in its bytes (`None` for a URL).
    #[serde(skip)]
    pub pages: Option<u32>,
}

/// The PDF media type, the one document type every provider takes.
pub const PDF: &str = "application/pdf";

impl MessageContent {
    /// The text of the content: the string, or its text parts joined.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The images and documents of the content.
    pub fn media(&self) -> impl Iterator<Item = &ContentPart> {
        let parts: &[ContentPart] = match self {
            MessageContent::Text(_) => &[],
            MessageContent::Parts(parts) => parts,
        };
        parts
            .iter()
            .filter(|p| !matches!(p, ContentPart::Text { .. }))
    }
}

impl From<String> for MessageContent {
    fn from(text: String) -> MessageContent {
        MessageContent::Text(text)
    }
}

impl From<&str> for MessageContent {
    fn from(text: &str) -> MessageContent {
        MessageContent::Text(text.to_owned())
    }
}

/// Fits `(w, h)` within `edge` on its long side, keeping the aspect.
pub(super) fn fit_long_edge(w: u64, h: u64, edge: u64) -> (u64, u64) {
    let long = w.max(h).max(1);
    if long <= edge {
        (w, h)
    } else {
        (w * edge / long, h * edge / long)
    }
}

/// A PDF given by URL, whose pages are not known before the call: counted
/// as ten.
pub(super) const UNKNOWN_PDF_PAGES: u64 = 10;

impl Media {
    /// The pixels as `u64`s, when known.
    pub fn size(&self) -> Option<(u64, u64)> {
        self.pixels.map(|(w, h)| (u64::from(w), u64::from(h)))
    }

    /// The pages, when known, else [`UNKNOWN_PDF_PAGES`].
    pub fn pages_or_guess(&self) -> u64 {
        self.pages.map_or(UNKNOWN_PDF_PAGES, u64::from)
    }

    /// `data:<media_type>;base64,<data>`, for providers that take a data URL.
    pub fn data_url(&self) -> Option<String> {
        let data = self.data.as_deref()?;
        let media_type = self.media_type.as_deref()?;
        Some(format!("data:{media_type};base64,{data}"))
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MessageContent, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::String(text) => Ok(MessageContent::Text(text)),
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| parse_part(item).map_err(|e| format!("content part {i}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .map(MessageContent::Parts)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "`content` must be a string or a list of parts",
            )),
        }
    }
}

/// The wire form of a part, checked by [`parse_part`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    url: Option<String>,
    data: Option<String>,
    media_type: Option<String>,
}

fn parse_part(item: Value) -> Result<ContentPart, String> {
    let raw: RawPart = serde_json::from_value(item).map_err(|e| e.to_string())?;
    let media = || Media {
        url: raw.url.clone(),
        data: raw.data.clone(),
        media_type: raw.media_type.clone(),
        ..Media::default()
    };
    let part = match raw.kind.as_str() {
        "text" => {
            if raw.url.is_some() || raw.data.is_some() || raw.media_type.is_some() {
                return Err("a text part takes only `text`".into());
            }
            let text = raw.text.clone().ok_or("a text part needs `text`")?;
            if text.trim().is_empty() {
                return Err("`text` is empty".into());
            }
            ContentPart::Text { text }
        }
        "image" | "document" if raw.text.is_some() => {
            return Err(format!("an {} part has no `text`", raw.kind));
        }
        "image" => ContentPart::Image(check_media(media(), "image")?),
        "document" => ContentPart::Document(check_media(media(), "document")?),
        other => {
            return Err(format!(
                "unknown part type `{other}` (text, image or document)"
            ));
        }
    };
    Ok(part)
}

/// Exactly one of `url` and `data`; a `data:` URL becomes `data` and
/// `media_type`; base64 that decodes; a media type of the part's kind, in
/// its plain form (lower case, no parameters, `image/jpg` as `image/jpeg`:
/// every provider refuses the other spellings).
fn check_media(mut media: Media, kind: &str) -> Result<Media, String> {
    media.media_type = media.media_type.as_deref().map(plain_media_type);
    if let Some(url) = media.url.take() {
        match url.get(..5) {
            Some(scheme) if scheme.eq_ignore_ascii_case("data:") => {
                if media.data.is_some() {
                    return Err(format!("an {kind} part takes `url` or `data`, not both"));
                }
                let (media_type, data) = split_data_url(&url[5..])?;
                if let Some(given) = media.media_type.as_deref().filter(|g| *g != media_type) {
                    return Err(format!(
                        "`media_type` {given} contradicts the data URL's {media_type}"
                    ));
                }
                media.data = Some(data.to_owned());
                media.media_type = Some(media_type);
            }
            _ => media.url = Some(url),
        }
    }
    match (&media.url, &media.data) {
        (Some(_), Some(_)) => {
            return Err(format!("an {kind} part takes `url` or `data`, not both"));
        }
        (None, None) => return Err(format!("an {kind} part needs `url` or `data`")),
        (Some(url), None) => check_url(url)?,
        (None, Some(data)) => {
            if media.media_type.is_none() {
                return Err(format!("an {kind} part with `data` needs `media_type`"));
            }
            let bytes = STANDARD
                .decode(data)
                .ok()
                .filter(|b| !b.is_empty())
                .ok_or("`data` is not valid base64 (standard alphabet, padded)")?;
            // Measured here, the one time the bytes are decoded.
            if kind == "image" {
                media.pixels = imagesize::blob_size(&bytes).ok().and_then(|s| {
                    Some((u32::try_from(s.width).ok()?, u32::try_from(s.height).ok()?))
                });
            } else {
                media.pages = Some(pdf_pages(&bytes));
            }
        }
    }
    if let Some(media_type) = &media.media_type {
        check_media_type(kind, media_type)?;
    }
    Ok(media)
}

/// The pages of a PDF: the largest `/Count` (the page tree's root holds the
/// total) or the `/Type /Page` objects, whichever is more; at least 1 (a
/// compressed object stream hides both).
pub(super) fn pdf_pages(bytes: &[u8]) -> u32 {
    let mut pages = 0u32;
    for needle in [&b"/Type /Page"[..], &b"/Type/Page"[..]] {
        let mut rest = bytes;
        while let Some(at) = find(rest, needle) {
            rest = &rest[at + needle.len()..];
            if rest.first() != Some(&b's') {
                pages = pages.saturating_add(1);
            }
        }
    }
    let mut rest = bytes;
    let mut count = 0u32;
    while let Some(at) = find(rest, b"/Count") {
        rest = &rest[at + 6..];
        let digits: String = rest
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .map(|b| char::from(*b))
            .collect();
        count = count.max(digits.parse().unwrap_or(0));
    }
    pages.max(count).max(1)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `<type>[;param...];base64,<data>` → the plain type and the data.
fn split_data_url(rest: &str) -> Result<(String, &str), String> {
    let (head, data) = rest
        .split_once(',')
        .ok_or("a `data:` URL needs a `,` before its bytes")?;
    let is_base64 = head
        .rsplit(';')
        .next()
        .is_some_and(|last| last.eq_ignore_ascii_case("base64"));
    if !is_base64 {
        return Err("a `data:` URL must be base64 (`data:<type>;base64,...`)".into());
    }
    Ok((plain_media_type(head), data))
}

/// `IMAGE/JPG; charset=x` → `image/jpeg`.
fn plain_media_type(media_type: &str) -> String {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpg" => "image/jpeg".to_owned(),
        _ => essence,
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("`url` {url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!(
            "`url` must be http or https (or a base64 `data:` URL), not `{other}:`"
        )),
    }
}

fn check_media_type(kind: &str, media_type: &str) -> Result<(), String> {
    let ok = match kind {
        "image" => media_type.starts_with("image/"),
        _ => media_type == PDF,
    };
    if ok {
        Ok(())
    } else if kind == "image" {
        Err(format!(
            "`media_type` of an image must be image/..., not `{media_type}`"
        ))
    } else {
        Err(format!(
            "`media_type` of a document must be {PDF}, not `{media_type}`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn content(v: Value) -> Result<MessageContent, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn string_and_parts_parse() {
        assert_eq!(
            content(json!("hi")).unwrap(),
            MessageContent::Text("hi".into())
        );
        let parts = content(json!([
            {"type": "text", "text": "what is this?"},
            {"type": "image", "url": "https://example.com/cat.png"},
            {"type": "image", "data": "iVBORw0KGgo=", "media_type": "image/png"},
            {"type": "document", "data": "JVBERi0=", "media_type": "application/pdf"},
        ]))
        .unwrap();
        assert_eq!(parts.media().count(), 3);
        assert_eq!(parts.text(), "what is this?");
    }

    #[test]
    fn a_data_url_becomes_data_and_media_type() {
        let parts =
            content(json!([{"type": "image", "url": "data:image/jpeg;base64,/9j/4A=="}])).unwrap();
        let MessageContent::Parts(parts) = parts else {
            panic!()
        };
        assert_eq!(
            parts[0],
            ContentPart::Image(Media {
                url: None,
                data: Some("/9j/4A==".into()),
                media_type: Some("image/jpeg".into()),
                ..Media::default()
            })
        );
    }

    #[test]
    fn pdf_pages_are_counted() {
        let flat = b"%PDF-1.4 1 0 obj << /Type /Pages /Count 2 >> 2 0 obj << /Type /Page >> 3 0 obj <</Type/Page>>";
        assert_eq!(pdf_pages(flat), 2);
        // Page objects hidden in a compressed stream: the root's /Count says.
        assert_eq!(
            pdf_pages(b"%PDF-1.5 << /Type /Pages /Count 12 /Kids [...] >>"),
            12
        );
        assert_eq!(pdf_pages(b"%PDF-1.7 nothing readable"), 1);
    }

    #[test]
    fn images_are_measured_once_at_parse() {
        // A 1×1 PNG.
        let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        let parts =
            content(json!([{"type": "image", "data": png, "media_type": "image/png"}])).unwrap();
        let Some(ContentPart::Image(m)) = parts.media().next() else {
            panic!()
        };
        assert_eq!(m.pixels, Some((1, 1)));
    }

    #[test]
    fn media_types_are_made_plain() {
        let parts = content(json!([
            {"type": "image", "url": "data:IMAGE/PNG;name=a.png;BASE64,iVBORw0KGgo="},
            {"type": "image", "data": "/9j/4A==", "media_type": "image/jpg"},
        ]))
        .unwrap();
        let types: Vec<_> = parts
            .media()
            .map(|p| match p {
                ContentPart::Image(m) => m.media_type.clone().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(types, ["image/png", "image/jpeg"]);
        let err = content(json!([{"type": "image", "url": "data:image/png;base64,AA==", "media_type": "image/gif"}]))
            .unwrap_err();
        assert!(err.contains("contradicts"), "{err}");
    }

    #[test]
    fn bad_parts_are_named() {
        let cases = [
            (json!(7), "string or a list"),
            (
                json!([{"type": "video", "url": "https://x"}]),
                "unknown part type `video`",
            ),
            (json!([{"type": "image"}]), "needs `url` or `data`"),
            (
                json!([{"type": "image", "url": "https://x/a.png", "data": "AA=="}]),
                "not both",
            ),
            (
                json!([{"type": "image", "data": "AA=="}]),
                "needs `media_type`",
            ),
            (
                json!([{"type": "image", "data": "not base64!", "media_type": "image/png"}]),
                "not valid base64",
            ),
            (
                json!([{"type": "image", "url": "file:///etc/passwd"}]),
                "http or https",
            ),
            (
                json!([{"type": "document", "data": "AA==", "media_type": "text/html"}]),
                "must be application/pdf",
            ),
            (
                json!([{"type": "image", "data": "AA==", "media_type": "application/pdf"}]),
                "image/...",
            ),
            (json!([{"type": "text", "text": " "}]), "`text` is empty"),
            (
                json!([{"type": "text", "text": "a", "extra": 1}]),
                "unknown field `extra`",
            ),
        ];
        for (value, wanted) in cases {
            let err = content(value.clone()).unwrap_err();
            assert!(err.contains(wanted), "{value}: {err}");
        }
        let err = content(json!(["x", {"type": "image"}])).unwrap_err();
        assert!(err.contains("content part 0"), "{err}");
    }
}
