//! Site ids: how sites name themselves in logs, reports and the status page.

/// Longest site id accepted.
pub const MAX_SITE_ID_LEN: usize = 64;

/// A site id is 1–64 characters of ASCII letters, digits, `_`, `.` and `-`: safe in a
/// path, a header, a metric label and an HTML page without escaping surprises.
pub fn validate_site_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SITE_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "site id {id:?} must be 1-{MAX_SITE_ID_LEN} characters of letters, digits, '_', '.', '-'"
        ))
    }
}
