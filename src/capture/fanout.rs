//! `PACKET_FANOUT` for live capture: the kernel hands each packet to one socket of a group, and
//! the choice is made by a classic BPF program that picks the socket by the client's address,
//! exactly as the pipeline shards a file (`pipeline::shard_of`): the side not on a server port,
//! for UDP to port 53 the source, otherwise the higher port's side, and for equal ports both
//! addresses together.
//!
//! Why not `PACKET_FANOUT_HASH`: the kernel's symmetric flow hash keeps both directions of one
//! connection together, but spreads one client's connections and its DNS lookups over the
//! workers, and each worker's DNS linker needs the client's MX answers to link its SMTP
//! sessions (`dns::DnsTracker::link`). Hashing the client keeps every judgement of `analyze`.
//!
//! `PACKET_FANOUT_FLAG_DEFRAG` makes the kernel put IPv4 fragments together before it chooses,
//! so a fragmented DNS answer reaches one worker whole. IPv6 fragments (next header 44) and
//! frames that are not IP go by both addresses (or to the first worker).

use std::io;

/// Classic BPF opcodes (`linux/filter.h`, `linux/bpf_common.h`).
mod op {
    /// `ldb [k]`, `ldh [k]`, `ld [k]`.
    pub const LDB_ABS: u16 = 0x30;
    pub const LDH_ABS: u16 = 0x28;
    pub const LDW_ABS: u16 = 0x20;
    /// `ldh [x + k]`.
    pub const LDH_IND: u16 = 0x48;
    /// `ld M[k]`, `ldx M[k]`, `st M[k]`.
    pub const LD_MEM: u16 = 0x60;
    pub const LDX_MEM: u16 = 0x61;
    pub const ST: u16 = 0x02;
    /// ALU with a constant: `rsh`, `lsh`, `and`, `mul`; `xor x`.
    pub const RSH_K: u16 = 0x74;
    pub const LSH_K: u16 = 0x64;
    pub const AND_K: u16 = 0x54;
    pub const MUL_K: u16 = 0x24;
    pub const XOR_X: u16 = 0xac;
    /// `tax`.
    pub const TAX: u16 = 0x07;
    /// Jumps: `jeq #k`, `jgt x`, `jeq x`, `ja`.
    pub const JEQ_K: u16 = 0x15;
    pub const JGT_X: u16 = 0x2d;
    pub const JEQ_X: u16 = 0x1d;
    pub const JA: u16 = 0x05;
    /// `ret a`, `ret #k`.
    pub const RET_A: u16 = 0x16;
    pub const RET_K: u16 = 0x06;
}

/// Loads relative to the network header (`SKF_NET_OFF`): the same offsets whether the frame
/// was received or sent, and whatever the link layer.
fn net(offset: i32) -> u32 {
    (libc::SKF_NET_OFF + offset) as u32
}

/// Where a jump goes.
#[derive(Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// A label.
    L(&'static str),
}

/// A tiny assembler: instructions with symbolic forward jumps, resolved at the end.
#[derive(Default)]
struct Asm {
    code: Vec<(u16, To, To, u32, Option<&'static str>)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn op(&mut self, code: u16, k: u32) {
        self.code.push((code, To::Next, To::Next, k, None));
    }

    fn jump(&mut self, code: u16, k: u32, jt: To, jf: To) {
        self.code.push((code, jt, jf, k, None));
    }

    fn ja(&mut self, to: &'static str) {
        self.code.push((op::JA, To::Next, To::Next, 0, Some(to)));
    }

    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.code.len()));
    }

    /// The program, or why it cannot be encoded (a jump farther than 255 instructions).
    fn assemble(self) -> Result<Vec<libc::sock_filter>, String> {
        let at = |name: &str| {
            self.labels
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, i)| *i)
                .ok_or_else(|| format!("fanout program: no label {name}"))
        };
        let mut out = Vec::with_capacity(self.code.len());
        for (i, &(code, jt, jf, k, ja)) in self.code.iter().enumerate() {
            let rel = |to: To| -> Result<u8, String> {
                match to {
                    To::Next => Ok(0),
                    To::L(name) => {
                        let target = at(name)?;
                        if target <= i {
                            return Err(format!("fanout program: backward jump to {name}"));
                        }
                        u8::try_from(target - i - 1)
                            .map_err(|_| "too many server ports for the fanout program".to_string())
                    }
                }
            };
            let k = match ja {
                Some(name) => (at(name)? - i - 1) as u32,
                None => k,
            };
            out.push(libc::sock_filter {
                code,
                jt: rel(jt)?,
                jf: rel(jf)?,
                k,
            });
        }
        Ok(out)
    }
}

