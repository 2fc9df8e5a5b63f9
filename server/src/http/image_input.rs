//! Images that come with requests: data URLs (base64), http(s) URLs when allowed, uploads; their
//! bytes are read when a preparation worker gets to them (`prepare.rs`), which decodes them.

use axum::body::Bytes;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::ApiError;

/// Base64 with or without padding, ignoring line breaks; the URL-safe alphabet as a fallback.
pub fn decode_base64(data: &str) -> Result<Vec<u8>, base64::DecodeError> {
    const CFG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CFG);
    const URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CFG);
    let cleaned: String;
    let data = if data.bytes().any(|b| b.is_ascii_whitespace()) {
        cleaned = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        cleaned.as_str()
    } else {
        data
    };
    STD.decode(data).or_else(|e| if data.contains(['-', '_']) { URL.decode(data) } else { Err(e) })
}

/// Where a request's image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// The base64 payload of a data URL.
    Base64(String),
    /// An http(s) URL to fetch (only with `--allow-remote-images`).
    Remote(String),
    /// An uploaded file's bytes.
    Upload(Bytes),
}

impl ImageSource {
    /// The image behind a `data:image/...;base64,` URL (or, when allowed, an http(s) URL), or
    /// the 400 that explains what to send.
    pub fn parse(url: &str, param: &str, allow_remote: bool) -> Result<Self, ApiError> {
        const HOW: &str = "send the image inline as a `data:image/<format>;base64,<data>` URL";
        if let Some(rest) = url.strip_prefix("data:") {
            let Some((meta, data)) = rest.split_once(',') else {
                return Err(ApiError::field(param, format!("malformed data URL (no comma); {HOW}")));
            };
            let mut meta = meta.split(';');
            let mime = meta.next().unwrap_or("").trim();
            if !mime.to_ascii_lowercase().starts_with("image/") {
                return Err(ApiError::field(param, format!("the data URL holds `{mime}`, not an image; {HOW}")));
            }
            if !meta.any(|p| p.trim().eq_ignore_ascii_case("base64")) {
                return Err(ApiError::field(param, format!("the data URL is not base64-encoded; {HOW}")));
            }
            return Ok(ImageSource::Base64(data.to_string()));
        }
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            if allow_remote {
                return Ok(ImageSource::Remote(url.to_string()));
            }
            return Err(ApiError::unsupported(
                param,
                format!("remote image URLs are refused by this server (see --allow-remote-images); {HOW}"),
            ));
        }
        Err(ApiError::field(param, format!("not an image URL; {HOW}")))
    }

    /// The image's bytes, still encoded (blocking: fetches remote URLs, at most `max_bytes`).
    pub fn bytes(self, param: &str, max_bytes: usize) -> Result<Bytes, ApiError> {
        Ok(match self {
            ImageSource::Base64(b64) => decode_base64(&b64)
                .map_err(|e| ApiError::invalid_image(param, format!("the data URL is not valid base64: {e}")))?
                .into(),
            ImageSource::Remote(url) => {
                super::remote::fetch(&url, max_bytes).map_err(|m| ApiError::invalid_image(param, m))?.into()
            }
            ImageSource::Upload(bytes) => bytes,
        })
    }
}
