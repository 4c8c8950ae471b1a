//! What a CAN socket call reads from and writes into its caller's memory, once for everyone who answers
//! such calls on a program's behalf (the VMM for its guest, [`crate::emu`] for host and container
//! processes): the x86-64 `struct msghdr` and iovec layouts, address out-parameters (`addr`, `*addrlen`),
//! and how a received frame, its `sockaddr_can`, control messages and `msg_flags` land in a `recvmsg` or
//! `recvfrom` caller's buffers.
//!
//! The caller's memory is a [`CallerMemory`]; every pointer argument is read once.

use crate::errno::Errno;
use crate::raw::{recv_flags, sockaddr_can, MSG_CTRUNC, MSG_TRUNC, SOCKADDR_CAN_LEN};

/// `UIO_MAXIOV`: more iovecs are `EMSGSIZE`.
pub const MAX_IOV: u64 = 1024;
/// `MSG_TRUNC` in a call's flags: return the frame's real length.
const MSG_TRUNC_IN: u64 = 0x20;

/// The memory of the program whose call is answered.
pub trait CallerMemory {
    /// `len` bytes at `addr`; `EFAULT` where the program has no readable memory.
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno>;
    /// Writes `data` at `addr`; `EFAULT` where the program has no writable memory.
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno>;

    fn read_u32(&self, addr: u64) -> Result<u32, Errno> {
        let b = self.read(addr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), Errno> {
        self.write(addr, &value.to_le_bytes())
    }
}

/// `struct msghdr` as read from the caller (x86-64: 56 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHdr {
    pub name: u64,
    pub namelen: u32,
    pub iov: u64,
    pub iovlen: u64,
    pub control: u64,
    pub controllen: u64,
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl MsgHdr {
    pub const SIZE: usize = 56;

    pub fn read(mem: &impl CallerMemory, addr: u64) -> Result<MsgHdr, Errno> {
        let b = mem.read(addr, Self::SIZE)?;
        Ok(MsgHdr {
            name: u64_at(&b, 0),
            namelen: u64_at(&b, 8) as u32,
            iov: u64_at(&b, 16),
            iovlen: u64_at(&b, 24),
            control: u64_at(&b, 32),
            controllen: u64_at(&b, 40),
        })
    }

    /// The `(base, len)` iovecs; more than [`MAX_IOV`] is `EMSGSIZE`.
    pub fn iovecs(&self, mem: &impl CallerMemory) -> Result<Vec<(u64, u64)>, Errno> {
        if self.iovlen > MAX_IOV {
            return Err(Errno::EMSGSIZE);
        }
        let raw = mem.read(self.iov, (self.iovlen * 16) as usize)?;
        Ok(raw
            .chunks_exact(16)
            .map(|v| (u64_at(v, 0), u64_at(v, 8)))
            .collect())
    }
}

/// Writes an address into a caller's (`addr`, `*addrlen`) pair: truncated to its buffer, the length set to
/// the address's full length; nothing when either pointer is null.
pub fn put_addr(mem: &mut impl CallerMemory, addr: u64, lenp: u64, bytes: &[u8]) -> Result<(), Errno> {
    if addr == 0 || lenp == 0 {
        return Ok(());
    }
    let cap = mem.read_u32(lenp)? as i32;
    if cap < 0 {
        return Err(Errno::EINVAL);
    }
    let n = (cap as usize).min(bytes.len());
    mem.write(addr, &bytes[..n])?;
    mem.write_u32(lenp, bytes.len() as u32)
}

/// A received frame, as a receive call reports it.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// The frame in the kernel's layout (16 or 72 bytes).
    pub frame: &'a [u8],
    /// The interface it came from.
    pub ifindex: u32,
    /// The echo of the socket's own frame (`MSG_CONFIRM`).
    pub own: bool,
    /// Control messages the socket asked for ([`crate::raw::control_messages`]).
    pub control: &'a [u8],
}

/// `recvfrom(buf, len, flags, src, srclen)`: the frame (truncated to `len`), the source address; returns
/// the call's value.
pub fn deliver_recvfrom(
    mem: &mut impl CallerMemory,
    (buf, len, flags, src, srclen): (u64, u64, u64, u64, u64),
    rx: &Delivery<'_>,
) -> Result<usize, Errno> {
    let n = rx.frame.len().min(len as usize);
    mem.write(buf, &rx.frame[..n])?;
    put_addr(mem, src, srclen, &sockaddr_can(rx.ifindex))?;
    Ok(if flags & MSG_TRUNC_IN != 0 {
        rx.frame.len()
    } else {
        n
    })
}

