// Example codec in ChirpStack v4's form, written for hubgate's docs and tests: a made-up door
// contact. Byte 0 bit 0 is the contact (1 = open); bytes 1-2 count openings (big-endian);
// byte 3 is the battery in percent. example-door.toml maps the field names.
function decodeUplink(input) {
  var b = input.bytes;
  if (b.length < 4) {
    throw new Error("need 4 bytes, got " + b.length);
  }
  return {
    data: {
      door_open: (b[0] & 1) === 1,
      openings: (b[1] << 8) | b[2],
      battery_pct: b[3]
    }
  };
}
