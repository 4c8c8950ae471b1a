//! # A plain-C SocketCAN project outside this repository, unchanged on native, container, vm and kube
//!
//! What an AGL engineer tries first: their own ECU in plain C against the plain SocketCAN API
//! (`socket(PF_CAN, SOCK_RAW, CAN_RAW)`, `SIOCGIFINDEX`, `bind`, `CAN_RAW_FILTER`, `select`, `read`,
//! `write`), built with `gcc -static` by the project's own `build:` command, linking nothing of this
//! project. On this machine the kernel has no CAN: native, container and kube (podman) runs get SocketCAN from the seccomp
//! emulation, the vm from the VMM. The project lives in a fresh temporary directory and is driven through
//! the real CLI (`agl-parity --project <tmp> run --env native,container,vm,kube`), whose exit status, report and
//! transports are checked. The pod names its interface `cabin0` (`parity.agl.io/can-interfaces`), so the
//! workload's `CAN_BUS=socketcan:cabin0` and the interface it looks up are the manifest's, not a default.

mod common;

use std::path::Path;
use std::process::Command;

const ENVIRONMENTS: [&str; 4] = ["native", "container", "vm", "kube"];

const PROJECT_FILE: &str = "\
scenarios: [features]
manifests: [deploy]
dbc: [dbc]
workloads:
  - build: \"mkdir -p out && gcc -std=c11 -O2 -Wall -Wextra -Werror -static -o out/seat-heater src/seat_heater.c\"
    output: out
";

/// A seat heater: `SeatHeaterCmd` (0x2A0, byte 0 = level 0..3) sets the level; `SeatHeaterStatus` (0x2A1:
/// level, frames received) every 100 ms and on each change. A filter lets only 0x2A0 in.
const SEAT_HEATER_C: &str = r#"
#define _DEFAULT_SOURCE
#include <errno.h>
#include <linux/can.h>
#include <linux/can/raw.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

static void status(int s, unsigned level, unsigned rx) {
    struct can_frame f;
    memset(&f, 0, sizeof f);
    f.can_id = 0x2A1;
    f.can_dlc = 2;
    f.data[0] = (unsigned char)level;
    f.data[1] = (unsigned char)rx;
    if (write(s, &f, sizeof f) != sizeof f) perror("write");
}

int main(void) {
    const char *bus = getenv("CAN_BUS");
    const char *ifname = (bus && strncmp(bus, "socketcan:", 10) == 0) ? bus + 10 : "can0";
    signal(SIGTERM, on_term);
    int s = socket(PF_CAN, SOCK_RAW, CAN_RAW);
    if (s < 0) { perror("socket(PF_CAN)"); return 2; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFINDEX, &ifr) < 0) { perror("SIOCGIFINDEX"); return 2; }
    struct sockaddr_can addr;
    memset(&addr, 0, sizeof addr);
    addr.can_family = AF_CAN;
    addr.can_ifindex = ifr.ifr_ifindex;
    struct can_filter filter = { .can_id = 0x2A0, .can_mask = CAN_SFF_MASK | CAN_EFF_FLAG | CAN_RTR_FLAG };
    if (setsockopt(s, SOL_CAN_RAW, CAN_RAW_FILTER, &filter, sizeof filter) < 0) { perror("filter"); return 2; }
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 2; }
    printf("seat-heater ready on %s (ifindex %d)\n", ifname, ifr.ifr_ifindex);
    fflush(stdout);
    unsigned level = 0, rx = 0;
    status(s, level, rx);
    while (!stop) {
        fd_set in;
        FD_ZERO(&in);
        FD_SET(s, &in);
        struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
        int n = select(s + 1, &in, NULL, NULL, &tv);
        if (n < 0) { if (errno == EINTR) continue; perror("select"); return 2; }
        if (n > 0) {
            struct can_frame f;
            if (read(s, &f, sizeof f) == sizeof f && f.can_dlc >= 1 && f.data[0] <= 3) {
                level = f.data[0];
                rx++;
                printf("level %u\n", level);
                fflush(stdout);
            }
        }
        status(s, level, rx);
    }
    close(s);
    return 0;
}
"#;

const DBC: &str = r#"VERSION ""

NS_ :

BS_:

BU_: BCM SeatHeater

BO_ 672 SeatHeaterCmd: 1 BCM
 SG_ Level : 0|8@1+ (1,0) [0|3] "" SeatHeater

BO_ 673 SeatHeaterStatus: 2 SeatHeater
 SG_ Level : 0|8@1+ (1,0) [0|3] "" BCM
 SG_ Received : 8|8@1+ (1,0) [0|255] "" BCM
"#;

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: seat-heater
  annotations:
    parity.agl.io/can-buses: cabin
    parity.agl.io/can-interfaces: cabin=cabin0
    parity.agl.io/ready-frame: "0x2A1"
spec:
  restartPolicy: Always
  containers:
    - name: seat-heater
      image: registry.example.com/cabin/seat-heater:0.3
"#;

const FEATURE: &str = r#"Feature: Seat heater in plain C
  Scenario: The seat heater follows its command and ignores other frames
    Given the "seat-heater" workload is running
    Then the latest "SeatHeaterStatus" has Level=0, Received=0
    When the frame 2A2#03 is sent
    And "SeatHeaterCmd" is sent with Level=2
    Then within 500 ms "SeatHeaterStatus" has Level=2, Received=1

  Scenario: A killed seat heater is restarted and starts over
    Given the "seat-heater" workload is running
    When "SeatHeaterCmd" is sent with Level=3
    Then within 500 ms "SeatHeaterStatus" has Level=3
    When the "seat-heater" workload is killed
    Then the "seat-heater" workload is restarted by its restart policy within 5 s
    And within 2 s "SeatHeaterStatus" has Level=0, Received=0
"#;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_plain_c_socketcan_project_passes_unchanged_on_native_container_and_vm() {
    assert!(
        Command::new("gcc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "gcc is needed to build the project's C workload (apt-get install gcc libc6-dev)"
    );
    let environments = common::hostable(&ENVIRONMENTS, "the plain-C project test");
    let dir = tempfile::Builder::new()
        .prefix("agl-c-project-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    write(root, "agl-parity.yaml", PROJECT_FILE);
    write(root, "src/seat_heater.c", SEAT_HEATER_C);
    write(root, "dbc/cabin.dbc", DBC);
    write(root, "deploy/seat-heater.yaml", MANIFEST);
    write(root, "features/seat.feature", FEATURE);
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(root)
        .args(["run", "--no-progress", "--env", &environments.join(",")])
        .arg("--report-dir")
        .arg(root.join("reports"))
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("AGL_PARITY_KEEP_TEST_DIRS").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
    assert!(out.status.success(), "{text}");
    for env in &environments {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{env}:")) && l.contains("passed"))
            .unwrap_or_else(|| panic!("no summary line for {env}:\n{text}"));
        assert!(line.contains("2 passed, 0 failed, 0 infra-errors"), "{line}");
        if *env != "vm" {
            assert!(
                line.contains("SocketCAN emulated"),
                "{env} without the emulation: {line}"
            );
        }
    }
}
