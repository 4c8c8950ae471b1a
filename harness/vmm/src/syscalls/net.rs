//! Socket syscalls. `AF_CAN`/`SOCK_RAW`/`CAN_RAW` sockets are served by [`crate::can`]; `AF_UNIX`,
//! `AF_INET` and `AF_INET6` datagram sockets exist only for interface `ioctl`s (glibc's
//! `if_nametoindex` opens one for `SIOCGIFINDEX`). Every other socket is refused with `EACCES`: the
//! guest has no network besides its CAN interfaces.

use super::abi::{access_ok, SysResult};
use super::fdio::{can_recv, read_fd, write_fd};
use crate::can::{
    control_messages, parse_sockaddr_can, sockaddr_can, GuestCanSocket, AF_CAN, CAN_RAW, SOCKADDR_CAN_LEN,
};
use crate::errno::Errno;
use crate::fdtable::Object;
use crate::guest::{Guest, MAX_IO};
use crate::vcpu::CpuState;
use vcan::callmem::{deliver_recvfrom, deliver_recvmsg, put_addr, Delivery, MsgHdr};

const SOCK_DGRAM: u64 = 2;
const SOCK_RAW: u64 = 3;
const SOCK_NONBLOCK: u64 = 0x800;
const SOCK_CLOEXEC: u64 = 0x8_0000;
const MSG_PEEK: u64 = 0x2;
const MSG_DONTWAIT: u64 = 0x40;
use vcan::raw::{SOL_SOCKET, SO_DOMAIN, SO_ERROR, SO_TYPE};

/// True if `fd` is a guest CAN socket (used to trigger the snapshot before its `bind`).
pub fn is_can_socket(g: &Guest, fd: u64) -> bool {
    g.fds
        .get(fd as i32)
        .is_ok_and(|d| matches!(d.borrow().object, Object::Can(_)))
}

pub fn socket(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (domain, ty, proto) = (a[0] as i32, a[1], a[2] as i32);
    if ty & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let nonblock = ty & SOCK_NONBLOCK != 0;
    let cloexec = ty & SOCK_CLOEXEC != 0;
    let base = ty & 0xf;
    let object = match domain {
        AF_CAN => {
            if base != SOCK_RAW {
                return Err(Errno::EPROTONOSUPPORT);
            }
            if proto != CAN_RAW {
                return Err(Errno::EPROTONOSUPPORT);
            }
            Object::Can(Box::new(GuestCanSocket::new(format!("{}@vm", g.info.exe_name))))
        }
        libc::AF_UNIX | libc::AF_INET | libc::AF_INET6 if base == SOCK_DGRAM => {
            Object::IoctlSocket { domain }
        }
        _ => {
            if g.unknown_seen.insert(1 << 34 | domain as u64) {
                tracing::warn!(
                    domain,
                    kind = base,
                    "the guest has no network besides its CAN interfaces: socket refused with EACCES"
                );
            }
            return Err(Errno::EACCES);
        }
    };
    Ok(g.fds.insert(object, nonblock, cloexec)? as u64)
}

fn with_can<R>(
    g: &Guest,
    fd: u64,
    f: impl FnOnce(&mut GuestCanSocket) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let desc = g.fds.get(fd as i32)?;
    let mut d = desc.borrow_mut();
    match &mut d.object {
        Object::Can(s) => f(s),
        Object::IoctlSocket { .. } => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::ENOTSOCK),
    }
}

/// Reads a `sockaddr_can` and returns its ifindex.
fn read_can_addr(g: &Guest, addr: u64, len: u64) -> Result<u32, Errno> {
    if len < 8 {
        return Err(Errno::EINVAL);
    }
    parse_sockaddr_can(&g.read_user(addr, len.min(SOCKADDR_CAN_LEN as u64))?)
}

pub fn bind(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let desc = g.fds.get(a[0] as i32)?;
    if !matches!(desc.borrow().object, Object::Can(_)) {
        return Err(match desc.borrow().object {
            Object::IoctlSocket { .. } => Errno::EINVAL,
            _ => Errno::ENOTSOCK,
        });
    }
    let ifindex = read_can_addr(g, a[1], a[2])?;
    let ifaces = g.ifaces.clone();
    with_can(g, a[0], |s| s.bind(&ifaces, ifindex))?;
    Ok(0)
}

