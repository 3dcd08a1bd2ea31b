//! PHYPayload structure (LoRaWAN 1.0.x §4): which message it is and where its fields are.
//!
//! This is plain slicing with every length checked first, so it never panics and needs no
//! keys. The cryptographic checks live in [`super::crypto`].

use super::{DevAddr, LorawanError};

/// The longest PHYPayload a LoRa radio carries (the length field is one byte).
pub const MAX_PHY_LEN: usize = 255;
/// MHDR (1) + DevAddr (4) + FCtrl (1) + FCnt (2) + MIC (4).
pub const MIN_DATA_LEN: usize = 12;
/// MHDR + AppEUI (8) + DevEUI (8) + DevNonce (2) + MIC.
pub const JOIN_REQUEST_LEN: usize = 23;
/// MHDR + AppNonce (3) + NetID (3) + DevAddr (4) + DLSettings + RxDelay + MIC.
pub const JOIN_ACCEPT_LEN: usize = 17;
/// The same with a 16-byte CFList.
pub const JOIN_ACCEPT_CFLIST_LEN: usize = 33;

/// MType, bits 7..5 of MHDR. `Display` gives the spelling the CLI prints (`UnconfirmedDataUp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MType {
    JoinRequest,
    JoinAccept,
    UnconfirmedDataUp,
    UnconfirmedDataDown,
    ConfirmedDataUp,
    ConfirmedDataDown,
    /// 6: reserved in 1.0.x (RejoinRequest in 1.1).
    Rfu,
    Proprietary,
}

impl MType {
    pub fn from_mhdr(mhdr: u8) -> MType {
        match mhdr >> 5 {
            0 => MType::JoinRequest,
            1 => MType::JoinAccept,
            2 => MType::UnconfirmedDataUp,
            3 => MType::UnconfirmedDataDown,
            4 => MType::ConfirmedDataUp,
            5 => MType::ConfirmedDataDown,
            6 => MType::Rfu,
            _ => MType::Proprietary,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MType::JoinRequest => "JoinRequest",
            MType::JoinAccept => "JoinAccept",
            MType::UnconfirmedDataUp => "UnconfirmedDataUp",
            MType::UnconfirmedDataDown => "UnconfirmedDataDown",
            MType::ConfirmedDataUp => "ConfirmedDataUp",
            MType::ConfirmedDataDown => "ConfirmedDataDown",
            MType::Rfu => "RFU",
            MType::Proprietary => "Proprietary",
        }
    }

    /// Direction of a data frame; `None` for join and other frames.
    pub fn direction(self) -> Option<Direction> {
        match self {
            MType::UnconfirmedDataUp | MType::ConfirmedDataUp => Some(Direction::Up),
            MType::UnconfirmedDataDown | MType::ConfirmedDataDown => Some(Direction::Down),
            _ => None,
        }
    }
}

impl std::fmt::Display for MType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dir in the B0 and A_i blocks: 0 uplink, 1 downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A parsed PHYPayload, borrowing the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Data(DataFrame<'a>),
    JoinRequest(JoinRequest),
    /// Encrypted with the AppKey, which a gateway agent does not hold: only the MHDR is clear.
    JoinAccept {
        /// Whether the (17- or 33-byte) frame carries a CFList.
        has_cflist: bool,
    },
    /// Vendor format: everything after the MHDR, uninterpreted.
    Proprietary {
        payload: &'a [u8],
    },
    /// MType 6, reserved in 1.0.x: everything after the MHDR, uninterpreted.
    Rfu {
        payload: &'a [u8],
    },
}

impl Frame<'_> {
    pub fn mtype(&self) -> MType {
        match self {
            Frame::Data(d) => d.mtype,
            Frame::JoinRequest(_) => MType::JoinRequest,
            Frame::JoinAccept { .. } => MType::JoinAccept,
            Frame::Proprietary { .. } => MType::Proprietary,
            Frame::Rfu { .. } => MType::Rfu,
        }
    }
}

/// A data frame (un/confirmed, up/down). Multi-byte fields are decoded from their
/// little-endian wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFrame<'a> {
    /// The whole PHYPayload, MIC included (what the MIC and decryption run over).
    pub raw: &'a [u8],
    pub mtype: MType,
    pub dev_addr: DevAddr,
    /// Raw FCtrl byte; see the accessors for its bits.
    pub fctrl: u8,
    /// The low 16 bits of the frame counter, as sent.
    pub fcnt16: u16,
    /// MAC commands piggybacked in the header (clear text in 1.0.x).
    pub fopts: &'a [u8],
    /// Absent when the frame has no FRMPayload.
    pub fport: Option<u8>,
    /// Still encrypted.
    pub frm_payload: &'a [u8],
    pub mic: [u8; 4],
}

