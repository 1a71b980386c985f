//! A log entry, its hash chain and its on-disk encoding.
//!
//! `hash = sha256(prev_hash ‖ canonical(entry))` with an all-zero `prev_hash` before index 1.
//! The canonical form is a fixed, length-prefixed binary layout (not JSON), so two builds
//! can never disagree on the bytes that are hashed.

use sha2::{Digest, Sha256};

pub const HASH_LEN: usize = 32;
pub type Hash = [u8; HASH_LEN];

/// The hash before the first entry.
pub const GENESIS: Hash = [0; HASH_LEN];

/// Domain separation: a hash of this log format can never be mistaken for another.
const HASH_DOMAIN: &[u8] = b"geo-agent/log/v1";
/// First byte of a stored entry: the encoding version.
const ENCODING_V1: u8 = 1;

/// One entry of a replicated log, as written by a primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Contiguous from 1.
    pub index: u64,
    /// Epoch of the primary that wrote it; never decreases along a log.
    pub epoch: u64,
    /// Milliseconds since the Unix epoch, on the primary's clock.
    pub timestamp_ms: i64,
    pub author: String,
    /// Meaning depends on the log (settings: JSON of a change).
    pub payload: Vec<u8>,
    pub hash: Hash,
}

impl Entry {
    /// Builds the entry that follows `prev_hash`, computing its hash.
    pub fn new(
        prev_hash: &Hash,
        index: u64,
        epoch: u64,
        timestamp_ms: i64,
        author: String,
        payload: Vec<u8>,
    ) -> Entry {
        let mut entry = Entry {
            index,
            epoch,
            timestamp_ms,
            author,
            payload,
            hash: GENESIS,
        };
        entry.hash = entry.chained_hash(prev_hash);
        entry
    }

    /// The hash this entry must carry if it follows `prev_hash`.
    pub fn chained_hash(&self, prev_hash: &Hash) -> Hash {
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN);
        h.update(prev_hash);
        h.update(self.index.to_be_bytes());
        h.update(self.epoch.to_be_bytes());
        h.update(self.timestamp_ms.to_be_bytes());
        h.update((self.author.len() as u64).to_be_bytes());
        h.update(self.author.as_bytes());
        h.update((self.payload.len() as u64).to_be_bytes());
        h.update(&self.payload);
        h.finalize().into()
    }

    /// The size of [`Entry::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + 8 + 8 + 8 + self.author.len() + 8 + self.payload.len() + HASH_LEN
    }

    /// Encodes the entry for storage (the index is the key, so it is not repeated).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(ENCODING_V1);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        out.extend_from_slice(&(self.author.len() as u64).to_be_bytes());
        out.extend_from_slice(self.author.as_bytes());
        out.extend_from_slice(&(self.payload.len() as u64).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&self.hash);
        out
    }

    /// Decodes a stored entry; any malformation is an error naming the index.
    pub(crate) fn decode(index: u64, raw: &[u8]) -> Result<Entry, String> {
        let mut r = Reader(raw);
        let version = r.take(1)?[0];
        if version != ENCODING_V1 {
            return Err(format!("unknown entry encoding {version}"));
        }
        let epoch = r.u64()?;
        let timestamp_ms = r.u64()? as i64;
        let author_len = usize::try_from(r.u64()?).map_err(|_| "author length overflows")?;
        let author = String::from_utf8(r.take(author_len)?.to_vec())
            .map_err(|_| "author is not UTF-8".to_string())?;
        let payload_len = usize::try_from(r.u64()?).map_err(|_| "payload length overflows")?;
        let payload = r.take(payload_len)?.to_vec();
        let hash: Hash = r
            .take(HASH_LEN)?
            .try_into()
            .map_err(|_| "short hash".to_string())?;
        if !r.0.is_empty() {
            return Err(format!("{} trailing bytes", r.0.len()));
        }
        Ok(Entry {
            index,
            epoch,
            timestamp_ms,
            author,
            payload,
            hash,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated: wanted {n} bytes, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let raw: [u8; 8] = self
            .take(8)?
            .try_into()
            .map_err(|_| "short integer".to_string())?;
        Ok(u64::from_be_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chain(payloads: &[Vec<u8>]) -> Vec<Entry> {
        let mut prev = GENESIS;
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let e = Entry::new(
                    &prev,
                    i as u64 + 1,
                    1,
                    1_700_000_000_000,
                    "a".into(),
                    p.clone(),
                );
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = Entry::new(&GENESIS, 1, 1, 5, "alice".into(), b"x".to_vec());
        let variants = [
            Entry {
                index: 2,
                ..base.clone()
            },
            Entry {
                epoch: 2,
                ..base.clone()
            },
            Entry {
                timestamp_ms: 6,
                ..base.clone()
            },
            Entry {
                author: "bob".into(),
                ..base.clone()
            },
            Entry {
                payload: b"y".to_vec(),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.chained_hash(&GENESIS), base.hash, "{v:?}");
        }
        assert_ne!(base.chained_hash(&[1; 32]), base.hash);
    }

    #[test]
    fn encoded_len_is_the_encoding_length() {
        let e = Entry::new(&GENESIS, 7, 3, -1, "ünï".into(), vec![0; 100]);
        assert_eq!(e.encoded_len(), e.encode().len());
    }

    #[test]
    fn length_prefixes_keep_author_and_payload_apart() {
        let a = Entry::new(&GENESIS, 1, 1, 0, "ab".into(), b"c".to_vec());
        let b = Entry::new(&GENESIS, 1, 1, 0, "a".into(), b"bc".to_vec());
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn decode_rejects_damage_without_panicking() {
        let e = Entry::new(&GENESIS, 7, 3, -1, "ünï".into(), vec![0, 1, 2]);
        let raw = e.encode();
        assert_eq!(Entry::decode(7, &raw).unwrap(), e);
        for cut in 0..raw.len() {
            assert!(Entry::decode(7, &raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(Entry::decode(7, &longer).is_err());
        let mut bad_version = raw;
        bad_version[0] = 9;
        assert!(Entry::decode(7, &bad_version).is_err());
    }

    proptest! {
        #[test]
        fn a_prefix_always_hashes_the_same(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 1..20), cut in 0usize..20) {
            let full = chain(&payloads);
            let cut = cut.min(payloads.len());
            let prefix = chain(&payloads[..cut]);
            prop_assert_eq!(&full[..cut], &prefix[..]);
        }

        #[test]
        fn decode_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Entry::decode(1, &raw);
        }
    }
}