pub fn connect(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let desc = g.fds.get(a[0] as i32)?;
    let d = desc.borrow();
    match d.object {
        Object::Can(_) | Object::IoctlSocket { .. } => Err(Errno::EOPNOTSUPP),
        _ => Err(Errno::ENOTSOCK),
    }
}

pub fn listen(g: &mut Guest, cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    connect(g, cpu, a)
}

pub fn shutdown(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let desc = g.fds.get(a[0] as i32)?;
    let d = desc.borrow();
    match d.object {
        Object::Can(_) | Object::IoctlSocket { .. } => Err(Errno::ENOTCONN),
        _ => Err(Errno::ENOTSOCK),
    }
}

pub fn getsockname(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let ifindex = with_can(g, a[0], |s| Ok(s.bound.unwrap_or(0)))?;
    put_addr(g, a[1], a[2], &sockaddr_can(ifindex))?;
    Ok(0)
}

pub fn getpeername(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.fds.get(a[0] as i32)?;
    Err(Errno::ENOTCONN)
}

pub fn setsockopt(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, level, opt, val, len) = (a[0], a[1] as i32, a[2] as i32, a[3], a[4]);
    if len > 1 << 16 {
        return Err(Errno::EINVAL);
    }
    let desc = g.fds.get(fd as i32)?;
    let is_can = matches!(desc.borrow().object, Object::Can(_));
    if !is_can {
        return match desc.borrow().object {
            Object::IoctlSocket { .. } if level == SOL_SOCKET => Ok(0),
            Object::IoctlSocket { .. } => Err(Errno::ENOPROTOOPT),
            _ => Err(Errno::ENOTSOCK),
        };
    }
    // Read the value first (EFAULT before any change).
    let bytes = g.read_user(val, len)?;
    let ifaces = g.ifaces.clone();
    with_can(g, fd, |s| s.setsockopt(&ifaces, level, opt, &bytes))?;
    Ok(0)
}

pub fn getsockopt(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, level, opt, val, lenp) = (a[0], a[1] as i32, a[2] as i32, a[3], a[4]);
    let desc = g.fds.get(fd as i32)?;
    let (is_can, domain) = match desc.borrow().object {
        Object::Can(_) => (true, AF_CAN),
        Object::IoctlSocket { domain } => (false, domain),
        _ => return Err(Errno::ENOTSOCK),
    };
    let cap = g.read_u32(lenp)? as i32;
    if cap < 0 {
        return Err(Errno::EINVAL);
    }
    let value: Vec<u8> = if is_can {
        with_can(g, fd, |s| s.getsockopt(level, opt, cap as usize))?
    } else {
        match (level, opt) {
            (SOL_SOCKET, SO_TYPE) => (SOCK_DGRAM as i32).to_le_bytes().to_vec(),
            (SOL_SOCKET, SO_DOMAIN) => domain.to_le_bytes().to_vec(),
            (SOL_SOCKET, SO_ERROR) => 0i32.to_le_bytes().to_vec(),
            _ => return Err(Errno::ENOPROTOOPT),
        }
    };
    let n = value.len().min(cap as usize);
    g.write_user(val, &value[..n])?;
    g.write_u32(lenp, n as u32)?;
    Ok(0)
}

fn can_send(g: &mut Guest, fd: u64, data: &[u8], dest: Option<(u64, u64)>) -> SysResult {
    if let Some((addr, len)) = dest {
        if addr != 0 {
            let ifindex = read_can_addr(g, addr, len)?;
            let bound = with_can(g, fd, |s| Ok(s.bound))?;
            if bound.is_some_and(|b| b != ifindex && ifindex != 0) || bound.is_none() {
                return Err(Errno::EINVAL);
            }
        }
    }
    with_can(g, fd, |s| s.send(data).map(|n| n as u64))
}