impl DataFrame<'_> {
    pub fn direction(&self) -> Direction {
        // A DataFrame is only built for data MTypes.
        self.mtype.direction().unwrap_or(Direction::Up)
    }
    pub fn fopts_len(&self) -> usize {
        usize::from(self.fctrl & 0x0f)
    }
    /// Offset of the FRMPayload in `raw`.
    pub(crate) fn frm_offset(&self) -> usize {
        8 + self.fopts_len() + 1
    }
}

/// A join request; EUIs as usually written (big-endian, the reverse of the wire order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    pub app_eui: [u8; 8],
    pub dev_eui: [u8; 8],
    pub dev_nonce: u16,
    pub mic: [u8; 4],
}

/// Parse a PHYPayload's structure. Checks lengths and the major version; checks no MIC.
pub fn parse(phy: &[u8]) -> Result<Frame<'_>, LorawanError> {
    let Some(&mhdr) = phy.first() else {
        return Err(LorawanError::Empty);
    };
    if phy.len() > MAX_PHY_LEN {
        return Err(LorawanError::TooLong { len: phy.len() });
    }
    let mtype = MType::from_mhdr(mhdr);
    if mtype == MType::Proprietary {
        // The major version governs the standard formats only.
        return Ok(Frame::Proprietary { payload: &phy[1..] });
    }
    let major = mhdr & 0x03;
    if major != 0 {
        return Err(LorawanError::UnsupportedMajor(major));
    }
    let too_short = |need: usize| LorawanError::TooShort {
        mtype,
        len: phy.len(),
        need,
    };
    match mtype {
        MType::Rfu => Ok(Frame::Rfu { payload: &phy[1..] }),
        MType::JoinRequest => {
            if phy.len() != JOIN_REQUEST_LEN {
                return Err(LorawanError::BadLength {
                    mtype,
                    len: phy.len(),
                    expected: "23",
                });
            }
            Ok(Frame::JoinRequest(JoinRequest {
                app_eui: reversed8(&phy[1..9]),
                dev_eui: reversed8(&phy[9..17]),
                dev_nonce: u16::from_le_bytes([phy[17], phy[18]]),
                mic: [phy[19], phy[20], phy[21], phy[22]],
            }))
        }
        MType::JoinAccept => match phy.len() {
            JOIN_ACCEPT_LEN => Ok(Frame::JoinAccept { has_cflist: false }),
            JOIN_ACCEPT_CFLIST_LEN => Ok(Frame::JoinAccept { has_cflist: true }),
            len => Err(LorawanError::BadLength {
                mtype,
                len,
                expected: "17 or 33",
            }),
        },
        _ => {
            if phy.len() < MIN_DATA_LEN {
                return Err(too_short(MIN_DATA_LEN));
            }
            let fctrl = phy[5];
            let fopts_len = usize::from(fctrl & 0x0f);
            let fhdr_end = 8 + fopts_len;
            let mic_at = phy.len() - 4;
            if fhdr_end > mic_at {
                return Err(LorawanError::BadFOptsLen {
                    fopts_len,
                    len: phy.len(),
                });
            }
            let (fport, frm_payload) = if fhdr_end < mic_at {
                (Some(phy[fhdr_end]), &phy[fhdr_end + 1..mic_at])
            } else {
                (None, &phy[mic_at..mic_at])
            };
            Ok(Frame::Data(DataFrame {
                raw: phy,
                mtype,
                dev_addr: DevAddr(u32::from_le_bytes([phy[1], phy[2], phy[3], phy[4]])),
                fctrl,
                fcnt16: u16::from_le_bytes([phy[6], phy[7]]),
                fopts: &phy[8..fhdr_end],
                fport,
                frm_payload,
                mic: [
                    phy[mic_at],
                    phy[mic_at + 1],
                    phy[mic_at + 2],
                    phy[mic_at + 3],
                ],
            }))
        }
    }
}

fn reversed8(wire: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (o, b) in out.iter_mut().zip(wire.iter().rev()) {
        *o = *b;
    }
    out
}
