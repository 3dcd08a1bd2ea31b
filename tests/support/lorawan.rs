//! The worked example of docs/codecs.md: a device with session keys and one radio frame of
//! it, for the sources that carry raw LoRaWAN frames (the UDP packet forwarder, ChirpStack
//! gateway frames over MQTT).

/// DevAddr 26011BDA, FCnt 7, FPort 2, LPP temperature 27.2 °C on channel 3 (base64).
pub const PHY: &str = "QNobASYABwACQCbInLhVIeM=";
pub const NWK_S_KEY: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
pub const APP_S_KEY: &str = "000102030405060708090A0B0C0D0E0F";
/// The device's EUI.
pub const DEV_EUI: &str = "a840410000006001";

/// The frame of that example sent with 32-bit counter `fcnt` (base64), see [`frame`].
pub fn phy(fcnt: u32) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(frame(fcnt))
}

/// The frame of that example sent with 32-bit counter `fcnt`: the MIC and the keystream use
/// all 32 bits, the frame carries the low 16.
pub fn frame(fcnt: u32) -> Vec<u8> {
    frame_of(fcnt, &[0x03, 0x67, 0x01, 0x10])
}

/// A frame of that device with counter `fcnt` and FPort 2 carrying `plain` (base64).
pub fn phy_of(fcnt: u32, plain: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(frame_of(fcnt, plain))
}

/// A frame of that device with counter `fcnt` and FPort 2 carrying `plain`.
pub fn frame_of(fcnt: u32, plain: &[u8]) -> Vec<u8> {
    let key = |k: &str| <[u8; 16]>::try_from(hex::decode(k).unwrap()).unwrap();
    let mut c = lorawan::creator::DataPayloadCreator::new();
    c.set_uplink(true)
        .set_dev_addr(&[0xDA, 0x1B, 0x01, 0x26])
        .set_fcnt(fcnt)
        .set_f_port(2);
    c.build(
        plain,
        &[],
        &lorawan::keys::NewSKey::from(key(NWK_S_KEY)),
        &lorawan::keys::AppSKey::from(key(APP_S_KEY)),
    )
    .unwrap()
    .to_vec()
}

/// The device of that example, with its session keys: a `[[device]]` table.
pub fn device() -> String {
    format!(
        "[[device]]\ndev_eui = \"{DEV_EUI}\"\ncodec = \"cayenne-lpp\"\ntags = [\"Lab\"]\ndev_addr = \"26011BDA\"\nnwk_s_key = \"{NWK_S_KEY}\"\napp_s_key = \"{APP_S_KEY}\"\n"
    )
}

/// Where a ChirpStack gateway publishes its uplink frames (`format = "chirpstack-gateway"`).
pub const GATEWAY_TOPIC: &str = "eu868/gateway/0016c001ff10a235/event/up";

/// A ChirpStack gateway's uplink message carrying `phy` (base64), without a time: hubgate
/// stamps it when it receives it.
pub fn gateway_frame(phy: &str) -> String {
    serde_json::json!({
        "phyPayload": phy,
        "txInfo": {"frequency": 868_100_000, "modulation": {"lora": {"bandwidth": 125_000, "spreadingFactor": 7}}},
        "rxInfo": {"gatewayId": "0016c001ff10a235", "rssi": -36, "snr": 10.5, "crcStatus": "CRC_OK"},
    })
    .to_string()
}
