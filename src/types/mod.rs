//! Leaf types every layer may use: what a site is (its role and id), how sites address each
//! other, and what kind of failure an error is. Nothing here imports another module of the
//! crate, so anything may import it.

mod addr;
mod error;
mod promotion;
mod rate;
mod role;
mod site_id;

pub use addr::{check_plaintext, normalize_url};
pub use error::{Classify, ErrorKind};
pub use promotion::{Promotion, UNPROVEN_EPOCHS};
pub use rate::{format_rate, parse_rate, MAX_RATE, MIN_RATE};
pub use role::Role;
pub use site_id::{validate_site_id, MAX_SITE_ID_LEN};

/// The first `max` characters of `s` (all of it when shorter), cut on a character boundary.
pub fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