pub fn sendto(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    access_ok(a[1], a[2])?;
    let desc = g.fds.get(a[0] as i32)?;
    let is_can = matches!(desc.borrow().object, Object::Can(_));
    let data = g.read_user(a[1], a[2].min(MAX_IO))?;
    if !is_can {
        return Ok(write_fd(g, a[0] as i32, &data)? as u64);
    }
    can_send(g, a[0], &data, Some((a[4], a[5])))
}

pub fn recvfrom(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, buf, len, flags, src, srclen) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    access_ok(buf, len)?;
    let desc = g.fds.get(fd as i32)?;
    if !matches!(desc.borrow().object, Object::Can(_)) {
        let data = read_fd(g, fd as i32, len)?;
        g.write_user(buf, &data)?;
        return Ok(data.len() as u64);
    }
    let dontwait = desc.borrow().nonblock || flags & MSG_DONTWAIT != 0;
    let (frame, info) = can_recv(g, &desc, dontwait, flags & MSG_PEEK != 0)?;
    let rx = Delivery {
        frame: &frame,
        ifindex: info.ifindex,
        own: info.own,
        control: &[],
    };
    Ok(deliver_recvfrom(g, (buf, len, flags, src, srclen), &rx)? as u64)
}

pub fn sendmsg(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let m = MsgHdr::read(g, a[1])?;
    let iov = g.read_iovecs(m.iov, m.iovlen)?;
    let data = g.gather(&iov, MAX_IO)?;
    let desc = g.fds.get(a[0] as i32)?;
    if !matches!(desc.borrow().object, Object::Can(_)) {
        return Ok(write_fd(g, a[0] as i32, &data)? as u64);
    }
    let dest = (m.name != 0).then_some((m.name, u64::from(m.namelen)));
    can_send(g, a[0], &data, dest)
}

