//! A promotion proof as data: which site an admin promoted, to which epoch, and the
//! signature. Signing and checking it is `failover::promotion`; this is only what every
//! layer stores and passes on.

/// Epochs a site may hold without a proof: 0 (never heard of a primary) and 1, which the
/// first primary of a deployment takes by its configuration. Every higher epoch exists only
/// through an admin's signed promotion.
pub const UNPROVEN_EPOCHS: u64 = 1;

/// An admin's signed statement "site `site_id` is the primary at `epoch`".
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Promotion {
    pub site_id: String,
    pub epoch: u64,
    /// Ed25519 signature (64 bytes when well formed), hex in JSON.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for Promotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Promotion")
            .field("site_id", &self.site_id)
            .field("epoch", &self.epoch)
            .field("signature", &hex::encode(&self.signature))
            .finish()
    }
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}