/// Scratch memory slots of the program.
const M_PROTO: u32 = 0;
const M_SPORT: u32 = 1;
const M_DPORT: u32 = 2;

/// The port logic of `pipeline::shard_of` for one address family, with the ports in M[]:
/// jumps to `src`, `dst` or `sym` (both addresses).
fn pick_client(a: &mut Asm, ports: &[u16], labels: [&'static str; 8]) {
    let [dsrv, dnot, tie, udp, cmp, src, dst, sym] = labels;
    a.op(op::LD_MEM, M_DPORT);
    for &p in ports {
        a.jump(op::JEQ_K, u32::from(p), To::L(dsrv), To::Next);
    }
    a.ja(dnot);
    // The destination is a server port: the source is the client, unless both are.
    a.label(dsrv);
    a.op(op::LD_MEM, M_SPORT);
    for &p in ports {
        a.jump(op::JEQ_K, u32::from(p), To::L(tie), To::Next);
    }
    a.ja(src);
    // The destination is not: the destination is the client if the source is a server port.
    a.label(dnot);
    a.op(op::LD_MEM, M_SPORT);
    for &p in ports {
        a.jump(op::JEQ_K, u32::from(p), To::L(dst), To::Next);
    }
    a.ja(tie);
    // Both or neither: UDP to 53 is a query from its source; else the higher port's side.
    a.label(tie);
    a.op(op::LD_MEM, M_PROTO);
    a.jump(op::JEQ_K, 17, To::L(udp), To::L(cmp));
    a.label(udp);
    a.op(op::LD_MEM, M_DPORT);
    a.jump(op::JEQ_K, 53, To::L(src), To::L(cmp));
    a.label(cmp);
    a.op(op::LDX_MEM, M_DPORT);
    a.op(op::LD_MEM, M_SPORT);
    a.jump(op::JGT_X, 0, To::L(src), To::Next);
    a.jump(op::JEQ_X, 0, To::L(sym), To::L(dst));
}

/// The client's address of one family into A, then on to `mix`: the port logic, then the
/// source's words, the destination's, or both (`addresses`: their word offsets).
fn client_hash(a: &mut Asm, ports: &[u16], labels: [&'static str; 8], addresses: (&[i32], &[i32])) {
    let (src, dst) = addresses;
    pick_client(a, ports, labels);
    a.label(labels[5]);
    xor_words(a, src);
    a.ja("mix");
    a.label(labels[6]);
    xor_words(a, dst);
    a.ja("mix");
    a.label(labels[7]);
    xor_words(a, &[src, dst].concat());
    a.ja("mix");
}

/// XORs the 32-bit words at `offsets` (network-header relative) into A.
fn xor_words(a: &mut Asm, offsets: &[i32]) {
    for (n, &o) in offsets.iter().enumerate() {
        if n > 0 {
            a.op(op::TAX, 0);
        }
        a.op(op::LDW_ABS, net(o));
        if n > 0 {
            a.op(op::XOR_X, 0);
        }
    }
}

/// The fanout program for these server ports: returns a hash of the client's address (the
/// kernel takes it modulo the group's size), or why it cannot be built.
pub fn program(server_ports: &[u16]) -> Result<Vec<libc::sock_filter>, String> {
    let mut a = Asm::default();
    a.op(op::LDB_ABS, net(0));
    a.op(op::RSH_K, 4);
    a.jump(op::JEQ_K, 4, To::L("v4"), To::Next);
    a.jump(op::JEQ_K, 6, To::L("v6"), To::L("other"));

    a.label("v4");
    // A fragment the kernel did not put together has no ports: both addresses decide.
    a.op(op::LDH_ABS, net(6));
    a.op(op::AND_K, 0x1fff);
    a.jump(op::JEQ_K, 0, To::Next, To::L("v4_sym"));
    a.op(op::LDB_ABS, net(9));
    a.op(op::ST, M_PROTO);
    a.jump(op::JEQ_K, 6, To::L("v4_ports"), To::Next);
    a.jump(op::JEQ_K, 17, To::L("v4_ports"), To::L("v4_sym"));
    a.label("v4_ports");
    a.op(op::LDB_ABS, net(0));
    a.op(op::AND_K, 0xf);
    a.op(op::LSH_K, 2);
    a.op(op::TAX, 0);
    a.op(op::LDH_IND, net(0));
    a.op(op::ST, M_SPORT);
    a.op(op::LDH_IND, net(2));
    a.op(op::ST, M_DPORT);
    client_hash(
        &mut a,
        server_ports,
        [
            "v4_dsrv", "v4_dnot", "v4_tie", "v4_udp", "v4_cmp", "v4_src", "v4_dst", "v4_sym",
        ],
        (&[12], &[16]),
    );

    a.label("v6");
    a.op(op::LDB_ABS, net(6));
    a.op(op::ST, M_PROTO);
    a.jump(op::JEQ_K, 6, To::L("v6_ports"), To::Next);
    a.jump(op::JEQ_K, 17, To::L("v6_ports"), To::L("v6_sym"));
    a.label("v6_ports");
    a.op(op::LDH_ABS, net(40));
    a.op(op::ST, M_SPORT);
    a.op(op::LDH_ABS, net(42));
    a.op(op::ST, M_DPORT);
    client_hash(
        &mut a,
        server_ports,
        [
            "v6_dsrv", "v6_dnot", "v6_tie", "v6_udp", "v6_cmp", "v6_src", "v6_dst", "v6_sym",
        ],
        (&[8, 12, 16, 20], &[24, 28, 32, 36]),
    );

    // Spread the address bits (Fibonacci hashing), so that the kernel's modulo sees them all.
    a.label("mix");
    a.op(op::MUL_K, 0x9E37_79B1);
    a.op(op::TAX, 0);
    a.op(op::RSH_K, 16);
    a.op(op::XOR_X, 0);
    a.op(op::RET_A, 0);
    a.label("other");
    a.op(op::RET_K, 0);
    a.assemble()
}

/// `setsockopt(fd, SOL_PACKET, option, value)`, the error named `what`.
#[cfg(target_os = "linux")]
fn set_option<T>(
    fd: std::os::fd::RawFd,
    option: libc::c_int,
    value: &T,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `value` is a valid `T` that lives across the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            option,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what}: {}",
            io::Error::last_os_error()
        )))
    }
}

