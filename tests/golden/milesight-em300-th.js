// A decoder for the Milesight EM300-TH in the form of Milesight's own decoders in The Things
// Network's Device Repository, written for hubgate's tests from the frame layout: a run of
// [channel id][channel type][value], values little-endian, and the history records (20 CE)
// in an array `history` of {timestamp, temperature, humidity}, the timestamp in Unix seconds,
// as those decoders return them.
//   01 75  battery, % (1 byte)
//   03 67  temperature, s16 / 10 °C
//   04 68  humidity, u8 / 2 %RH
//   20 CE  history record: u32 time, s16 temperature / 10, u8 humidity / 2, 1 reserved byte
function decodeUplink(input) {
  var b = input.bytes;
  var out = {};
  function u16(i) {
    return b[i] | (b[i + 1] << 8);
  }
  function s16(i) {
    var v = u16(i);
    return v > 0x7fff ? v - 0x10000 : v;
  }
  function u32(i) {
    return (u16(i) + u16(i + 2) * 0x10000);
  }
  var i = 0;
  while (i + 1 < b.length) {
    var id = b[i], type = b[i + 1];
    i += 2;
    if (id === 0x01 && type === 0x75) {
      out.battery = b[i];
      i += 1;
    } else if (id === 0x03 && type === 0x67) {
      out.temperature = s16(i) / 10;
      i += 2;
    } else if (id === 0x04 && type === 0x68) {
      out.humidity = b[i] / 2;
      i += 1;
    } else if (id === 0x20 && type === 0xce) {
      out.history = out.history || [];
      out.history.push({
        timestamp: u32(i),
        temperature: s16(i + 4) / 10,
        humidity: b[i + 6] / 2
      });
      i += 8;
    } else {
      break;
    }
  }
  return { data: out };
}
