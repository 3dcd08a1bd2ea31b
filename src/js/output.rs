//! The worker's answer to a call, the glue's JSON text, made into an [`Output`]: the codec's
//! `data`, `normalizeUplink`'s measurements and the warnings of both.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::{one_line, JsError, Output};

/// The glue's JSON: `{data, warnings, errors, normalized}`.
pub fn parse(text: &str) -> Result<Output, JsError> {
    let v: Json =
        serde_json::from_str(&well_formed(text)).map_err(|e| JsError::Junk(e.to_string()))?;
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
    // What `normalizeUplink` returned that holds no measurement costs a warning, not silence.
    let normalized = match top.remove("normalized") {
        Some(Json::Object(mut n)) => {
            let errors = messages(n.get("errors")).unwrap_or_default();
            if errors.is_empty() {
                warnings.extend(messages(n.get("warnings")).unwrap_or_default());
                match n.remove("data") {
                    Some(Json::Object(m)) => vec![m],
                    Some(Json::Array(items)) => {
                        let all = items.len();
                        let measurements: Vec<_> = items
                            .into_iter()
                            .filter_map(|i| match i {
                                Json::Object(m) => Some(m),
                                _ => None,
                            })
                            .collect();
                        if measurements.len() < all {
                            warnings.push(format!(
                                "normalizeUplink: {} of the {all} measurements in its data are \
                                 no object, left out",
                                all - measurements.len()
                            ));
                        }
                        measurements
                    }
                    Some(other) => {
                        warnings.push(format!(
                            "normalizeUplink: data that is {}, not an object or an array of \
                             them, left out",
                            kind(&other)
                        ));
                        Vec::new()
                    }
                    None => {
                        warnings.push("normalizeUplink: no data".into());
                        Vec::new()
                    }
                }
            } else {
                warnings.push(format!("normalizeUplink: {}", errors.join("; ")));
                Vec::new()
            }
        }
        Some(other) => {
            warnings.push(format!(
                "normalizeUplink: returned {}, not {{data}}",
                kind(&other)
            ));
            Vec::new()
        }
        None => Vec::new(),
    };
    // As the network server's object ([`crate::mapping::MAX_DEPTH`]): `data` may be nested
    // deeper here than its record could be read.
    let deepest = std::iter::once(&data)
        .chain(&normalized)
        .map(|m| 1 + m.values().map(crate::mapping::depth).max().unwrap_or(0))
        .max();
    if deepest > Some(crate::mapping::MAX_DEPTH) {
        return Err(JsError::Junk(format!(
            "data nested deeper than {} levels, too deep for its record to be read",
            crate::mapping::MAX_DEPTH
        )));
    }
    Ok(Output {
        data,
        normalized,
        warnings,
        retired: false,
    })
}

