//! The multipart forms of `/v1/images/edits` and `/v1/images/variations` (OpenAI's shapes): image
//! files (`image`, or several `image[]`), an optional `mask` file, and text fields, each at most
//! once; an unknown field is a 400 naming it, a body over `--max-body-bytes` a 413.

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::Multipart;

use super::ApiError;

/// A form read, not checked beyond its fields' names.
#[derive(Debug, Default)]
pub struct ImageForm {
    /// `image` or `image[]` files, in order.
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
    text: HashMap<String, String>,
}

/// A multipart read failure: 413 over `limit` bytes, else 400.
pub fn form_error(e: MultipartError, limit: usize) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(format!("cannot read the multipart form: {}", e.body_text()))
    }
}

impl ImageForm {
    /// Reads `form`: image files, a `mask` file where `with_mask`, and the `fields` named (text).
    pub async fn read(
        form: Result<Multipart, MultipartRejection>,
        limit: usize,
        with_mask: bool,
        fields: &[&str],
    ) -> Result<Self, ApiError> {
        let mut form = form.map_err(|e| {
            ApiError::bad_request(format!("send a multipart/form-data body with an `image` file: {}", e.body_text()))
        })?;
        let mut out = ImageForm::default();
        while let Some(field) = form.next_field().await.map_err(|e| form_error(e, limit))? {
            let name = field.name().unwrap_or("").to_string();
            match name.as_str() {
                "image" | "image[]" => out.images.push(field.bytes().await.map_err(|e| form_error(e, limit))?),
                "mask" if with_mask && out.mask.is_none() => {
                    out.mask = Some(field.bytes().await.map_err(|e| form_error(e, limit))?)
                }
                n if fields.contains(&n) && !out.text.contains_key(n) => {
                    let value = field.text().await.map_err(|e| form_error(e, limit))?;
                    out.text.insert(name, value);
                }
                n if fields.contains(&n) || n == "mask" && with_mask => {
                    return Err(ApiError::field(&name, "given more than once"))
                }
                _ => {
                    let mut known = vec!["image", "image[]"];
                    known.extend(with_mask.then_some("mask"));
                    known.extend(fields);
                    let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                    return Err(ApiError::field(&name, format!("unknown form field; expected {}", known.join(", "))));
                }
            }
        }
        if out.images.is_empty() {
            return Err(ApiError::field("image", "required: attach the image file as `image`"));
        }
        Ok(out)
    }

    /// A text field as given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.text.get(name).map(String::as_str)
    }

    /// A text field parsed as `T` (a number), naming it when it does not parse.
    pub fn parsed<T: FromStr>(&self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(t) => {
                t.trim().parse().map(Some).map_err(|_| ApiError::field(name, format!("must be {what}; got `{t}`")))
            }
        }
    }
}
