//! What the BLF room checks in a SUBSCRIBE (RFC 6665 §4.2.1.1): pure functions of the request.

use super::{DEFAULT_EXPIRES, EVENT_PACKAGE, MAX_EXPIRES, MIN_EXPIRES};
use crate::park::dialog_info::DIALOG_INFO_CONTENT_TYPE;
use crate::sip::Request;

/// The granted expiry for a SUBSCRIBE's `Expires`, or the refusal (status, reason; a 423 carries Min-Expires).
pub fn granted_expires(req: &Request) -> Result<u32, (u16, &'static str)> {
    let granted = match (req.common.header("Expires"), req.common.expires()) {
        (None, _) => DEFAULT_EXPIRES,
        (Some(_), None) => return Err((400, "Bad Expires Header")),
        (Some(_), Some(0)) => 0,
        (Some(_), Some(v)) if v < MIN_EXPIRES => return Err((423, "Interval Too Brief")),
        (Some(_), Some(v)) => v.min(MAX_EXPIRES),
    };
    Ok(granted)
}

/// Checks the Event header: `Ok(id param)` for `dialog`; otherwise the refusal.
pub fn check_event(req: &Request) -> Result<Option<String>, (u16, &'static str)> {
    if req.common.header("Event").is_none() {
        return Err((400, "Missing Event Header"));
    }
    let Some((package, params)) = req.common.event() else { return Err((400, "Bad Event Header")) };
    if !package.eq_ignore_ascii_case(EVENT_PACKAGE) {
        return Err((489, "Bad Event"));
    }
    Ok(params.value("id").map(str::to_string))
}

/// Whether the SUBSCRIBE's `Accept` (if any) admits `application/dialog-info+xml` (RFC 6665 §4.2.1.1 → 406).
pub fn accepts_dialog_info(req: &Request) -> bool {
    let mut any = false;
    for value in req.common.headers_named("Accept") {
        for item in value.split(',') {
            let media = item.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if media.is_empty() {
                continue;
            }
            any = true;
            if media == DIALOG_INFO_CONTENT_TYPE || media == "*/*" || media == "application/*" {
                return true;
            }
        }
    }
    !any
}
