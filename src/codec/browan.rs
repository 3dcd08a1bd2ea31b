//! Browan / Tabs family (docs/codecs.md, "Browan / Tabs").
//!
//! Every model shares bytes 0-2 (status, battery, temperature; the shared header), parsed once by
//! [`header`]. The model-specific tail is read with bounds-checked helpers only: a payload
//! shorter than the model's length is `Truncated`, trailing bytes beyond it are ignored
//! (the reference decoders do not reject them either).
use super::bytes::sign_extend;
use super::{check_port, rec_type, Bytes, CodecError, Decoded, Example, Reading};

/// Humidity byte value (bits 6..0) the sensor reports on a measurement error.
const HUMIDITY_ERROR: u8 = 127;
/// u16 value of an IAQ field the sensor could not measure.
const NOT_AVAILABLE: u16 = 0xFFFF;

models! {
    /// Temperature & humidity.
    Tbhh100 => "browan-tbhh100",
    /// Healthy home IAQ (CO2, VOC, IAQ index).
    Tbhv110 => "browan-tbhv110",
    /// Motion (PIR).
    Tbms100 => "browan-tbms100",
    /// Door & window.
    Tbdw100 => "browan-tbdw100",
    /// Water leak.
    Tbwl100 => "browan-tbwl100",
    /// Ambient light.
    Tbam100 => "browan-tbam100",
    /// Sound level.
    Tbsl100 => "browan-tbsl100",
    /// Push button.
    Tbpb100 => "browan-tbpb100",
    /// Object locator (GNSS).
    Tbol100 => "browan-tbol100",
}

/// What the shared header needs to know of a model.
struct Spec {
    port: u8,
    /// Minimum payload length.
    len: usize,
}

impl Model {
    fn spec(self) -> Spec {
        let (port, len) = match self {
            Model::Tbhh100 => (103, 8),
            Model::Tbhv110 => (103, 11),
            Model::Tbms100 => (102, 8),
            Model::Tbdw100 => (100, 8),
            Model::Tbwl100 => (106, 5),
            Model::Tbam100 => (104, 6),
            Model::Tbsl100 => (105, 4),
            Model::Tbpb100 => (147, 8),
            Model::Tbol100 => (136, 11),
        };
        Spec { port, len }
    }

    pub fn rec_type(self) -> &'static str {
        match self {
            Model::Tbhh100 | Model::Tbhv110 => rec_type::ENVIRONMENT,
            Model::Tbms100 => rec_type::MOTION,
            Model::Tbdw100 => rec_type::OPENCLOSE,
            Model::Tbwl100 => rec_type::LEAK,
            Model::Tbam100 => rec_type::LIGHT,
            Model::Tbsl100 => rec_type::SOUND,
            Model::Tbpb100 => rec_type::FEEDBACK,
            Model::Tbol100 => rec_type::GPS,
        }
    }

    pub fn example(self) -> Example {
        let hex = match self {
            Model::Tbhh100 => "088c2e2dffffffff",
            Model::Tbhv110 => "310b382a200396004b0037",
            Model::Tbms100 => "010b3a0500c80000",
            Model::Tbdw100 => "010d1c0200102700",
            Model::Tbwl100 => "010b343738",
            Model::Tbam100 => "210b34102700",
            Model::Tbsl100 => "000b3446",
            Model::Tbpb100 => "010b340000000000",
            Model::Tbol100 => "000b3a0034fb0d54450369",
        };
        Example {
            fport: self.spec().port,
            hex,
        }
    }

    pub fn decode(self, fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
        match self {
            Model::Tbhh100 => tbhh100(fport, p),
            Model::Tbhv110 => tbhv110(fport, p),
            Model::Tbms100 => tbms100(fport, p),
            Model::Tbdw100 => tbdw100(fport, p),
            Model::Tbwl100 => tbwl100(fport, p),
            Model::Tbam100 => tbam100(fport, p),
            Model::Tbsl100 => tbsl100(fport, p),
            Model::Tbpb100 => tbpb100(fport, p),
            Model::Tbol100 => tbol100(fport, p),
        }
    }
}

/// TBSL100 loudness byte value meaning "measurement error".
const LOUDNESS_ERROR: u8 = 255;

