//! Finished records as the engine hands them out: plain values with no heap
//! data of their own (a DNS row's text sits in a buffer that is recycled),
//! so producing them allocates nothing in the steady state. Text forms
//! (uids, addresses, Community IDs) are made only when a row is written;
//! [`ConnRow::to_proto`] and [`DnsRow::to_proto`] give the bus records.

use heimdall_proto::sensor::v1::{ConnRecord, ConnState, DnsRecord, Transport};

use crate::dns::{self, Info};
use crate::history::History;
use crate::ids::{community_id, uid_string};
use crate::ip::Addr;

/// Zeek's `service` field: the names of the protocols confirmed on a
/// connection, in the order they were confirmed (a small fixed set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Services {
    names: [&'static str; Services::MAX],
    len: u8,
}

impl Services {
    /// More names than this on one connection are not kept.
    pub const MAX: usize = 6;

    pub fn as_slice(&self) -> &[&'static str] {
        &self.names[..self.len as usize]
    }

    pub fn contains(&self, name: &str) -> bool {
        self.as_slice().contains(&name)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a name at the end, unless present.
    pub fn add(&mut self, name: &'static str) {
        if !self.contains(name) && (self.len as usize) < Self::MAX {
            self.names[self.len as usize] = name;
            self.len += 1;
        }
    }

    /// Adds a name at the front, unless present.
    pub fn add_first(&mut self, name: &'static str) {
        if self.contains(name) {
            return;
        }
        let n = (self.len as usize).min(Self::MAX - 1);
        self.names.copy_within(0..n, 1);
        self.names[0] = name;
        self.len = n as u8 + 1;
    }

    pub fn remove(&mut self, name: &str) {
        let mut kept = 0;
        for i in 0..self.len as usize {
            if self.names[i] != name {
                self.names[kept] = self.names[i];
                kept += 1;
            }
        }
        self.len = kept as u8;
    }
}

/// The tunnels a connection was seen inside (their connection uids).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parents {
    ids: [u128; Parents::MAX],
    len: u8,
}

impl Parents {
    /// More parents than this are not kept (Zeek's sets stay far smaller).
    pub const MAX: usize = 8;

    pub fn as_slice(&self) -> &[u128] {
        &self.ids[..self.len as usize]
    }

    /// Adds a parent unless present or full.
    pub fn add(&mut self, uid: u128) {
        if !self.as_slice().contains(&uid) && (self.len as usize) < Self::MAX {
            self.ids[self.len as usize] = uid;
            self.len += 1;
        }
    }
}

/// One conn.log row: every field of Zeek's conn.log, as values.
#[derive(Debug, Clone, Copy)]
pub struct ConnRow {
    pub ts_us: i64,
    /// The connection uid (written as `C` and base62 digits).
    pub uid: u128,
    pub orig: Addr,
    pub orig_p: u16,
    pub resp: Addr,
    pub resp_p: u16,
    pub transport: Transport,
    pub services: Services,
    pub duration_us: Option<i64>,
    pub orig_bytes: Option<u64>,
    pub resp_bytes: Option<u64>,
    pub conn_state: ConnState,
    pub local_orig: Option<bool>,
    pub local_resp: Option<bool>,
    pub missed_bytes: u64,
    pub history: History,
    pub orig_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_pkts: u64,
    pub resp_ip_bytes: u64,
    pub tunnel_parents: Parents,
    pub ip_proto: u8,
    /// Link-layer addresses (all zero when not recorded).
    pub orig_l2: [u8; 6],
    pub resp_l2: [u8; 6],
}

impl ConnRow {
    /// The record for the bus.
    pub fn to_proto(&self, sensor_id: &str) -> ConnRecord {
        ConnRecord {
            ts_us: self.ts_us,
            uid: uid_string('C', self.uid),
            id_orig_h: self.orig.octets().to_vec().into(),
            id_orig_p: self.orig_p as u32,
            id_resp_h: self.resp.octets().to_vec().into(),
            id_resp_p: self.resp_p as u32,
            proto: self.transport as i32,
            service: self
                .services
                .as_slice()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            duration_us: self.duration_us,
            orig_bytes: self.orig_bytes,
            resp_bytes: self.resp_bytes,
            conn_state: self.conn_state as i32,
            local_orig: self.local_orig,
            local_resp: self.local_resp,
            missed_bytes: self.missed_bytes,
            history: (!self.history.is_empty()).then(|| self.history.as_str().to_string()),
            orig_pkts: Some(self.orig_pkts),
            orig_ip_bytes: Some(self.orig_ip_bytes),
            resp_pkts: Some(self.resp_pkts),
            resp_ip_bytes: Some(self.resp_ip_bytes),
            tunnel_parents: self
                .tunnel_parents
                .as_slice()
                .iter()
                .map(|p| uid_string('C', *p))
                .collect(),
            ip_proto: Some(self.ip_proto as u32),
            sensor_id: sensor_id.to_string(),
            community_id: self.community_id(),
            orig_l2_addr: l2(self.orig_l2),
            resp_l2_addr: l2(self.resp_l2),
            ..Default::default()
        }
    }