pub fn recvmsg(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, msg, flags) = (a[0], a[1], a[2]);
    let m = MsgHdr::read(g, msg)?;
    let iov = g.read_iovecs(m.iov, m.iovlen)?;
    g.mm.check(msg, 56, crate::mm::Access::Write)?;
    let desc = g.fds.get(fd as i32)?;
    if !matches!(desc.borrow().object, Object::Can(_)) {
        let total: u64 = iov.iter().map(|v| v.1).sum();
        let data = read_fd(g, fd as i32, total)?;
        return Ok(g.scatter(&iov, &data)? as u64);
    }
    let dontwait = desc.borrow().nonblock || flags & MSG_DONTWAIT != 0;
    let (frame, info) = can_recv(g, &desc, dontwait, flags & MSG_PEEK != 0)?;
    // Control messages: the receive timestamp.
    let control = with_can(g, fd, |s| Ok(control_messages(&s.opts, info.timestamp_ns)))?;
    let rx = Delivery {
        frame: &frame,
        ifindex: info.ifindex,
        own: info.own,
        control: &control,
    };
    Ok(deliver_recvmsg(g, msg, &m, &iov, flags, &rx)? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;

    fn cpu() -> CpuState {
        CpuState::for_tests(Default::default())
    }

    #[test]
    fn sockets_and_interface_ioctls() {
        let mut g = test_guest();
        g.ifaces =
            crate::can::Interfaces::new(vec![("can0".into(), "unix:/nonexistent.sock".parse().unwrap())]);
        let mut c = cpu();
        // Only CAN_RAW raw sockets and datagram ioctl sockets exist.
        assert_eq!(
            socket(&mut g, &mut c, &[libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            Err(Errno::EACCES)
        );
        assert_eq!(
            socket(&mut g, &mut c, &[AF_CAN as u64, 2, 2, 0, 0, 0]),
            Err(Errno::EPROTONOSUPPORT)
        );
        assert_eq!(
            socket(&mut g, &mut c, &[AF_CAN as u64, 3, 0, 0, 0, 0]),
            Err(Errno::EPROTONOSUPPORT)
        );
        let s = socket(&mut g, &mut c, &[AF_CAN as u64, 3 | SOCK_CLOEXEC, 1, 0, 0, 0]).unwrap();
        assert_eq!(s, 3);
        let u = socket(
            &mut g,
            &mut c,
            &[libc::AF_UNIX as u64, 2 | SOCK_CLOEXEC, 0, 0, 0, 0],
        )
        .unwrap();
        // if_nametoindex("can0") through the datagram socket.
        let mut ifr = vec![0u8; 40];
        ifr[..4].copy_from_slice(b"can0");
        g.write_user(0x40_0000, &ifr).unwrap();
        assert_eq!(
            super::super::io::ioctl(&mut g, &mut c, &[u, 0x8933, 0x40_0000, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.read_u32(0x40_0010).unwrap(), 1);
        ifr[..5].copy_from_slice(b"can7\0");
        g.write_user(0x40_0000, &ifr).unwrap();
        assert_eq!(
            super::super::io::ioctl(&mut g, &mut c, &[u, 0x8933, 0x40_0000, 0, 0, 0]),
            Err(Errno::ENODEV)
        );
        assert_eq!(
            super::super::io::ioctl(&mut g, &mut c, &[u, 0x8933, 0x10, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        // Options before bind are stored; bad lengths are EINVAL, bad pointers EFAULT.
        g.write_u32(0x40_0100, 1).unwrap();
        assert_eq!(setsockopt(&mut g, &mut c, &[s, 101, 4, 0x40_0100, 4, 0]), Ok(0));
        assert_eq!(
            setsockopt(&mut g, &mut c, &[s, 101, 4, 0x40_0100, 2, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            setsockopt(&mut g, &mut c, &[s, 101, 4, 0x10, 4, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            setsockopt(&mut g, &mut c, &[s, 101, 99, 0x40_0100, 4, 0]),
            Err(Errno::ENOPROTOOPT)
        );
        assert_eq!(
            setsockopt(&mut g, &mut c, &[s, 101, 1, 0x40_0100, 7, 0]),
            Err(Errno::EINVAL)
        );
        // Filters: two filters, read back.
        let mut f = Vec::new();
        for v in [0x120u32, 0x7ff, 0x130, 0x7ff] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        g.write_user(0x40_0200, &f).unwrap();
        assert_eq!(setsockopt(&mut g, &mut c, &[s, 101, 1, 0x40_0200, 16, 0]), Ok(0));
        g.write_u32(0x40_0300, 64).unwrap();
        assert_eq!(
            getsockopt(&mut g, &mut c, &[s, 101, 1, 0x40_0400, 0x40_0300, 0]),
            Ok(0)
        );
        assert_eq!(g.read_u32(0x40_0300).unwrap(), 16);
        assert_eq!(g.read_user(0x40_0400, 16).unwrap(), f);
        // bind: bad family, unknown ifindex, unreachable bus.
        let mut addr = vec![0u8; 24];
        addr[0..2].copy_from_slice(&(AF_CAN as u16).to_le_bytes());
        addr[4..8].copy_from_slice(&5i32.to_le_bytes());
        g.write_user(0x40_0500, &addr).unwrap();
        assert_eq!(
            bind(&mut g, &mut c, &[s, 0x40_0500, 24, 0, 0, 0]),
            Err(Errno::ENODEV)
        );
        assert_eq!(
            bind(&mut g, &mut c, &[s, 0x40_0500, 4, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        addr[4..8].copy_from_slice(&1i32.to_le_bytes());
        g.write_user(0x40_0500, &addr).unwrap();
        assert_eq!(
            bind(&mut g, &mut c, &[s, 0x40_0500, 24, 0, 0, 0]),
            Err(Errno::ENETDOWN)
        );
        assert_eq!(
            bind(&mut g, &mut c, &[1, 0x40_0500, 24, 0, 0, 0]),
            Err(Errno::ENOTSOCK)
        );
        // Unbound: nothing to read, sending needs a bound socket.
        g.fds.get(s as i32).unwrap().borrow_mut().nonblock = true;
        assert_eq!(
            recvfrom(&mut g, &mut c, &[s, 0x40_0600, 16, 0, 0, 0]),
            Err(Errno::EAGAIN)
        );
    }
}