/// Bytes 0-2 common to all models (the shared header).
struct Header {
    status: u8,
    /// Battery voltage in V, from the low nibble of byte 1.
    battery_v: f64,
    /// Battery capacity in %, from the high nibble of byte 1; `None` for a nibble of 0, which
    /// most firmware sends and which means "not reported" (Microshare's published record of
    /// such a frame has no `charge`; a 0 % would set off low-battery rules).
    battery_pct: Option<f64>,
    /// Byte 2 in °C: ambient on TBHH100, board sensor on the other models.
    temperature_c: f64,
}

/// Which way status bit 3 must point (TBHH100 and TBHV110 share fPort 103).
#[derive(Clone, Copy)]
enum Bit3 {
    Any,
    Set,
    Clear,
}

/// Check fPort, model bit and length, then parse bytes 0-2.
///
/// The model bit is checked before the length so that a frame of the sibling model on
/// fPort 103 is reported as the wrong model rather than as a short frame.
fn header(m: Model, fport: Option<u8>, b: &Bytes, bit3: Bit3) -> Result<Header, CodecError> {
    check_port(m.id(), fport, m.spec().port)?;
    let status = b.u8(0)?;
    match bit3 {
        Bit3::Any => {}
        Bit3::Set if status & 0x08 == 0 => {
            return Err(CodecError::Invalid {
                codec: m.id(),
                offset: 0,
                what: "status bit 3 clear: TBHV110 IAQ frame, not a TBHH100",
            });
        }
        Bit3::Clear if status & 0x08 != 0 => {
            return Err(CodecError::Invalid {
                codec: m.id(),
                offset: 0,
                what: "status bit 3 set: TBHH100 temperature/humidity frame, not a TBHV110",
            });
        }
        Bit3::Set | Bit3::Clear => {}
    }
    b.need(m.spec().len)?;
    let battery = b.u8(1)?;
    let v = battery & 0x0F;
    let c = battery >> 4;
    Ok(Header {
        status,
        battery_v: f64::from(25 + v) / 10.0,
        battery_pct: (c > 0).then(|| (f64::from(c) * 100.0 / 15.0).round()),
        temperature_c: temperature(b.u8(2)?),
    })
}

/// Tabs temperature byte: bits 6..0 unsigned, offset −32 °C; bit 7 reserved.
fn temperature(b: u8) -> f64 {
    f64::from(b & 0x7F) - 32.0
}

/// Tabs humidity byte: bits 6..0 in %RH; 127 = measurement error → `None`.
fn humidity(b: u8) -> Option<f64> {
    let h = b & 0x7F;
    (h != HUMIDITY_ERROR).then_some(f64::from(h))
}

/// Empty record of the model with the battery in `device_health`, plus the byte-2
/// temperature there too when `board_temperature` (it is the PCB sensor on that model).
fn record(m: Model, h: &Header, board_temperature: bool) -> Decoded {
    let mut health = vec![Reading::num("voltage", h.battery_v, "V")];
    health.extend(h.battery_pct.map(|pct| Reading::num("charge", pct, "%")));
    if board_temperature {
        health.push(Reading::num("temperature", h.temperature_c, "°C"));
    }
    Decoded {
        rec_type: m.rec_type(),
        health,
        ..Decoded::default()
    }
}

/// u16 LE IAQ value at `off`, `None` when 0xFFFF (not available).
fn available(b: &Bytes, off: usize) -> Result<Option<f64>, CodecError> {
    let raw = b.u16le(off)?;
    Ok((raw != NOT_AVAILABLE).then_some(f64::from(raw)))
}

/// TBHV110 CO2 (bytes 4-5) and VOC (bytes 6-7), each omitted when 0xFFFF.
fn co2_voc(d: &mut Decoded, b: &Bytes) -> Result<(), CodecError> {
    if let Some(co2) = available(b, 4)? {
        d.readings.push(Reading::num("co2", co2, "ppm"));
    }
    if let Some(voc) = available(b, 6)? {
        d.readings.push(Reading::num("voc", voc, "ppb"));
    }
    Ok(())
}

