//! One record of a segment, `[len u32 LE][crc32c u32 LE][entry bytes]`, and the scan that
//! tells whole records from a torn tail and from corruption.
//!
//! The checksum covers the length field as well as the entry bytes
//! (`crc32c(len LE ‖ entry)`), so a damaged length is caught like damaged data.

/// Bytes before the entry: length and checksum.
pub const HEADER: usize = 8;
/// The smallest encoded entry (empty author and payload): anything shorter is not a record.
pub const MIN_ENTRY: usize = 1 + 8 + 8 + 8 + 8 + super::super::HASH_LEN;
/// The largest entry a record may hold; far above the log's own cap (64 KiB), low enough
/// that a length running past the end of the last segment is plausibly a torn write.
pub const MAX_ENTRY: usize = 1 << 20;

/// The checksum of a record holding `entry`.
fn checksum(len: u32, entry: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), entry)
}

/// Appends the record for `entry` (encoded bytes) to `out`.
pub fn encode_into(out: &mut Vec<u8>, entry: &[u8]) {
    let len = entry.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, entry).to_le_bytes());
    out.extend_from_slice(entry);
}

/// Checks a whole record (header and entry) and returns its entry bytes.
pub fn verify(record: &[u8]) -> Result<&[u8], String> {
    if record.len() < HEADER {
        return Err("short record".into());
    }
    let len = u32::from_le_bytes(record[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
    let entry = &record[HEADER..];
    if entry.len() != len as usize {
        return Err(format!(
            "length field says {len}, the record holds {}",
            entry.len()
        ));
    }
    if checksum(len, entry) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(entry)
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Start offset of every whole record, in order.
    pub offsets: Vec<u64>,
    /// End of the last whole record: where the next one goes.
    pub end: u64,
    /// Set when a torn tail follows `end` (only in the last segment): why it is torn.
    pub torn: Option<&'static str>,
}

/// Where and why a segment is corrupt.
#[derive(Debug, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// Scans a segment's bytes. In the last segment (`last`), an incomplete record at the end, or
/// a complete one with a bad checksum followed by nothing but zeros, is a torn write: the scan
/// stops before it. Anything else that is not a whole record — in any segment, or followed
/// by more data — is damage, reported, never skipped.
pub fn scan(bytes: &[u8], last: bool) -> Result<Scan, Damage> {
    let mut scan = Scan::default();
    let mut at = 0usize;
    let damage = |at: usize, reason: String| Damage {
        offset: at as u64,
        reason,
    };
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = if rest.len() < HEADER {
            Some("short header")
        } else {
            let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            if !(MIN_ENTRY..=MAX_ENTRY).contains(&len) {
                if last && all_zero(rest) {
                    Some("zeroed tail")
                } else {
                    return Err(damage(at, format!("impossible record length {len}")));
                }
            } else if rest.len() < HEADER + len {
                Some("short record")
            } else {
                match verify(&rest[..HEADER + len]) {
                    Ok(_) => None,
                    Err(_) if last && all_zero(&rest[HEADER + len..]) => {
                        Some("checksum mismatch in the last record")
                    }
                    Err(e) => return Err(damage(at, e)),
                }
            }
        };
        match torn {
            None => {
                let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                scan.offsets.push(at as u64);
                at += HEADER + len;
                scan.end = at as u64;
            }
            Some(why) if last => {
                scan.torn = Some(why);
                return Ok(scan);
            }
            Some(why) => return Err(damage(at, format!("{why} before the end of the log"))),
        }
    }
    Ok(scan)
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fill: u8, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, &vec![fill; len]);
        out
    }

    #[test]
    fn whole_records_scan_back() {
        let mut bytes = record(1, MIN_ENTRY);
        bytes.extend(record(2, 100));
        let scan = scan(&bytes, false).unwrap();
        assert_eq!(scan.offsets, [0, (HEADER + MIN_ENTRY) as u64]);
        assert_eq!(scan.end, bytes.len() as u64);
        assert!(scan.torn.is_none());
    }

    #[test]
    fn every_cut_of_the_last_record_is_torn_and_elsewhere_damage() {
        let first = record(1, 80);
        let second = record(2, 90);
        for cut in 1..second.len() {
            let mut bytes = first.clone();
            bytes.extend_from_slice(&second[..cut]);
            let s = scan(&bytes, true).unwrap();
            assert_eq!(s.offsets, [0], "cut {cut}");
            assert_eq!(s.end, first.len() as u64);
            assert!(s.torn.is_some());
            assert!(scan(&bytes, false).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_before_the_tail_is_damage() {
        let mut bytes = record(1, 80);
        bytes.extend(record(2, 80));
        // The checksum and the entry; for the length field see the next test.
        for bit in 32..(HEADER + 80) * 8 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let err = scan(&bad, true).unwrap_err();
            assert_eq!(err.offset, 0, "bit {bit}");
        }
    }

    /// The known limit: a length field damaged so that the record seems to run past the end
    /// of the last segment looks exactly like a torn write, and is cut with what follows. A
    /// damaged length that stays inside the file, or exceeds [`MAX_ENTRY`], is damage.
    #[test]
    fn a_flipped_length_bit_is_damage_unless_it_reads_as_a_torn_tail() {
        let mut bytes = record(1, 80);
        bytes.extend(record(2, 80));
        for bit in 0..32 {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let len = u32::from_le_bytes(bad[0..4].try_into().unwrap()) as usize;
            match scan(&bad, true) {
                Err(e) => assert_eq!(e.offset, 0, "bit {bit}"),
                Ok(s) => {
                    assert!(HEADER + len > bad.len() && len <= MAX_ENTRY, "bit {bit}");
                    assert_eq!((s.end, s.torn), (0, Some("short record")));
                }
            }
            assert!(scan(&bad, false).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn a_zeroed_tail_is_torn() {
        let mut bytes = record(1, 80);
        bytes.extend(vec![0; 700]);
        let s = scan(&bytes, true).unwrap();
        assert_eq!(s.end, (HEADER + 80) as u64);
        assert_eq!(s.torn, Some("zeroed tail"));
    }
}
