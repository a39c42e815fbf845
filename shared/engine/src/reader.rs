//! Capture files: pcap (micro- and nanosecond, either byte order), pcapng
//! (every section and interface, with per-interface timestamp resolution and
//! offset), and either of them gzip-compressed.
//!
//! The reader is pure Rust and reads through one reusable buffer: a packet
//! is a slice of that buffer, valid until the next call, so reading costs no
//! allocation per packet. libpcap stays the source for live interfaces (the
//! capture service); for files this reader is faster and reports exactly
//! where a damaged file stops making sense.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Buffer size; a record larger than this grows it (up to [`MAX_RECORD`]).
const BUF_SIZE: usize = 1 << 20;
/// The largest record accepted. libpcap's own limit for snap lengths is
/// 256 KiB; pcapng blocks carry some framing on top.
const MAX_RECORD: usize = 16 << 20;

/// One packet as the capture file holds it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    /// Length on the wire (may exceed `data.len()` when the snap length cut it).
    pub wire_len: u32,
    /// libpcap link type (DLT/LINKTYPE value) of the interface.
    pub linktype: u16,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Why a capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    #[error("not a pcap or pcapng capture (it starts with {0})")]
    NotCapture(String),
    #[error("truncated: the file ends inside a {what} at byte {offset}")]
    Truncated { what: &'static str, offset: u64 },
    #[error("corrupt at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
}

impl ReadError {
    /// Truncation and corruption leave what came before usable.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            ReadError::Truncated { .. } | ReadError::Corrupt { .. }
        )
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u16,
    /// Nanoseconds per timestamp unit, as a rational: ts * mul / div.
    mul: u64,
    div: u64,
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Pcap {
        swapped: bool,
        nanos: bool,
        linktype: u16,
    },
    PcapNg {
        swapped: bool,
        interfaces: Vec<Interface>,
    },
}

/// Where the next packet lies in the buffer, and what its record says.
#[derive(Debug, Clone, Copy)]
struct Found {
    start: usize,
    len: usize,
    ts_ns: i64,
    wire_len: u32,
    linktype: u16,
}

/// Reads packets from a capture file or stream.
pub struct CaptureReader {
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    /// File offset of `buf[pos]` (of the decompressed stream for gzip).
    consumed: u64,
    format: Format,
    gzip: bool,
    packets: u64,
}

impl std::fmt::Debug for CaptureReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader")
            .field("format", &self.format)
            .field("gzip", &self.gzip)
            .field("offset", &self.consumed)
            .field("packets", &self.packets)
            .finish()
    }
}

fn io_error(e: io::Error, offset: u64) -> ReadError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadError::Truncated {
            what: "compressed stream",
            offset,
        },
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => ReadError::Corrupt {
            offset,
            reason: format!("compressed stream: {e}"),
        },
        _ => ReadError::Io(e),
    }
}