/// TBHH100 temperature & humidity (fPort 103, 8 bytes, status bit 3 = 1).
///
/// Bytes 4-7 are reserved (normally `FF FF FF FF`) and not read: the device has no gas
/// sensor, so CO2/VOC read there would be invented. Microshare's 2020 unpacker read them as
/// the TBHV110's CO2/VOC and wrote 65535 for the filler.
pub fn tbhh100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbhh100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Set)?;
    let mut d = record(m, &h, false);
    d.readings
        .push(Reading::num("temperature", h.temperature_c, "°C"));
    if let Some(rh) = humidity(b.u8(3)?) {
        d.readings.push(Reading::num("humidity", rh, "%RH"));
    }
    Ok(d)
}

/// TBHV110 healthy home IAQ (fPort 103, 11 bytes, status bit 3 = 0).
pub fn tbhv110(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbhv110;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Clear)?;
    let mut d = record(m, &h, true);
    d.readings
        .push(Reading::num("temperature", temperature(b.u8(10)?), "°C"));
    if let Some(rh) = humidity(b.u8(3)?) {
        d.readings.push(Reading::num("humidity", rh, "%RH"));
    }
    co2_voc(&mut d, &b)?;
    // IAQ is an index 0-500 (no unit); 0xFFFF is "not available" like CO2/VOC.
    let iaq = b.u16le(8)?;
    if iaq != NOT_AVAILABLE {
        d.readings.push(Reading::int("iaq", i64::from(iaq), None));
    }
    Ok(d)
}

/// Bytes 3-7 of TBMS100/TBDW100: u16 LE minutes since the last state change, u24 LE count.
fn change_and_count(
    d: &mut Decoded,
    b: &Bytes,
    count_field: &'static str,
) -> Result<(), CodecError> {
    let minutes = u64::from(b.u16le(3)?);
    let count = b.uint_le(5, 3)?;
    // Both fit easily in i64 (≤ 65535 × 60 and ≤ 2^24 − 1).
    d.readings.push(Reading::int(
        "seconds_since_change",
        (minutes * 60) as i64,
        Some("s"),
    ));
    d.readings
        .push(Reading::int(count_field, count as i64, None));
    Ok(())
}

/// TBMS100 motion / PIR (fPort 102, 8 bytes).
pub fn tbms100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbms100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    d.readings
        .push(Reading::flag("presence", h.status & 0x01 != 0));
    change_and_count(&mut d, &b, "motions_since_reset")?;
    Ok(d)
}

/// TBDW100 door & window (fPort 100, 8 bytes).
pub fn tbdw100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbdw100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    d.readings.push(Reading::flag("open", h.status & 0x01 != 0));
    change_and_count(&mut d, &b, "events_since_reset")?;
    Ok(d)
}

/// TBWL100 water leak (fPort 106, 5 bytes).
pub fn tbwl100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbwl100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    d.readings.push(Reading::flag("leak", h.status & 0x01 != 0));
    d.readings
        .push(Reading::num("temperature", temperature(b.u8(4)?), "°C"));
    if let Some(rh) = humidity(b.u8(3)?) {
        d.readings.push(Reading::num("humidity", rh, "%RH"));
    }
    Ok(d)
}

/// TBAM100 ambient light (fPort 104, 6 bytes): bytes 3-5 u24 LE × 0.01 lx.
///
/// The status bits (darker/lighter/changed/keep-alive) say why the frame was sent; they are
/// not measurements and are not emitted.
pub fn tbam100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbam100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    let lux = b.uint_le(3, 3)?;
    d.readings
        .push(Reading::num("illuminance", lux as f64 / 100.0, "lx"));
    Ok(d)
}

/// TBSL100 sound level (fPort 105, ≥ 4 bytes): byte 3 = loudness in dBA, 255 = error
/// (no loudness reading). Only the dasdigidings decoder documents this layout.
pub fn tbsl100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbsl100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    let level = b.u8(3)?;
    if level != LOUDNESS_ERROR {
        d.readings
            .push(Reading::num("loudness", f64::from(level), "dBA"));
    }
    Ok(d)
}

/// TBPB100 push button (fPort 147, 8 bytes): status bit 0 = pressed.
///
/// Bytes 3-7 are not decoded by any public reference codec; they are deliberately
/// not emitted until verified on a device.
pub fn tbpb100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbpb100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    d.readings.push(Reading::flag("push", h.status & 0x01 != 0));
    Ok(d)
}

