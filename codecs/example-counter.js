// Example codec in ChirpStack v3's form, written for hubgate's docs and tests: a made-up
// pulse counter sending a 32-bit big-endian count on any port.
function Decode(fPort, bytes, variables) {
  var n = 0;
  for (var i = 0; i < 4 && i < bytes.length; i++) {
    n = n * 256 + bytes[i];
  }
  return { port: fPort, pulses: n };
}