impl CaptureReader {
    /// Opens a capture file; gzip is recognised by its magic, not its name.
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let file = File::open(path).map_err(ReadError::Io)?;
        Self::from_reader(Box::new(file))
    }

    /// Reads a capture from any byte stream (plain or gzip-compressed).
    pub fn from_reader(mut src: Box<dyn Read + Send>) -> Result<Self, ReadError> {
        let mut head = [0u8; 2];
        let n = read_full(&mut src, &mut head).map_err(ReadError::Io)?;
        let prefix = std::io::Cursor::new(head[..n].to_vec());
        let gzip = n == 2 && head == [0x1f, 0x8b];
        let src: Box<dyn Read + Send> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(prefix.chain(src)))
        } else {
            Box::new(prefix.chain(src))
        };
        let mut reader = CaptureReader {
            src,
            buf: vec![0; BUF_SIZE],
            pos: 0,
            end: 0,
            eof: false,
            consumed: 0,
            format: Format::Pcap {
                swapped: false,
                nanos: false,
                linktype: 0,
            },
            gzip,
            packets: 0,
        };
        reader.read_header()?;
        Ok(reader)
    }

    /// Whether the stream is gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    /// Bytes of (decompressed) capture consumed so far.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// Packets returned so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Makes at least `n` bytes available at `pos`; false at a clean end of
    /// file with fewer.
    fn fill(&mut self, n: usize) -> Result<bool, ReadError> {
        if self.end - self.pos >= n {
            return Ok(true);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if n > self.buf.len() {
            self.buf.resize(n.next_power_of_two(), 0);
        }
        while self.end < n && !self.eof {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, self.consumed + self.end as u64)),
            }
        }
        Ok(self.end - self.pos >= n)
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.consumed += n as u64;
    }

    fn corrupt(&self, reason: impl Into<String>) -> ReadError {
        ReadError::Corrupt {
            offset: self.consumed,
            reason: reason.into(),
        }
    }

    fn read_header(&mut self) -> Result<(), ReadError> {
        if !self.fill(4)? {
            let got = &self.buf[self.pos..self.end];
            return Err(if got.is_empty() {
                ReadError::NotCapture("nothing: the file is empty".into())
            } else {
                ReadError::NotCapture(hex(got))
            });
        }
        let magic = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        match magic {
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                if !self.fill(24)? {
                    return Err(ReadError::Truncated {
                        what: "pcap file header",
                        offset: 0,
                    });
                }
                // `swapped` here means "big-endian file": the helpers read big-endian when set.
                let swapped = magic[0] == 0xa1;
                let nanos = magic == [0xa1, 0xb2, 0x3c, 0x4d] || magic == [0x4d, 0x3c, 0xb2, 0xa1];
                let h = &self.buf[..24];
                let major = u16_at(h, 4, swapped);
                if major != 2 {
                    return Err(self.corrupt(format!("pcap version {major} is not 2")));
                }
                // The low 16 bits name the link type; the upper bits may hold FCS flags.
                let linktype = (u32_at(h, 20, swapped) & 0xffff) as u16;
                self.format = Format::Pcap {
                    swapped,
                    nanos,
                    linktype,
                };
                self.advance(24);
                Ok(())
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                self.format = Format::PcapNg {
                    swapped: false,
                    interfaces: Vec::new(),
                };
                Ok(())
            }
            _ => Err(ReadError::NotCapture(hex(&magic))),
        }
    }

    /// The next packet, `None` at the end of the capture. After an error the
    /// reader is finished: later calls return `None`.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, ReadError> {
        let res = match self.format {
            Format::Pcap {
                swapped,
                nanos,
                linktype,
            } => self.next_pcap(swapped, nanos, linktype),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        match res {
            Ok(Some(Found {
                start,
                len,
                ts_ns,
                wire_len,
                linktype,
            })) => {
                self.packets += 1;
                Ok(Some(Packet {
                    ts_ns,
                    wire_len,
                    linktype,
                    data: &self.buf[start..start + len],
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                // Stop for good: the position inside the file is no longer known.
                self.eof = true;
                self.pos = self.end;
                Err(e)
            }
        }
    }

    fn next_pcap(
        &mut self,
        swapped: bool,
        nanos: bool,
        linktype: u16,
    ) -> Result<Option<Found>, ReadError> {
        if !self.fill(16)? {
            if self.end == self.pos {
                return Ok(None);
            }
            return Err(ReadError::Truncated {
                what: "packet record header",
                offset: self.consumed,
            });
        }
        let h = &self.buf[self.pos..self.pos + 16];
        let sec = u32_at(h, 0, swapped) as i64;
        let frac = u32_at(h, 4, swapped) as i64;
        let caplen = u32_at(h, 8, swapped) as usize;
        let wire_len = u32_at(h, 12, swapped);
        if caplen > MAX_RECORD {
            return Err(self.corrupt(format!("packet record claims {caplen} captured bytes")));
        }
        if (nanos && frac >= 1_000_000_000) || (!nanos && frac >= 1_000_000) {
            return Err(self.corrupt(format!(
                "packet record has a fraction of a second of {frac}"
            )));
        }
        if !self.fill(16 + caplen)? {
            return Err(ReadError::Truncated {
                what: "packet",
                offset: self.consumed,
            });
        }
        let ts_ns = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        let start = self.pos + 16;
        self.advance(16 + caplen);
        Ok(Some(Found {
            start,
            len: caplen,
            ts_ns,
            wire_len: wire_len.max(caplen as u32),
            linktype,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Found>, ReadError> {
        loop {
            if !self.fill(12)? {
                if self.end == self.pos {
                    return Ok(None);
                }
                return Err(ReadError::Truncated {
                    what: "pcapng block header",
                    offset: self.consumed,
                });
            }
            let Format::PcapNg { swapped, .. } = self.format else {
                unreachable!()
            };
            let head = &self.buf[self.pos..self.pos + 12];
            let raw_type = [head[0], head[1], head[2], head[3]];
            // A section header fixes the byte order of everything after it.
            let swapped = if raw_type == [0x0a, 0x0d, 0x0d, 0x0a] {
                match [head[8], head[9], head[10], head[11]] {
                    [0x1a, 0x2b, 0x3c, 0x4d] => true,
                    [0x4d, 0x3c, 0x2b, 0x1a] => false,
                    other => {
                        return Err(self
                            .corrupt(format!("section header byte-order magic {}", hex(&other))));
                    }
                }
            } else {
                swapped
            };
            let btype = u32_at(head, 0, swapped);
            let blen = u32_at(head, 4, swapped) as usize;
            if blen < 12 || !blen.is_multiple_of(4) || blen > MAX_RECORD {
                return Err(self.corrupt(format!(
                    "pcapng block of type {btype:#x} claims a length of {blen}"
                )));
            }
            if !self.fill(blen)? {
                return Err(ReadError::Truncated {
                    what: "pcapng block",
                    offset: self.consumed,
                });
            }
            let body_start = self.pos + 8;
            let body_end = self.pos + blen - 4;
            if u32_at(&self.buf[body_end..body_end + 4], 0, swapped) as usize != blen {
                return Err(self.corrupt(format!(
                    "pcapng block of type {btype:#x}: trailing length differs"
                )));
            }
            let body = &self.buf[body_start..body_end];
            match btype {
                0x0a0d_0d0a => {
                    self.format = Format::PcapNg {
                        swapped,
                        interfaces: Vec::new(),
                    };
                }
                1 => {
                    if body.len() < 8 {
                        return Err(self.corrupt("interface description block too short"));
                    }
                    let linktype = u16_at(body, 0, swapped);
                    let mut iface = Interface {
                        linktype,
                        mul: 1000,
                        div: 1,
                        offset_s: 0,
                    };
                    let mut opts = &body[8..];
                    while opts.len() >= 4 {
                        let code = u16_at(opts, 0, swapped);
                        let olen = u16_at(opts, 2, swapped) as usize;
                        let padded = (olen + 3) & !3;
                        if code == 0 || opts.len() < 4 + olen {
                            break;
                        }
                        let val = &opts[4..4 + olen];
                        match (code, olen) {
                            (9, 1) => {
                                let r = val[0];
                                let (mul, div) = tsresol(r).ok_or_else(|| {
                                    self.corrupt(format!(
                                        "interface timestamp resolution {r:#x} is out of range"
                                    ))
                                })?;
                                iface.mul = mul;
                                iface.div = div;
                            }
                            (14, 8) => iface.offset_s = u64_at(val, swapped) as i64,
                            _ => {}
                        }
                        opts = opts.get(4 + padded..).unwrap_or(&[]);
                    }
                    if let Format::PcapNg { interfaces, .. } = &mut self.format {
                        interfaces.push(iface);
                    }
                }
                6 | 2 => {
                    // Enhanced packet block, or the obsolete packet block.
                    if body.len() < 20 {
                        return Err(self.corrupt("packet block too short"));
                    }
                    let iface_id = if btype == 6 {
                        u32_at(body, 0, swapped)
                    } else {
                        u16_at(body, 0, swapped) as u32
                    };
                    let hi = u32_at(body, 4, swapped) as u64;
                    let lo = u32_at(body, 8, swapped) as u64;
                    let caplen = u32_at(body, 12, swapped) as usize;
                    let wire_len = u32_at(body, 16, swapped);
                    if caplen > body.len() - 20 {
                        return Err(
                            self.corrupt(format!("packet block claims {caplen} captured bytes"))
                        );
                    }
                    let iface = self.interface(iface_id)?;
                    let ts_ns = iface.ts_ns((hi << 32) | lo);
                    let start = body_start + 20;
                    self.advance(blen);
                    return Ok(Some(Found {
                        start,
                        len: caplen,
                        ts_ns,
                        wire_len: wire_len.max(caplen as u32),
                        linktype: iface.linktype,
                    }));
                }
                3 => {
                    // Simple packet block: interface 0, no timestamp.
                    if body.len() < 4 {
                        return Err(self.corrupt("simple packet block too short"));
                    }
                    let wire_len = u32_at(body, 0, swapped);
                    let caplen = (wire_len as usize).min(body.len() - 4);
                    let iface = self.interface(0)?;
                    let start = body_start + 4;
                    self.advance(blen);
                    return Ok(Some(Found {
                        start,
                        len: caplen,
                        ts_ns: 0,
                        wire_len: wire_len.max(caplen as u32),
                        linktype: iface.linktype,
                    }));
                }
                _ => {} // name resolution, statistics, custom blocks: nothing for us
            }
            self.advance(blen);
        }
    }

    fn interface(&self, id: u32) -> Result<Interface, ReadError> {
        match &self.format {
            Format::PcapNg { interfaces, .. } => {
                interfaces.get(id as usize).copied().ok_or_else(|| {
                    self.corrupt(format!(
                        "packet names interface {id}, which was never described"
                    ))
                })
            }
            Format::Pcap { .. } => unreachable!("pcap has no interface blocks"),
        }
    }
}

impl Interface {
    fn ts_ns(&self, units: u64) -> i64 {
        let ns = (units as u128 * self.mul as u128 / self.div as u128) as i64;
        ns.saturating_add(self.offset_s.saturating_mul(1_000_000_000))
    }
}

/// if_tsresol: MSB clear means 10^-r seconds, set means 2^-r seconds.
/// Returns nanoseconds per unit as mul/div.
fn tsresol(r: u8) -> Option<(u64, u64)> {
    let exp = (r & 0x7f) as u32;
    if r & 0x80 == 0 {
        if exp <= 9 {
            Some((10u64.pow(9 - exp), 1))
        } else if exp <= 19 {
            Some((1, 10u64.pow(exp - 9)))
        } else {
            None
        }
    } else if exp <= 63 {
        Some((1_000_000_000, 1u64 << exp))
    } else {
        None
    }
}

fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn u16_at(b: &[u8], off: usize, swapped: bool) -> u16 {
    let v = [b[off], b[off + 1]];
    if swapped {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

fn u32_at(b: &[u8], off: usize, swapped: bool) -> u32 {
    let v = [b[off], b[off + 1], b[off + 2], b[off + 3]];
    if swapped {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

fn u64_at(b: &[u8], swapped: bool) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[..8]);
    if swapped {
        u64::from_be_bytes(v)
    } else {
        u64::from_le_bytes(v)
    }
}

/// Writes a classic pcap file (little-endian, microsecond timestamps), for
/// generated and rewritten captures.
#[derive(Debug)]
pub struct PcapWriter<W: std::io::Write> {
    out: W,
    /// Nanosecond timestamps (magic 0xa1b23c4d) instead of microseconds.
    nanos: bool,
}

impl<W: std::io::Write> PcapWriter<W> {
    pub fn new(out: W, linktype: u16, snaplen: u32) -> io::Result<Self> {
        Self::start(out, linktype, snaplen, false)
    }

    /// A pcap file with nanosecond timestamps, for packets as captured
    /// ([`PcapWriter::write_packet`]).
    pub fn with_nanos(out: W, linktype: u16, snaplen: u32) -> io::Result<Self> {
        Self::start(out, linktype, snaplen, true)
    }

    fn start(mut out: W, linktype: u16, snaplen: u32, nanos: bool) -> io::Result<Self> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        out.write_all(&magic.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&[0; 8])?;
        out.write_all(&snaplen.to_le_bytes())?;
        out.write_all(&(linktype as u32).to_le_bytes())?;
        Ok(PcapWriter { out, nanos })
    }

    /// One packet as captured: its time and its length on the wire kept.
    /// Returns the bytes written.
    pub fn write_packet(&mut self, p: &Packet<'_>) -> io::Result<usize> {
        let (secs, frac) = if self.nanos {
            (
                p.ts_ns.div_euclid(1_000_000_000),
                p.ts_ns.rem_euclid(1_000_000_000),
            )
        } else {
            (
                p.ts_ns.div_euclid(1_000_000_000),
                p.ts_ns.rem_euclid(1_000_000_000) / 1000,
            )
        };
        self.out.write_all(&(secs as u32).to_le_bytes())?;
        self.out.write_all(&(frac as u32).to_le_bytes())?;
        self.out.write_all(&(p.data.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&p.wire_len.max(p.data.len() as u32).to_le_bytes())?;
        self.out.write_all(p.data)?;
        Ok(16 + p.data.len())
    }

    /// One packet, captured whole, at `ts_us` microseconds since the epoch.
    pub fn write(&mut self, ts_us: i64, data: &[u8]) -> io::Result<()> {
        self.out
            .write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(data)
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(records: &[(u32, u32, &[u8])], nanos: bool, big: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let w32 = |out: &mut Vec<u8>, v: u32| {
            if big {
                out.extend_from_slice(&v.to_be_bytes())
            } else {
                out.extend_from_slice(&v.to_le_bytes())
            }
        };
        w32(&mut out, if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
        let (maj, min) = (2u16, 4u16);
        for v in [maj, min] {
            if big {
                out.extend_from_slice(&v.to_be_bytes())
            } else {
                out.extend_from_slice(&v.to_le_bytes())
            }
        }
        for v in [0, 0, 65535, 1] {
            w32(&mut out, v);
        }
        for (s, f, d) in records {
            w32(&mut out, *s);
            w32(&mut out, *f);
            w32(&mut out, d.len() as u32);
            w32(&mut out, d.len() as u32 + 10);
            out.extend_from_slice(d);
        }
        out
    }

    type Got = Vec<(i64, Vec<u8>, u32, u16)>;

    fn read_all(bytes: Vec<u8>) -> (Got, Option<ReadError>) {
        let mut r = match CaptureReader::from_reader(Box::new(std::io::Cursor::new(bytes))) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut got = Vec::new();
        loop {
            match r.next_packet() {
                Ok(Some(p)) => got.push((p.ts_ns, p.data.to_vec(), p.wire_len, p.linktype)),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[test]
    fn pcap_in_both_byte_orders_and_resolutions() {
        for big in [false, true] {
            for nanos in [false, true] {
                let (got, err) = read_all(pcap(&[(10, 5, b"abc"), (11, 0, b"")], nanos, big));
                assert!(err.is_none(), "{err:?}");
                let frac = if nanos { 5 } else { 5000 };
                assert_eq!(got[0], (10_000_000_000 + frac, b"abc".to_vec(), 13, 1));
                assert_eq!(got[1].0, 11_000_000_000);
                assert_eq!(got.len(), 2);
            }
        }
    }

    #[test]
    fn written_pcaps_read_back() {
        let mut w = PcapWriter::new(Vec::new(), 1, 65_535).expect("header");
        w.write(1_500_000, b"one").expect("write");
        w.write(2_000_001, b"two!").expect("write");
        let (got, err) = read_all(w.finish().expect("finish"));
        assert!(err.is_none());
        assert_eq!(got[0], (1_500_000_000, b"one".to_vec(), 3, 1));
        assert_eq!(got[1].0, 2_000_001_000);
    }

    #[test]
    fn truncation_keeps_what_came_before() {
        let mut bytes = pcap(&[(1, 0, b"first"), (2, 0, b"second")], false, false);
        bytes.truncate(bytes.len() - 3);
        let (got, err) = read_all(bytes);
        assert_eq!(got.len(), 1);
        assert!(
            matches!(
                err,
                Some(ReadError::Truncated {
                    what: "packet",
                    offset: 45
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_is_not_a_capture() {
        let (_, err) = read_all(b"hello world".to_vec());
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("not a pcap or pcapng capture (it starts with 68 65 6c 6c)".into())
        );
        let (_, err) = read_all(Vec::new());
        assert!(matches!(err, Some(ReadError::NotCapture(_))));
    }

    #[test]
    fn absurd_lengths_are_corrupt_not_allocations() {
        let mut bytes = pcap(&[(1, 0, b"x")], false, false);
        bytes[24 + 8..24 + 12].copy_from_slice(&0xfff0_0000u32.to_le_bytes());
        let (got, err) = read_all(bytes);
        assert!(got.is_empty());
        assert!(
            matches!(err, Some(ReadError::Corrupt { offset: 24, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn gzip_is_recognised_by_magic() {
        use std::io::Write;
        let plain = pcap(&[(1, 0, b"zipped")], false, false);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&plain).expect("compress");
        let (got, err) = read_all(enc.finish().expect("compress"));
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got[0].1, b"zipped");
    }

    fn block(btype: u32, body: &[u8]) -> Vec<u8> {
        let len = 12 + body.len().div_ceil(4) * 4;
        let mut b = Vec::new();
        b.extend_from_slice(&btype.to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(body);
        b.resize(len - 4, 0);
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b
    }

    #[test]
    fn pcapng_interfaces_resolution_and_offset() {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut out = block(0x0a0d_0d0a, &shb);
        // interface 0: ethernet, microseconds (default)
        let mut idb0 = vec![1, 0, 0, 0, 0, 0, 4, 0];
        idb0.extend_from_slice(&[0, 0, 0, 0]);
        out.extend(block(1, &idb0));
        // interface 1: raw IP, nanoseconds, offset 100 s
        let mut idb1 = vec![101, 0, 0, 0, 0, 0, 4, 0];
        idb1.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]);
        idb1.extend_from_slice(&[14, 0, 8, 0]);
        idb1.extend_from_slice(&100u64.to_le_bytes());
        idb1.extend_from_slice(&[0, 0, 0, 0]);
        out.extend(block(1, &idb1));
        for (iface, ts, data) in [
            (0u32, 1_500_000u64, &b"eth"[..]),
            (1, 2_000_000_001, &b"rawip"[..]),
        ] {
            let mut epb = Vec::new();
            epb.extend_from_slice(&iface.to_le_bytes());
            epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(ts as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
            epb.extend_from_slice(data);
            out.extend(block(6, &epb));
        }
        out.extend(block(5, &[0; 8])); // interface statistics: skipped
        let (got, err) = read_all(out);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (1_500_000_000, b"eth".to_vec(), 3, 1));
        assert_eq!(got[1], (102_000_000_001, b"rawip".to_vec(), 5, 101));
    }

    #[test]
    fn pcapng_packet_for_unknown_interface_is_corrupt() {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut out = block(0x0a0d_0d0a, &shb);
        out.extend(block(
            6,
            &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        let (_, err) = read_all(out);
        assert!(err.is_some_and(|e| e.to_string().contains("interface 3")));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(prefix in 0usize..4, body in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let magics: [&[u8]; 4] = [&[0xd4, 0xc3, 0xb2, 0xa1], &[0x0a, 0x0d, 0x0d, 0x0a], &[0x4d, 0x3c, 0xb2, 0xa1], &[0x1f, 0x8b]];
            let mut bytes = magics[prefix].to_vec();
            bytes.extend(body);
            let _ = read_all(bytes);
        }
    }
}
