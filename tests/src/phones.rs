//! A small capture of a home network where a phone rejoins with a new
//! randomized (locally administered) MAC, as phones do when their private
//! address rotates, next to a smart plug with a fixed MAC. Written as real
//! Ethernet frames to a pcap file so tests run it through the engine.

use std::io;
use std::path::Path;

use heimdall_engine::reader::PcapWriter;

/// The phone's first private MAC.
pub const PHONE_MAC_1: [u8; 6] = [0xda, 0xa1, 0x19, 0x4e, 0x21, 0x07];
/// Its second private MAC, half an hour later.
pub const PHONE_MAC_2: [u8; 6] = [0x3e, 0x52, 0x8c, 0x90, 0x11, 0xa4];
/// A TP-Link plug (a TP-Link OUI, globally administered).
pub const PLUG_MAC: [u8; 6] = [0x50, 0xc7, 0xbf, 0x12, 0x34, 0x56];
/// The router.
pub const ROUTER_MAC: [u8; 6] = [0x00, 0x1d, 0x0f, 0xaa, 0xbb, 0xcc];
/// The phone's DHCP client identifier: type 255, IAID, DUID-LL of a
/// hardware address the phone keeps for itself (RFC 4361 style).
pub const PHONE_CLIENT_ID: [u8; 15] = [
    0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55,
];
/// The host name the phone sends (option 12).
pub const PHONE_HOSTNAME: &str = "Annas-Pixel-7";

const T0_US: i64 = 1_760_000_000_000_000;

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + UDP frame (UDP checksum left out, as IPv4 allows).
fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (28 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A DHCP client message (1 discover, 3 request) with the options a phone
/// sends.
fn dhcp_client(
    mac: [u8; 6],
    kind: u8,
    xid: u32,
    client_id: &[u8],
    host: &str,
    vendor: &str,
) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, kind]);
    b.push(61);
    b.push(client_id.len() as u8);
    b.extend_from_slice(client_id);
    b.push(12);
    b.push(host.len() as u8);
    b.extend_from_slice(host.as_bytes());
    if !vendor.is_empty() {
        b.push(60);
        b.push(vendor.len() as u8);
        b.extend_from_slice(vendor.as_bytes());
    }
    b.extend_from_slice(&[55, 10, 1, 3, 6, 15, 26, 28, 51, 58, 59, 43]);
    b.push(255);
    b
}

/// A DHCP ACK from the router handing `ip` to `mac`.
fn dhcp_ack(mac: [u8; 6], xid: u32, ip: [u8; 4]) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[0] = 2;
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[16..20].copy_from_slice(&ip);
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[
        53, 1, 5, 54, 4, 192, 168, 1, 1, 51, 4, 0, 0, 0x0e, 0x10, 255,
    ]);
    b
}

/// An ARP announcement (gratuitous request) of `ip` by `mac`.
fn arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip);
    f
}

/// A DNS query for `name` from `src`.
fn dns_query(mac: [u8; 6], src: [u8; 4], id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    udp(mac, ROUTER_MAC, src, [192, 168, 1, 1], 40000 + id, 53, &q)
}

/// A device joining: DHCP discover (and request, for a client that sends
/// one), the router's ACK, and an ARP announcement of the new address.
#[allow(clippy::too_many_arguments)] // the fields of one DHCP exchange
fn join(
    v: &mut Vec<(i64, Vec<u8>)>,
    t: i64,
    mac: [u8; 6],
    ip: [u8; 4],
    xid: u32,
    client_id: &[u8],
    host: &str,
    vendor: &str,
    request: bool,
) {
    let (bcast, any, all, router_ip) = ([0xff; 6], [0; 4], [255; 4], [192, 168, 1, 1]);
    let client = |kind| {
        udp(
            mac,
            bcast,
            any,
            all,
            68,
            67,
            &dhcp_client(mac, kind, xid, client_id, host, vendor),
        )
    };
    v.push((t, client(1)));
    if request {
        v.push((t + 2_000, client(3)));
    }
    v.push((
        t + 3_000,
        udp(
            ROUTER_MAC,
            mac,
            router_ip,
            ip,
            67,
            68,
            &dhcp_ack(mac, xid, ip),
        ),
    ));
    v.push((t + 10_000, arp(mac, ip)));
}

/// The frames of the scenario, with their times: the phone joins with its
/// first private MAC, the plug joins, and 30 minutes later the phone
/// rejoins with a second private MAC, showing the same client id and name.
pub fn frames() -> Vec<(i64, Vec<u8>)> {
    const MIN: i64 = 60_000_000;
    let mut v = Vec::new();
    let vendor = "android-dhcp-14";
    // The phone, first MAC.
    let (p1, ip1) = (PHONE_MAC_1, [192, 168, 1, 50]);
    join(
        &mut v,
        T0_US,
        p1,
        ip1,
        0x1001,
        &PHONE_CLIENT_ID,
        PHONE_HOSTNAME,
        vendor,
        true,
    );
    v.push((
        T0_US + 20_000,
        dns_query(p1, ip1, 1, "connectivitycheck.gstatic.com"),
    ));
    // The plug.
    let (plug, plug_ip) = (PLUG_MAC, [192, 168, 1, 60]);
    let plug_cid = [1, plug[0], plug[1], plug[2], plug[3], plug[4], plug[5]];
    join(
        &mut v,
        T0_US + MIN,
        plug,
        plug_ip,
        0x2002,
        &plug_cid,
        "HS110(EU)",
        "udhcp 1.19.4",
        false,
    );
    v.push((
        T0_US + MIN + 20_000,
        dns_query(plug, plug_ip, 2, "devs.tplinkcloud.com"),
    ));
    // The phone again, 30 minutes later, with a new private MAC. Its first
    // frame is an ARP probe, before it says who it is: the registry must
    // hold it back, not announce a stranger.
    let (p2, ip2) = (PHONE_MAC_2, [192, 168, 1, 51]);
    let t = T0_US + 30 * MIN;
    let mut probe = arp(p2, ip2);
    probe[28..32].copy_from_slice(&[0, 0, 0, 0]);
    v.push((t, probe));
    join(
        &mut v,
        t + 1_000_000,
        p2,
        ip2,
        0x3003,
        &PHONE_CLIENT_ID,
        PHONE_HOSTNAME,
        vendor,
        true,
    );
    v.push((t + 1_020_000, dns_query(p2, ip2, 3, "play.googleapis.com")));
    // Later traffic, so packet time passes every grace period.
    v.push((t + 60 * 1_000_000, arp(plug, plug_ip)));
    v
}

/// Writes the scenario as a pcap file.
pub fn write_pcap(path: &Path) -> io::Result<()> {
    let mut w = PcapWriter::new(std::fs::File::create(path)?, 1, 65_535)?;
    for (ts, f) in frames() {
        w.write(ts, &f)?;
    }
    w.finish()?;
    Ok(())
}
