//! The connection history string: Zeek's letters, upper case for the
//! originator and lower case for the responder, each recorded once per
//! direction except where a rule says it repeats.

/// History letters (originator form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letter {
    /// SYN without ACK.
    S,
    /// SYN with ACK.
    H,
    /// Pure ACK.
    A,
    /// Payload.
    D,
    F,
    R,
    /// FIN and RST together.
    I,
    /// Other multi-flag packet.
    Q,
    /// Bad checksum (scaled).
    C,
    /// Retransmission (scaled).
    T,
    /// Zero window (scaled).
    W,
    /// Content gap (scaled).
    G,
    /// Analysis limit reached.
    X,
}

impl Letter {
    fn ch(self) -> u8 {
        match self {
            Letter::S => b'S',
            Letter::H => b'H',
            Letter::A => b'A',
            Letter::D => b'D',
            Letter::F => b'F',
            Letter::R => b'R',
            Letter::I => b'I',
            Letter::Q => b'Q',
            Letter::C => b'C',
            Letter::T => b'T',
            Letter::W => b'W',
            Letter::G => b'G',
            Letter::X => b'X',
        }
    }

    /// The "seen" bit; S and H share one.
    fn bit(self) -> u32 {
        match self {
            Letter::S | Letter::H => 1 << 0,
            Letter::A => 1 << 1,
            Letter::D => 1 << 2,
            Letter::F => 1 << 3,
            Letter::R => 1 << 4,
            Letter::I => 1 << 5,
            Letter::Q => 1 << 6,
            Letter::C => 1 << 7,
            Letter::T => 1 << 8,
            Letter::W => 1 << 9,
            Letter::G => 1 << 10,
            Letter::X => 1 << 11,
        }
    }
}

/// Longest history kept; Zeek's histories stay far below this in practice
/// because most letters appear at most once per direction.
const MAX_LEN: usize = 48;

#[derive(Clone, Copy)]
pub struct History {
    buf: [u8; MAX_LEN],
    len: u8,
    seen: u32,
}

impl Default for History {
    fn default() -> Self {
        History {
            buf: [0; MAX_LEN],
            len: 0,
            seen: 0,
        }
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl History {
    fn push(&mut self, c: u8) {
        if (self.len as usize) < MAX_LEN {
            self.buf[self.len as usize] = c;
            self.len += 1;
        }
    }

    /// Appends the letter unconditionally.
    pub fn add(&mut self, is_orig: bool, l: Letter) {
        let c = l.ch();
        self.push(if is_orig { c } else { c.to_ascii_lowercase() });
    }

    /// Appends the letter if this direction has not recorded it yet; true
    /// when it was appended.
    pub fn check(&mut self, is_orig: bool, l: Letter) -> bool {
        let bit = if is_orig { l.bit() } else { l.bit() << 16 };
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        self.add(is_orig, l);
        true
    }

    /// Marks a flip of roles.
    pub fn flip(&mut self) {
        self.push(b'^');
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_direction_and_case() {
        let mut h = History::default();
        h.flip();
        assert!(h.check(false, Letter::H));
        assert!(h.check(true, Letter::A));
        assert!(!h.check(true, Letter::A));
        assert!(
            !h.check(false, Letter::S),
            "S and H share one bit per direction"
        );
        h.add(true, Letter::F);
        assert_eq!(h.as_str(), "^hAF");
    }
}