/// TBOL100 object locator (fPort 136, 11 bytes).
///
/// Latitude: u32 LE, bits 27..0 s28 micro-degrees. Longitude: u32 LE, bits 28..0 s29
/// micro-degrees, bits 31..29 α with accuracy ≤ 2^(α+2) m (α = 7: no bound, no accuracy
/// reading). Without a GNSS fix (status bit 3) or on a GNSS error (bit 4) the coordinates
/// are stale (the last known ones, possibly 0/0), so no position is emitted; `gnss_fix`
/// says which case it is. A position off the globe (latitude beyond ±90°, longitude beyond
/// ±180°: a corrupt or forged frame) is no fix either. Battery byte 0x00 means "charging":
/// no voltage or charge then.
pub fn tbol100(fport: Option<u8>, p: &[u8]) -> Result<Decoded, CodecError> {
    let m = Model::Tbol100;
    let b = Bytes::new(m.id(), p);
    let h = header(m, fport, &b, Bit3::Any)?;
    let mut d = record(m, &h, true);
    if b.u8(1)? == 0 {
        d.health
            .retain(|r| r.field != "voltage" && r.field != "charge");
        d.health.push(Reading::flag("charging", true));
    }
    let lat = sign_extend(b.uint_le(3, 4)?, 28) as f64 / 1e6;
    let lon_word = b.u32le(7)?;
    let lon = sign_extend(u64::from(lon_word), 29) as f64 / 1e6;
    // The frame's other readings stand; only its position is not one. `gnss_fix` false is
    // what a gps consumer already reads as "no position", where an `Invalid` frame would
    // lose the button, motion and battery too.
    let on_globe = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    let fix = h.status & 0x18 == 0 && on_globe;
    d.readings.push(Reading::flag("push", h.status & 0x01 != 0));
    d.readings
        .push(Reading::flag("moving", h.status & 0x02 != 0));
    d.readings.push(Reading::flag("gnss_fix", fix));
    if fix {
        let alpha = lon_word >> 29;
        d.readings.push(Reading::num("lat", lat, "°"));
        d.readings.push(Reading::num("lon", lon, "°"));
        if alpha < 7 {
            d.readings.push(Reading::num(
                "accuracy",
                f64::from(1u32 << (alpha + 2)),
                "m",
            ));
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hex;

    use crate::codec::Value;

    fn n(field: &'static str, v: f64, unit: &'static str) -> Reading {
        Reading::num(field, v, unit)
    }

    fn int(field: &'static str, v: i64, unit: Option<&'static str>) -> Reading {
        Reading::int(field, v, unit)
    }

    fn flag(field: &'static str, v: bool) -> Reading {
        Reading::flag(field, v)
    }

    fn get<'a>(rs: &'a [Reading], field: &str) -> Option<&'a Value> {
        rs.iter().find(|r| r.field == field).map(|r| &r.value)
    }

    // docs/codecs.md example 1.
    #[test]
    fn tbhh100_worked_example() {
        let d = tbhh100(Some(103), &hex("08 8C 2E 2D FF FF FF FF")).unwrap();
        assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            d.readings,
            vec![n("temperature", 14.0, "°C"), n("humidity", 45.0, "%RH")]
        );
        assert_eq!(
            d.health,
            vec![n("voltage", 3.7, "V"), n("charge", 53.0, "%")]
        );
    }

    // docs/codecs.md example 2.
    #[test]
    fn tbdw100_worked_example() {
        let d = tbdw100(Some(100), &hex("01 0D 1C 02 00 10 27 00")).unwrap();
        assert_eq!(d.rec_type, rec_type::OPENCLOSE);
        assert_eq!(
            d.readings,
            vec![
                flag("open", true),
                int("seconds_since_change", 120, Some("s")),
                int("events_since_reset", 10_000, None),
            ]
        );
        // Capacity nibble 0 ("not reported") → no charge.
        assert_eq!(
            d.health,
            vec![n("voltage", 3.8, "V"), n("temperature", -4.0, "°C")]
        );
    }

    // docs/codecs.md example 3.
    #[test]
    fn tbhv110_worked_example() {
        let d = tbhv110(Some(103), &hex("31 0B 38 2A 20 03 96 00 4B 00 37")).unwrap();
        assert_eq!(d.rec_type, rec_type::ENVIRONMENT);
        assert_eq!(
            d.readings,
            vec![
                n("temperature", 23.0, "°C"),
                n("humidity", 42.0, "%RH"),
                n("co2", 800.0, "ppm"),
                n("voc", 150.0, "ppb"),
                int("iaq", 75, None),
            ]
        );
        assert_eq!(
            d.health,
            vec![n("voltage", 3.6, "V"), n("temperature", 24.0, "°C")]
        );
    }

    #[test]
    fn tbms100_occupied() {
        // occupied, 0xCB battery (3.6 V, 80 % as in Microshare's records), board 0x3F = 31 °C,
        // 0x0103 = 259 min, count 0x010203.
        let d = tbms100(Some(102), &hex("01 CB 3F 03 01 03 02 01")).unwrap();
        assert_eq!(d.rec_type, rec_type::MOTION);
        assert_eq!(
            d.readings,
            vec![
                flag("presence", true),
                int("seconds_since_change", 259 * 60, Some("s")),
                int("motions_since_reset", 0x01_02_03, None),
            ]
        );
        assert_eq!(
            d.health,
            vec![
                n("voltage", 3.6, "V"),
                n("charge", 80.0, "%"),
                n("temperature", 31.0, "°C")
            ]
        );
    }

    #[test]
    fn tbms100_free_and_max_values() {
        // status 0 → free; battery 0xFF → 4.0 V, 100 %; temperature bit 7 masked: 0xFF → 95 °C;
        // u16/u24 maxima are not sign-extended.
        let d = tbms100(None, &hex("00 FF FF FF FF FF FF FF")).unwrap();
        assert_eq!(get(&d.readings, "presence"), Some(&Value::Bool(false)));
        assert_eq!(
            get(&d.readings, "seconds_since_change"),
            Some(&Value::Int(65_535 * 60))
        );
        assert_eq!(
            get(&d.readings, "motions_since_reset"),
            Some(&Value::Int(16_777_215))
        );
        assert_eq!(
            d.health,
            vec![
                n("voltage", 4.0, "V"),
                n("charge", 100.0, "%"),
                n("temperature", 95.0, "°C")
            ]
        );
    }

    #[test]
    fn negative_and_minimum_temperature() {
        // 0x1E → −2 °C (the shared header), 0x00 → −32 °C, 0x80 → bit 7 masked → −32 °C.
        let d = tbhh100(None, &hex("08 00 1E 32 FF FF FF FF")).unwrap();
        assert_eq!(get(&d.readings, "temperature"), Some(&Value::Num(-2.0)));
        assert_eq!(d.health, vec![n("voltage", 2.5, "V")]);
        let d = tbwl100(None, &hex("00 0B 00 28 80")).unwrap();
        assert_eq!(get(&d.readings, "temperature"), Some(&Value::Num(-32.0)));
        assert_eq!(get(&d.health, "temperature"), Some(&Value::Num(-32.0)));
    }

    #[test]
    fn humidity_error_is_omitted() {
        let d = tbhh100(Some(103), &hex("08 0B 3F 7F FF FF FF FF")).unwrap();
        assert_eq!(d.readings, vec![n("temperature", 31.0, "°C")]);
        // bit 7 of the humidity byte is not part of the value: 0xFF is also 127 = error.
        let d = tbwl100(Some(106), &hex("00 0B 3F FF 3F")).unwrap();
        assert_eq!(get(&d.readings, "humidity"), None);
        let d = tbhv110(None, &hex("00 0B 38 7F 20 03 96 00 4B 00 37")).unwrap();
        assert_eq!(get(&d.readings, "humidity"), None);
        // 100 % is fine.
        let d = tbhh100(None, &hex("08 0B 3F 64 FF FF FF FF")).unwrap();
        assert_eq!(get(&d.readings, "humidity"), Some(&Value::Num(100.0)));
    }

    #[test]
    fn capacity_nibble() {
        let charge = |b: u8| {
            let d = tbwl100(None, &[0, b, 0x3F, 40, 0x3F]).unwrap();
            get(&d.health, "charge").cloned()
        };
        assert_eq!(charge(0x0B), None);
        assert_eq!(charge(0x1B), Some(Value::Num(7.0))); // 6.67
        assert_eq!(charge(0x8B), Some(Value::Num(53.0)));
        assert_eq!(charge(0xCB), Some(Value::Num(80.0)));
        assert_eq!(charge(0xFB), Some(Value::Num(100.0)));
    }

    #[test]
    fn iaq_not_available_is_omitted() {
        let d = tbhv110(Some(103), &hex("01 0B 38 2A FF FF FF FF FF FF 37")).unwrap();
        assert_eq!(
            d.readings,
            vec![n("temperature", 23.0, "°C"), n("humidity", 42.0, "%RH")]
        );
        // u16 LE: 0x01F4 = 500 is the IAQ maximum; co2 0xFFFE is a value, not "absent".
        let d = tbhv110(Some(103), &hex("01 0B 38 2A FE FF 00 00 F4 01 37")).unwrap();
        assert_eq!(get(&d.readings, "co2"), Some(&Value::Num(65_534.0)));
        assert_eq!(get(&d.readings, "voc"), Some(&Value::Num(0.0)));
        assert_eq!(get(&d.readings, "iaq"), Some(&Value::Int(500)));
    }

    /// Whatever the reserved bytes hold (zeros, a TBHV110-like CO2), a TBHH100
    /// has temperature and humidity only.
    #[test]
    fn tbhh100_reserved_bytes_are_not_read() {
        for payload in ["08 0B 2E 2D 00 00 00 00", "08 0B 2E 2D 20 03 96 00"] {
            let d = tbhh100(Some(103), &hex(payload)).unwrap();
            assert_eq!(
                d.readings,
                vec![n("temperature", 14.0, "°C"), n("humidity", 45.0, "%RH")]
            );
        }
    }

    #[test]
    fn tbwl100_leak() {
        // leak + leak interrupt; 3.6 V; board 24 °C; RH 55 %; ambient 22 °C.
        let d = tbwl100(Some(106), &hex("11 0B 38 37 36")).unwrap();
        assert_eq!(d.rec_type, rec_type::LEAK);
        assert_eq!(
            d.readings,
            vec![
                flag("leak", true),
                n("temperature", 22.0, "°C"),
                n("humidity", 55.0, "%RH"),
            ]
        );
        assert_eq!(
            d.health,
            vec![n("voltage", 3.6, "V"), n("temperature", 24.0, "°C")]
        );
        let d = tbwl100(Some(106), &hex("60 0B 38 37 36")).unwrap();
        assert_eq!(get(&d.readings, "leak"), Some(&Value::Bool(false)));
    }

    #[test]
    fn tbdw100_closed() {
        let d = tbdw100(None, &hex("00 0B 3F 00 00 00 00 00")).unwrap();
        assert_eq!(get(&d.readings, "open"), Some(&Value::Bool(false)));
        assert_eq!(
            get(&d.readings, "seconds_since_change"),
            Some(&Value::Int(0))
        );
        assert_eq!(get(&d.readings, "events_since_reset"), Some(&Value::Int(0)));
    }

    #[test]
    fn wrong_port() {
        let e = tbhh100(Some(102), &hex("08 8C 2E 2D FF FF FF FF")).unwrap_err();
        assert_eq!(
            e,
            CodecError::WrongPort {
                codec: "browan-tbhh100",
                fport: 102
            }
        );
        assert_eq!(e.to_string(), "browan-tbhh100 does not decode fPort 102");
        assert!(tbdw100(Some(102), &[1; 8]).is_err());
        assert!(tbms100(Some(100), &[1; 8]).is_err());
        assert!(tbwl100(Some(103), &[1; 5]).is_err());
        assert!(tbhv110(Some(0), &[0; 11]).is_err());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            tbdw100(Some(100), &hex("01 0D 1C 02 00 10 27")).unwrap_err(),
            CodecError::Truncated {
                codec: "browan-tbdw100",
                need: 8,
                got: 7
            }
        );
        assert_eq!(
            tbhv110(Some(103), &hex("31 0B 38 2A 20 03 96 00 4B 00")).unwrap_err(),
            CodecError::Truncated {
                codec: "browan-tbhv110",
                need: 11,
                got: 10
            }
        );
        assert_eq!(
            tbwl100(None, &[0x01]).unwrap_err(),
            CodecError::Truncated {
                codec: "browan-tbwl100",
                need: 5,
                got: 1
            }
        );
        assert_eq!(
            tbms100(None, &[]).unwrap_err(),
            CodecError::Truncated {
                codec: "browan-tbms100",
                need: 1,
                got: 0
            }
        );
        assert!(tbhh100(None, &hex("08 8C 2E 2D FF FF FF")).is_err());
    }

    #[test]
    fn trailing_bytes_ignored() {
        let d = tbwl100(Some(106), &hex("11 0B 38 37 36 AA BB")).unwrap();
        assert_eq!(d, tbwl100(Some(106), &hex("11 0B 38 37 36")).unwrap());
    }

    #[test]
    fn tbhh100_and_tbhv110_are_told_apart_by_status_bit_3() {
        let hv = hex("31 0B 38 2A 20 03 96 00 4B 00 37");
        let e = tbhh100(Some(103), &hv).unwrap_err();
        assert!(matches!(
            e,
            CodecError::Invalid {
                codec: "browan-tbhh100",
                offset: 0,
                ..
            }
        ));
        assert!(e.to_string().contains("TBHV110"), "{e}");
        // The 8-byte TBHH100 frame is the wrong model for TBHV110, not merely short.
        let hh = hex("08 8C 2E 2D FF FF FF FF");
        let e = tbhv110(Some(103), &hh).unwrap_err();
        assert!(matches!(
            e,
            CodecError::Invalid {
                codec: "browan-tbhv110",
                offset: 0,
                ..
            }
        ));
        assert!(e.to_string().contains("TBHH100"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    // docs/codecs.md example 4.
    #[test]
    fn tbam100_worked_example() {
        let d = tbam100(Some(104), &hex("21 0B 34 10 27 00")).unwrap();
        assert_eq!(d.rec_type, rec_type::LIGHT);
        assert_eq!(d.readings, vec![n("illuminance", 100.0, "lx")]);
        assert_eq!(
            d.health,
            vec![n("voltage", 3.6, "V"), n("temperature", 20.0, "°C")]
        );
    }

    #[test]
    fn tbam100_max_and_fraction() {
        let d = tbam100(None, &hex("00 0B 34 FF FF FF")).unwrap();
        assert_eq!(d.readings, vec![n("illuminance", 167_772.15, "lx")]);
        let d = tbam100(None, &hex("00 0B 34 01 00 00")).unwrap();
        assert_eq!(d.readings, vec![n("illuminance", 0.01, "lx")]);
        assert!(tbam100(Some(104), &hex("00 0B 34 01 00")).is_err());
        assert!(tbam100(Some(103), &hex("00 0B 34 01 00 00")).is_err());
    }

    #[test]
    fn tbsl100_loudness_and_error() {
        let d = tbsl100(Some(105), &hex("00 0B 38 41")).unwrap();
        assert_eq!(d.rec_type, rec_type::SOUND);
        assert_eq!(d.readings, vec![n("loudness", 65.0, "dBA")]);
        assert_eq!(
            d.health,
            vec![n("voltage", 3.6, "V"), n("temperature", 24.0, "°C")]
        );
        // 254 is a value, 255 the error marker; longer frames are accepted.
        let d = tbsl100(None, &hex("00 0B 38 FE 00 00")).unwrap();
        assert_eq!(d.readings, vec![n("loudness", 254.0, "dBA")]);
        let d = tbsl100(None, &hex("00 0B 38 FF")).unwrap();
        assert!(d.readings.is_empty());
        assert!(tbsl100(None, &hex("00 0B 38")).is_err());
    }

    #[test]
    fn tbpb100_push_without_undocumented_bytes() {
        let d = tbpb100(Some(147), &hex("01 CB 38 05 00 0A 00 00")).unwrap();
        assert_eq!(d.rec_type, rec_type::FEEDBACK);
        assert_eq!(d.readings, vec![flag("push", true)]);
        assert_eq!(
            d.health,
            vec![
                n("voltage", 3.6, "V"),
                n("charge", 80.0, "%"),
                n("temperature", 24.0, "°C")
            ]
        );
        let d = tbpb100(Some(147), &hex("00 0B 38 FF FF FF FF FF")).unwrap();
        assert_eq!(d.readings, vec![flag("push", false)]);
        assert!(tbpb100(Some(147), &hex("01 0B 38 00 00 00 00")).is_err());
    }

    // docs/codecs.md example 5 (southern and eastern hemisphere).
    #[test]
    fn tbol100_worked_example() {
        let d = tbol100(Some(136), &hex("00 0B 3A 00 34 FB 0D 54 45 03 69")).unwrap();
        assert_eq!(d.rec_type, rec_type::GPS);
        assert_eq!(
            d.readings,
            vec![
                flag("push", false),
                flag("moving", false),
                flag("gnss_fix", true),
                n("lat", -33.8688, "°"),
                n("lon", 151.2093, "°"),
                n("accuracy", 32.0, "m"),
            ]
        );
        assert_eq!(
            d.health,
            vec![n("voltage", 3.6, "V"), n("temperature", 26.0, "°C")]
        );
    }

    #[test]
    fn tbol100_western_hemisphere_no_fix_and_charging() {
        // lon −0.1278 ° = −127 800 µ° → s29 0x1FFE0CC8, α = 7 (no accuracy bound);
        // lat 51.5074 ° = 51 507 400 µ° = 0x0311_F0C8, reserved bits 31..28 set (ignored).
        let d = tbol100(None, &hex("03 0B 3A C8 F0 11 F3 C8 0C FE FF")).unwrap();
        assert_eq!(
            d.readings,
            vec![
                flag("push", true),
                flag("moving", true),
                flag("gnss_fix", true),
                n("lat", 51.5074, "°"),
                n("lon", -0.1278, "°"),
            ]
        );
        // No fix: stale coordinates are not emitted.
        let d = tbol100(None, &hex("08 0B 3A 00 34 FB 0D 54 45 03 69")).unwrap();
        assert_eq!(get(&d.readings, "gnss_fix"), Some(&Value::Bool(false)));
        assert_eq!(get(&d.readings, "lat"), None);
        // Battery byte 0 while charging: no fake 2.5 V.
        let d = tbol100(None, &hex("00 00 3A 00 34 FB 0D 54 45 03 69")).unwrap();
        assert_eq!(
            d.health,
            vec![n("temperature", 26.0, "°C"), flag("charging", true)]
        );
        assert!(tbol100(Some(136), &hex("00 0B 3A 00 34 FB 0D 54 45 03")).is_err());
    }

    /// A position off the globe is no fix: a frame at (−134.2°, −268.4°), then
    /// each coordinate just past its bound with the other in range; both bounds are valid.
    #[test]
    fn tbol100_position_off_the_globe_is_no_fix() {
        let no_fix = |payload: &str| {
            let d = tbol100(Some(136), &hex(payload)).unwrap();
            assert_eq!(get(&d.readings, "gnss_fix"), Some(&Value::Bool(false)));
            assert_eq!(get(&d.readings, "lat"), None);
            assert_eq!(get(&d.readings, "lon"), None);
            assert_eq!(get(&d.readings, "accuracy"), None);
            assert_eq!(get(&d.readings, "push"), Some(&Value::Bool(false)));
        };
        no_fix("00 0B 3A 00 00 00 08 00 00 00 10");
        // lat 90.000001° (0x055D_4A81), lon 0.
        no_fix("00 0B 3A 81 4A 5D 05 00 00 00 00");
        // lat 0, lon −180.000001° (s29 0x1545_6AFF), α 0.
        no_fix("00 0B 3A 00 00 00 00 FF 6A 45 15");
        // lat −90° (s28 0x0AA2_B580), lon 180° (0x0ABA_9500), α 0: on the globe.
        let d = tbol100(Some(136), &hex("00 0B 3A 80 B5 A2 0A 00 95 BA 0A")).unwrap();
        assert_eq!(get(&d.readings, "gnss_fix"), Some(&Value::Bool(true)));
        assert_eq!(get(&d.readings, "lat"), Some(&Value::Num(-90.0)));
        assert_eq!(get(&d.readings, "lon"), Some(&Value::Num(180.0)));
    }
}
