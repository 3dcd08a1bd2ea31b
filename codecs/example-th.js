// Example codec in The Things Network's Device Repository form, written for hubgate's docs
// and tests: a made-up temperature/humidity sensor on fPort 1.
//   bytes 0-1  temperature, signed 16-bit big-endian, hundredths of a degree Celsius
//   byte  2    relative humidity, half percent
//   bytes 3-4  battery, millivolts, unsigned 16-bit big-endian
function decodeUplink(input) {
  var b = input.bytes;
  if (input.fPort !== 1) {
    return { errors: ["unknown fPort " + input.fPort] };
  }
  if (b.length < 5) {
    return { errors: ["need 5 bytes, got " + b.length] };
  }
  var t = (b[0] << 8) | b[1];
  if (t > 0x7fff) {
    t -= 0x10000;
  }
  return {
    data: {
      temperature: t / 100,
      humidity: b[2] / 2,
      battery_mv: (b[3] << 8) | b[4]
    },
    warnings: b.length > 5 ? ["ignored " + (b.length - 5) + " trailing bytes"] : []
  };
}

// The same values in the normalized payload schema.
function normalizeUplink(input) {
  return {
    data: {
      air: {
        temperature: input.data.temperature,
        relativeHumidity: input.data.humidity
      },
      battery: input.data.battery_mv / 1000
    }
  };
}
