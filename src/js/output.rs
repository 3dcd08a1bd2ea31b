//! The worker's answer to a call, the glue's JSON text, made into an [`Output`]: the codec's
//! `data`, `normalizeUplink`'s measurements and the warnings of both.

use serde_json::Value as Json;

use super::{one_line, JsError, Output};

/// The glue's JSON: `{data, warnings, errors, normalized}`.
pub fn parse(text: &str) -> Result<Output, JsError> {
    let v: Json = serde_json::from_str(text).map_err(|e| JsError::Junk(e.to_string()))?;
    let mut top = match v {
        Json::Object(top) => top,
        other => return Err(JsError::Junk(format!("{}, not {{data}}", kind(&other)))),
    };
    if let Some(errors) = messages(top.get("errors")).filter(|e| !e.is_empty()) {
        return Err(JsError::Reported(one_line(&errors.join("; "))));
    }
    let data = match top.remove("data") {
        Some(Json::Object(m)) => m,
        Some(other) => {
            return Err(JsError::Junk(format!(
                "data that is not an object: {}",
                kind(&other)
            )))
        }
        None => return Err(JsError::Junk("no data".into())),
    };
    let mut warnings = messages(top.get("warnings")).unwrap_or_default();
    let normalized = match top.remove("normalized") {
        Some(Json::Object(mut n)) => {
            let errors = messages(n.get("errors")).unwrap_or_default();
            if errors.is_empty() {
                warnings.extend(messages(n.get("warnings")).unwrap_or_default());
                match n.remove("data") {
                    Some(Json::Object(m)) => vec![m],
                    Some(Json::Array(items)) => items
                        .into_iter()
                        .filter_map(|i| match i {
                            Json::Object(m) => Some(m),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            } else {
                warnings.push(format!("normalizeUplink: {}", errors.join("; ")));
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    Ok(Output {
        data,
        normalized,
        warnings,
        retired: false,
    })
}

fn messages(v: Option<&Json>) -> Option<Vec<String>> {
    match v? {
        Json::Array(items) => Some(
            items
                .iter()
                .map(|i| match i {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        Json::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}
