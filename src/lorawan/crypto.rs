//! MIC and FRMPayload crypto, delegated to the `lorawan` crate (lora-rs) and its software
//! AES/CMAC backend. Our side: pick the key by FPort, pass the full 32-bit FCnt, and only hand
//! the crate frames [`super::frame::parse`] has already length-checked (its accessors index
//! without checks).

use lorawan::keys::AES128;
use lorawan::parser::EncryptedDataPayload;

use super::frame::DataFrame;
use super::Key;

/// Whether the frame's MIC is `CMAC(NwkSKey, B0 | MHDR..FRMPayload)[0..4]` for this FCnt32.
/// The B0 block's Dir bit comes from the MType, so this works for uplinks and downlinks.
pub fn verify_mic(frame: &DataFrame<'_>, nwk_s_key: &Key, fcnt32: u32) -> bool {
    match EncryptedDataPayload::new(frame.raw) {
        Ok(p) => p.validate_mic(&AES128(nwk_s_key.0), fcnt32),
        Err(_) => false,
    }
}

/// The key that encrypts this frame's FRMPayload: NwkSKey for FPort 0 (MAC commands),
/// AppSKey otherwise (1-223 application, 224 test, 225-255 RFU).
pub fn payload_key<'k>(frame: &DataFrame<'_>, nwk_s_key: &'k Key, app_s_key: &'k Key) -> &'k Key {
    if frame.fport == Some(0) {
        nwk_s_key
    } else {
        app_s_key
    }
}

/// Decrypt the FRMPayload with `key` (see [`payload_key`]) and the full 32-bit FCnt.
/// Checks no MIC.
pub fn decrypt_payload(frame: &DataFrame<'_>, key: &Key, fcnt32: u32) -> Vec<u8> {
    if frame.frm_payload.is_empty() {
        return Vec::new();
    }
    let aes = AES128(key.0);
    let decrypted = EncryptedDataPayload::new(frame.raw.to_vec())
        .ok()
        .and_then(|p| p.decrypt(Some(&aes), Some(&aes), fcnt32).ok());
    let start = frame.frm_offset();
    let end = frame.raw.len() - 4;
    match decrypted {
        Some(d) => d.to_inner().get(start..end).map(<[u8]>::to_vec),
        None => None,
    }
    // Unreachable for a frame from `parse`; an empty result beats a panic.
    .unwrap_or_default()
}