/// `text` with every lone UTF-16 surrogate escape (`\ud800` to `\udfff` not in a pair) made
/// `\ufffd`, as `String.prototype.toWellFormed` would. QuickJS's `JSON.stringify` writes a lone
/// surrogate so (a codec that builds text from 16-bit units of the payload, such as
/// `String.fromCharCode`), and serde_json refuses it: one such label, key or warning cost
/// the whole result, its readings with it.
fn well_formed(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut fixed = String::new();
    // `text[..copied]` is in `fixed`.
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        // An escape is a backslash and one character, or `\uXXXX`: skipping the character
        // keeps `\\ud800` (a backslash, then text) as it is.
        match surrogate_at(b, i) {
            None => i += 2,
            Some(0xd800..=0xdbff) if surrogate_at(b, i + 6).is_some_and(|low| low >= 0xdc00) => {
                i += 12
            }
            Some(_) => {
                fixed.push_str(&text[copied..i]);
                fixed.push_str("\\ufffd");
                i += 6;
                copied = i;
            }
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    fixed.push_str(&text[copied..]);
    Cow::Owned(fixed)
}

/// The UTF-16 surrogate escaped at `b[i..]` (`\ud800` to `\udfff`), if one is.
fn surrogate_at(b: &[u8], i: usize) -> Option<u16> {
    match b.get(i..i + 6)? {
        [b'\\', b'u', hex @ ..] if hex.iter().all(u8::is_ascii_hexdigit) => {
            let unit = u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            (0xd800..=0xdfff).contains(&unit).then_some(unit)
        }
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_become_the_replacement_character() {
        for (text, fixed) in [
            (r#"["\ud800"]"#, r#"["\ufffd"]"#),
            (r#"["a\uDC00b\ud83d"]"#, r#"["a\ufffdb\ufffd"]"#),
            // A pair, in either case, stays; a low one before a high one is no pair.
            (
                r#"["\ud83d\ude00\uD83D\uDE00"]"#,
                r#"["\ud83d\ude00\uD83D\uDE00"]"#,
            ),
            (r#"["\udc00\ud800"]"#, r#"["\ufffd\ufffd"]"#),
            (r#"["\ud800\u0041"]"#, r#"["\ufffd\u0041"]"#),
            // An escaped backslash, then text: no escape; an odd one more is.
            (r#"["\\ud800"]"#, r#"["\\ud800"]"#),
            (r#"["\\\ud800"]"#, r#"["\\\ufffd"]"#),
            (r#"["é\ud800", "\ud80"]"#, r#"["é\ufffd", "\ud80"]"#),
        ] {
            assert_eq!(well_formed(text), fixed, "{text}");
        }
        assert!(matches!(well_formed(r#"{"k":"\u0041"}"#), Cow::Borrowed(_)));
    }

    /// What `normalizeUplink` returned that holds no measurement is left out with a warning:
    /// an item of its `data` array that is no object, a `data` that is neither an object nor
    /// an array, no `data`, a result that is no object.
    #[test]
    fn normalized_results_that_are_no_measurement_are_warned_about() {
        for (normalized, kept, warning) in [
            (
                r#"{"data":[{"a":1},2,null,{"b":2}]}"#,
                2,
                "normalizeUplink: 2 of the 4 measurements in its data are no object, left out",
            ),
            (
                r#"{"data":"x"}"#,
                0,
                "normalizeUplink: data that is a string, not an object or an array of them, \
                 left out",
            ),
            (r#"{"warnings":[]}"#, 0, "normalizeUplink: no data"),
            ("7", 0, "normalizeUplink: returned a number, not {data}"),
        ] {
            let out = parse(&format!(r#"{{"data":{{}},"normalized":{normalized}}}"#)).unwrap();
            assert_eq!(out.normalized.len(), kept, "{normalized}");
            assert_eq!(out.warnings, [warning], "{normalized}");
        }
        let out = parse(r#"{"data":{},"normalized":{"data":[{"a":1}]}}"#).unwrap();
        assert_eq!(out.normalized.len(), 1);
        assert!(out.warnings.is_empty());
    }

    /// `data`, or a normalized measurement, nested deeper than a record can carry
    /// (`MAX_DEPTH`) is refused: its record would be nested deeper than JSON parsers read.
    #[test]
    fn data_too_deep_for_its_record_is_refused() {
        let max = crate::mapping::MAX_DEPTH;
        // An object holding `arrays` nested arrays is `arrays + 1` levels deep.
        let nested =
            |arrays: usize| format!(r#"{{"a":{}1{}}}"#, "[".repeat(arrays), "]".repeat(arrays));
        for (arrays, ok) in [(max - 1, true), (max, false)] {
            let data = format!(r#"{{"data":{}}}"#, nested(arrays));
            let normalized = format!(
                r#"{{"data":{{}},"normalized":{{"data":[{{}},{}]}}}}"#,
                nested(arrays)
            );
            for text in [data, normalized] {
                match parse(&text) {
                    Ok(_) => assert!(ok, "{arrays}"),
                    Err(JsError::Junk(e)) => {
                        assert!(!ok, "{arrays}: {e}");
                        assert!(e.starts_with("data nested deeper than 64 levels"), "{e}");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}