/// `recvmsg(msg, flags)` with `hdr` read from `msg` and its `iov`: the frame scattered over the iovecs,
/// the source address, the control messages (or `MSG_CTRUNC`), `msg_controllen` and `msg_flags`; returns
/// the call's value.
pub fn deliver_recvmsg(
    mem: &mut impl CallerMemory,
    msg: u64,
    hdr: &MsgHdr,
    iov: &[(u64, u64)],
    flags: u64,
    rx: &Delivery<'_>,
) -> Result<usize, Errno> {
    let frame = rx.frame;
    let mut copied = 0usize;
    for &(base, len) in iov {
        if copied == frame.len() {
            break;
        }
        let n = (len as usize).min(frame.len() - copied);
        mem.write(base, &frame[copied..copied + n])?;
        copied += n;
    }
    let mut out_flags = recv_flags(rx.own);
    if copied < frame.len() {
        out_flags |= MSG_TRUNC;
    }
    if hdr.name != 0 {
        let addr = sockaddr_can(rx.ifindex);
        let n = (hdr.namelen as usize).min(addr.len());
        mem.write(hdr.name, &addr[..n])?;
        mem.write_u32(msg + 8, SOCKADDR_CAN_LEN as u32)?;
    }
    let mut controllen = 0u64;
    if !rx.control.is_empty() {
        if hdr.control != 0 && rx.control.len() as u64 <= hdr.controllen {
            mem.write(hdr.control, rx.control)?;
            controllen = rx.control.len() as u64;
        } else {
            out_flags |= MSG_CTRUNC;
        }
    }
    mem.write(msg + 40, &controllen.to_le_bytes())?;
    mem.write_u32(msg + 48, out_flags as u32)?;
    Ok(if flags & MSG_TRUNC_IN != 0 {
        frame.len()
    } else {
        copied
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 KiB of memory at 0x1000.
    struct Flat(Vec<u8>);

    impl CallerMemory for Flat {
        fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
            let at = addr.checked_sub(0x1000).ok_or(Errno::EFAULT)? as usize;
            self.0.get(at..at + len).map(<[u8]>::to_vec).ok_or(Errno::EFAULT)
        }

        fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno> {
            let at = addr.checked_sub(0x1000).ok_or(Errno::EFAULT)? as usize;
            self.0
                .get_mut(at..at + data.len())
                .ok_or(Errno::EFAULT)?
                .copy_from_slice(data);
            Ok(())
        }
    }

    #[test]
    fn recvmsg_scatters_and_reports_like_linux() {
        let mut m = Flat(vec![0; 4096]);
        // msghdr at 0x1000: name at 0x1100 (24 bytes), two iovecs at 0x1200 (4 + 100 bytes at 0x1300/0x1400),
        // control at 0x1500 with room for 8 bytes only.
        let mut hdr = Vec::new();
        for v in [0x1100u64, 24, 0x1200, 2, 0x1500, 8, 0] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        m.write(0x1000, &hdr).unwrap();
        for (i, v) in [0x1300u64, 4, 0x1400, 100].iter().enumerate() {
            m.write(0x1200 + 8 * i as u64, &v.to_le_bytes()).unwrap();
        }
        let h = MsgHdr::read(&m, 0x1000).unwrap();
        assert_eq!((h.name, h.namelen, h.iovlen), (0x1100, 24, 2));
        let iov = h.iovecs(&m).unwrap();
        let frame: Vec<u8> = (0..16).collect();
        let control = [7u8; 32];
        let rx = Delivery {
            frame: &frame,
            ifindex: 9,
            own: true,
            control: &control,
        };
        assert_eq!(deliver_recvmsg(&mut m, 0x1000, &h, &iov, 0, &rx), Ok(16));
        assert_eq!(m.read(0x1300, 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(m.read(0x1400, 12).unwrap(), (4..16).collect::<Vec<u8>>());
        assert_eq!(m.read(0x1100, 24).unwrap(), sockaddr_can(9).to_vec());
        let flags = m.read_u32(0x1000 + 48).unwrap() as i32;
        assert_eq!(
            flags & MSG_CTRUNC,
            MSG_CTRUNC,
            "8 bytes cannot hold the control message"
        );
        assert_eq!(flags & crate::raw::MSG_CONFIRM, crate::raw::MSG_CONFIRM);
        assert_eq!(
            m.read(0x1000 + 40, 8).unwrap(),
            vec![0; 8],
            "no control message written"
        );
        let too_many = MsgHdr { iovlen: 1025, ..h };
        assert_eq!(too_many.iovecs(&m), Err(Errno::EMSGSIZE));
    }

    #[test]
    fn recvfrom_truncates_and_addresses_are_optional() {
        let mut m = Flat(vec![0; 4096]);
        let frame = [1u8; 16];
        let rx = Delivery {
            frame: &frame,
            ifindex: 1,
            own: false,
            control: &[],
        };
        assert_eq!(deliver_recvfrom(&mut m, (0x1000, 8, 0, 0, 0), &rx), Ok(8));
        assert_eq!(
            deliver_recvfrom(&mut m, (0x1000, 8, 0x20, 0, 0), &rx),
            Ok(16),
            "MSG_TRUNC"
        );
        m.write_u32(0x1200, 8).unwrap();
        put_addr(&mut m, 0x1100, 0x1200, &sockaddr_can(3)).unwrap();
        assert_eq!(m.read_u32(0x1200).unwrap(), 24, "full length reported");
        assert_eq!(m.read(0x1100, 8).unwrap(), sockaddr_can(3)[..8].to_vec());
        m.write_u32(0x1200, u32::MAX).unwrap();
        assert_eq!(
            put_addr(&mut m, 0x1100, 0x1200, &sockaddr_can(3)),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            deliver_recvfrom(&mut m, (0x10, 8, 0, 0, 0), &rx),
            Err(Errno::EFAULT)
        );
    }
}