    /// Community ID v1 of the flow.
    pub fn community_id(&self) -> String {
        community_id(
            self.ip_proto,
            &self.orig,
            self.orig_p,
            &self.resp,
            self.resp_p,
        )
    }
}

/// A recorded link-layer address; none when it was not recorded.
fn l2<T: From<Vec<u8>>>(mac: [u8; 6]) -> T {
    if mac == [0; 6] {
        Vec::new().into()
    } else {
        mac.to_vec().into()
    }
}

/// One dns.log row: the connection's ids and the transaction.
#[derive(Debug, Clone)]
pub struct DnsRow {
    /// The uid of the connection that carried it.
    pub uid: u128,
    pub orig: Addr,
    pub orig_p: u16,
    pub resp: Addr,
    pub resp_p: u16,
    pub transport: Transport,
    pub info: Info,
}

impl DnsRow {
    pub fn ts_us(&self) -> i64 {
        self.info.ts_ns.div_euclid(1000)
    }

    /// The record for the bus.
    pub fn to_proto(&self, sensor_id: &str) -> DnsRecord {
        let i = &self.info;
        DnsRecord {
            ts_us: self.ts_us(),
            uid: uid_string('C', self.uid),
            id_orig_h: self.orig.octets().to_vec().into(),
            id_orig_p: self.orig_p as u32,
            id_resp_h: self.resp.octets().to_vec().into(),
            id_resp_p: self.resp_p as u32,
            proto: self.transport as i32,
            trans_id: Some(i.trans_id as u32),
            rtt_us: i.rtt_ns.map(|n| n.div_euclid(1000)),
            query: i.query().map(str::to_string),
            qclass: i.qclass.map(u32::from),
            qclass_name: i.qclass.map(|c| dns::qclass_name(c).to_string()),
            qtype: i.qtype.map(u32::from),
            qtype_name: i.qtype_name().map(|n| n.to_string()),
            rcode: i.rcode.map(u32::from),
            rcode_name: i.rcode.map(|r| dns::rcode_name(r).to_string()),
            aa: i.aa,
            tc: i.tc,
            rd: i.rd,
            ra: i.ra,
            z: i.z as u32,
            answers: i.answers().map(str::to_string).collect(),
            ttls_us: i.ttls.iter().map(|t| *t as i64 * 1_000_000).collect(),
            rejected: i.rejected,
            opcode: Some(i.opcode as u32),
            opcode_name: Some(dns::opcode_name(i.opcode, i.netbios).to_string()),
            sensor_id: sensor_id.to_string(),
            answer_addrs: i
                .answer_addrs
                .iter()
                .map(|a| a.octets().to_vec().into())
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_keep_order_and_put_first_in_front() {
        let mut s = Services::default();
        s.add("ssl");
        s.add("http");
        s.add("ssl");
        s.add_first("ftp-data");
        assert_eq!(s.as_slice(), ["ftp-data", "ssl", "http"]);
        s.remove("ssl");
        assert_eq!(s.as_slice(), ["ftp-data", "http"]);
        for n in ["a", "b", "c", "d", "e", "f", "g"] {
            s.add(n);
        }
        assert_eq!(s.as_slice().len(), Services::MAX);
        s.add_first("z");
        assert_eq!(s.as_slice()[0], "z");
        assert_eq!(s.as_slice().len(), Services::MAX);
    }

    #[test]
    fn parents_are_a_bounded_set() {
        let mut p = Parents::default();
        for i in 0..20u128 {
            p.add(i % 10);
        }
        assert_eq!(p.as_slice(), (0..8).collect::<Vec<u128>>());
    }
}
