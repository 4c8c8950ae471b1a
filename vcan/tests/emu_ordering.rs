//! The seccomp emulation keeps a program's order of writes and option changes, as the kernel does (it
//! sends each frame during its `write`): a frame written before a `setsockopt` goes on the bus under the
//! options it was written with. A small C program (built here with gcc) writes frames without
//! `CAN_RAW_RECV_OWN_MSGS`, turns it on and writes a sentinel: the sentinel must be the first own frame to
//! come back, round after round.

use std::process::{Command, Stdio};

use vcan::emu;
use vcan::hub::{Hub, HubConfig};

const ROUNDS: u32 = 50;

const PROGRAM: &str = r#"
#include <linux/can.h>
#include <linux/can/raw.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_id(int s, canid_t id) {
    struct can_frame f;
    memset(&f, 0, sizeof f);
    f.can_id = id;
    f.len = 1;
    return write(s, &f, sizeof f) == (ssize_t)sizeof f ? 0 : -1;
}

int main(void) {
    int s = socket(PF_CAN, SOCK_RAW, CAN_RAW);
    struct sockaddr_can addr = {.can_family = AF_CAN, .can_ifindex = (int)if_nametoindex("can0")};
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("socket/bind"); return 1; }
    int on = 1, off = 0;
    for (unsigned round = 0; round < ROUNDS; round++) {
        /* Written without RECV_OWN_MSGS: never echoed, however fast the option changes after. */
        for (unsigned i = 0; i < 20; i++)
            if (send_id(s, 0x100 + i) != 0) { perror("write"); return 1; }
        if (setsockopt(s, SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS, &on, sizeof on) != 0) { perror("on"); return 1; }
        if (send_id(s, 0x7FF) != 0) { perror("write"); return 1; }
        struct can_frame f;
        struct pollfd p = {.fd = s, .events = POLLIN, .revents = 0};
        if (poll(&p, 1, 10000) != 1 || read(s, &f, sizeof f) != (ssize_t)sizeof f) { perror("read"); return 1; }
        if (f.can_id != 0x7FF) {
            printf("round %u: frame 0x%X written before RECV_OWN_MSGS came back\n", round, f.can_id);
            return 3;
        }
        if (setsockopt(s, SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS, &off, sizeof off) != 0) { perror("off"); return 1; }
    }
    return 0;
}
"#;

#[test]
fn frames_written_before_setsockopt_keep_their_options() {
    emu::available().expect("seccomp user notification");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("order.c");
    let exe = dir.path().join("order");
    std::fs::write(&src, PROGRAM).unwrap();
    let out = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-DROUNDS={ROUNDS}"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("gcc must be installed for this test");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let hub = Hub::start(HubConfig {
        name: "order".into(),
        unix_path: Some(dir.path().join("bus.sock")),
        ..HubConfig::default()
    })
    .unwrap();
    let endpoint = hub.unix_endpoint().unwrap();
    let mut command = Command::new(&exe);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (child, emulation) = emu::spawn(
        &mut command,
        emu::interfaces(vec![("can0".into(), endpoint)]),
        "order".into(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = emulation.wait();
    assert_eq!(stats.dropped_writes, 0, "frames dropped: {stats:?}");
    assert_eq!(hub.stats().frames, u64::from(ROUNDS) * 21, "{:?}", hub.stats());
}