/// One interface's fanout group.
pub struct Group {
    id: u16,
    members: usize,
}

impl Group {
    /// The group of the interface at `position` on the command line: an id made of the
    /// process id and the position, so that two sensors or two interfaces never share one.
    pub fn new(position: usize) -> Group {
        let base = std::process::id().wrapping_mul(0x9E37) as usize;
        Group {
            id: (base.wrapping_add(position) & 0xffff) as u16,
            members: 0,
        }
    }

    /// Adds the packet socket `fd` to the group; the first member also installs `program`.
    /// Members are numbered in the order they join, and the program's answer (modulo the
    /// members) picks one.
    #[cfg(target_os = "linux")]
    pub fn join(
        &mut self,
        fd: std::os::fd::RawFd,
        program: &[libc::sock_filter],
    ) -> io::Result<()> {
        let mode = libc::PACKET_FANOUT_CBPF | libc::PACKET_FANOUT_FLAG_DEFRAG;
        let arg = (u32::from(self.id) | (mode << 16)) as libc::c_int;
        set_option(fd, libc::PACKET_FANOUT, &arg, "PACKET_FANOUT")?;
        if self.members == 0 {
            let prog = libc::sock_fprog {
                len: u16::try_from(program.len()).map_err(io::Error::other)?,
                filter: program.as_ptr().cast_mut(),
            };
            // `prog` points at `program`, which outlives the call (the kernel copies it).
            set_option(fd, libc::PACKET_FANOUT_DATA, &prog, "PACKET_FANOUT_DATA")?;
        }
        self.members += 1;
        Ok(())
    }

    /// Elsewhere there is no `PACKET_FANOUT`: one reader shards.
    #[cfg(not(target_os = "linux"))]
    pub fn join(&mut self, _fd: i32, _program: &[libc::sock_filter]) -> io::Result<()> {
        Err(io::Error::other("PACKET_FANOUT is Linux only"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_assembles_for_the_default_ports_and_refuses_too_many() {
        let p = program(&[25, 465, 587, 53]).unwrap();
        assert!(p.len() < 200, "{}", p.len());
        assert_eq!(p.last().map(|i| i.code), Some(op::RET_K));
        let many: Vec<u16> = (1000..1200).collect();
        assert!(program(&many).is_err());
    }
}
