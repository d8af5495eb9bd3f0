//! The `/messages` query string: decoding, the parameters' rules, and the window they select.

use crate::model::{DEFAULT_CHAT, MAX_CHAT_ID_LEN, ObjectId};
use crate::store::{Bound, HistoryQuery, Window};

/// `limit` when the query has none.
pub(super) const DEFAULT_LIMIT: i64 = 30;
/// The values `limit` may take.
pub(super) const LIMIT: std::ops::RangeInclusive<i64> = 1..=100;

#[derive(Default)]
struct Raw {
    before: Option<String>,
    before_id: Option<String>,
    after: Option<String>,
    after_id: Option<String>,
    limit: Option<String>,
    chat_id: Option<String>,
}

/// Reads a history query from a raw query string; the error is a 422 detail.
pub(super) fn history(raw: &str) -> Result<HistoryQuery, String> {
    let mut q = Raw::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // A repeated parameter keeps its last value, as Starlette does.
        let slot = match percent_decode(key).as_str() {
            "before" => &mut q.before,
            "beforeId" => &mut q.before_id,
            "after" => &mut q.after,
            "afterId" => &mut q.after_id,
            "limit" => &mut q.limit,
            "chatId" => &mut q.chat_id,
            _ => continue,
        };
        *slot = Some(percent_decode(value));
    }

    let limit = match &q.limit {
        None => DEFAULT_LIMIT,
        Some(s) => int(s).filter(|n| LIMIT.contains(n)).ok_or_else(|| {
            format!(
                "limit: must be an integer from {} to {}",
                LIMIT.start(),
                LIMIT.end()
            )
        })?,
    };
    let chat_id = match q.chat_id {
        None => DEFAULT_CHAT.to_owned(),
        Some(s) if crate::model::valid_chat_id(&s) => s,
        Some(_) => {
            return Err(format!(
                "chatId: must be 1 to {MAX_CHAT_ID_LEN} characters of A-Z a-z 0-9 _ . : -"
            ));
        }
    };
    let before = time(q.before.as_deref(), "before")?;
    let after = time(q.after.as_deref(), "after")?;
    let before_id = id(q.before_id.as_deref(), "beforeId")?;
    let after_id = id(q.after_id.as_deref(), "afterId")?;

    // Any combination: both sides make a range, a time and an id on one
    // side both bound it.
    let window = Window {
        before: Bound {
            time: before,
            id: before_id,
        },
        after: Bound {
            time: after,
            id: after_id,
        },
    };
    Ok(HistoryQuery {
        chat_id,
        window,
        limit: u32::try_from(limit).expect("limit was checked to be within 1..=100"),
    })
}

fn time(value: Option<&str>, name: &str) -> Result<Option<i64>, String> {
    value
        .map(|s| {
            int(s).ok_or_else(|| {
                format!("{name}: must be an integer (milliseconds since the Unix epoch)")
            })
        })
        .transpose()
}

fn id(value: Option<&str>, name: &str) -> Result<Option<ObjectId>, String> {
    value
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{name}: must be a 24-character hex message id"))
        })
        .transpose()
}

/// An integer as Pydantic reads one from a string: surrounding white space
/// allowed, an optional sign, digits only.
fn int(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

/// `application/x-www-form-urlencoded` decoding, as Starlette applies it to
/// query strings: `+` is a space, a malformed escape stays as written, and
/// bytes that are not UTF-8 become U+FFFD.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}
