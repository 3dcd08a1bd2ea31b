// A decoder for the Browan TBHV110 (healthy home IAQ sensor) in The Things Network's
// Device Repository form, written for hubgate's tests from Browan's frame layout: it returns
// what such vendor decoders return, the sensor's "no value" (0xFFFF) included, so that the
// table beside it has to drop it. fPort 103, 11 bytes:
//   byte 0      status
//   byte 1      battery: bits 3..0 are (volts * 10) - 25
//   byte 2      board temperature: bits 6..0, minus 32 °C
//   byte 3      relative humidity: bits 6..0, %
//   bytes 4-5   eCO2, ppm, little-endian (0xFFFF: none)
//   bytes 6-7   VOC, ppb, little-endian (0xFFFF: none)
//   bytes 8-9   IAQ index, little-endian (0xFFFF: none)
//   byte 10     temperature: bits 6..0, minus 32 °C
function decodeUplink(input) {
  var b = input.bytes;
  if (input.fPort !== 103) {
    return { errors: ["unknown fPort " + input.fPort] };
  }
  if (b.length !== 11) {
    return { errors: ["need 11 bytes, got " + b.length] };
  }
  function u16(i) {
    return b[i] | (b[i + 1] << 8);
  }
  return {
    data: {
      status: b[0],
      battery: (25 + (b[1] & 0x0f)) / 10,
      temperatureBoard: (b[2] & 0x7f) - 32,
      humidity: b[3] & 0x7f,
      eco2: u16(4),
      voc: u16(6),
      iaq: u16(8),
      temperature: (b[10] & 0x7f) - 32
    }
  };
}
