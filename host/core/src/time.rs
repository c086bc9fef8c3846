//! Wall-clock helpers.

use crate::error::ActorError;

/// Milliseconds since the Unix epoch, now.
#[inline]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds since the epoch from RFC 3339 (`2026-11-01T12:00:00Z`) or a number.
pub fn parse_time(s: &str) -> Result<i64, ActorError> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| ActorError::bad_request(format!("bad time {s:?} (try 2026-11-01T12:00:00Z): {e}")))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}
