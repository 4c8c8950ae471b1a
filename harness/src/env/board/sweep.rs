//! Remote cleanup on boards: what identifies this bench's runs there ([`owner_id`], [`board_owner`]),
//! removing the processes and directories of chosen runs ([`clean_remote`]), and the sweep of every board
//! of a lab for runs that are no longer alive ([`sweep_lab`], the registry's sweep).

use futures::future::BoxFuture;

use super::remote::COMMAND_LIMIT;
use crate::env::contract::Setup;
use crate::lab::{Board, Lab};
use crate::ssh::{sh_quote, Ssh, SshError};

/// The bench's identity on boards: a hash of host name and state root, so benches sharing a board (and
/// harnesses with different state roots) never sweep each other's runs.
pub fn owner_id() -> String {
    let host = nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().to_string())
        .unwrap_or_default();
    let text = format!("{host}:{}", crate::cleanup::state_root().display());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The owner marker of one board: the bench's identity and the board name (boards that share a filesystem
/// and a process table, like the simulated ones, then still clean up only their own processes).
pub fn board_owner(board: &Board) -> String {
    format!("{}.{}", owner_id(), board.name)
}

/// Which runs a remote cleanup removes.
pub enum CleanMode<'a> {
    /// Exactly this run.
    Only(&'a str),
    /// Every run of this bench that is not in the list.
    AllBut(&'a [String]),
}

/// Kills the remote processes and removes the remote directories of runs of this bench (`owner`) selected by
/// `mode`; returns a line per removed item.
pub async fn clean_remote(
    ssh: &Ssh,
    workdir: &str,
    owner: &str,
    mode: CleanMode<'_>,
) -> Result<Vec<String>, SshError> {
    let (m, list) = match mode {
        CleanMode::Only(run) => ("only", vec![run.to_string()]),
        CleanMode::AllBut(live) => ("allbut", live.to_vec()),
    };
    let mut script = format!("set -- {} {} {m}", sh_quote(workdir), sh_quote(owner));
    for run in &list {
        script.push(' ');
        script.push_str(&sh_quote(run));
    }
    script.push('\n');
    script.push_str(CLEAN_SCRIPT);
    let out = ssh.check("cleaning up", &script, COMMAND_LIMIT).await?;
    Ok(out
        .lines()
        .map(|l| format!("board `{}`: {l}", ssh.board()))
        .collect())
}

/// Remote cleanup. Arguments: workdir, owner, `only`|`allbut`, run ids.
const CLEAN_SCRIPT: &str = r#"w=$1; owner=$2; mode=$3; shift 3; list=" $* "
target() {
  case "$list" in *" $1 "*) inlist=1;; *) inlist=0;; esac
  if [ "$mode" = only ]; then [ $inlist = 1 ]; else [ $inlist = 0 ]; fi
}
for e in $(grep -lsF "AGL_PARITY_OWNER=$owner" /proc/[0-9]*/environ 2>/dev/null); do
  p=${e#/proc/}; p=${p%/environ}
  [ "$p" = "$$" ] && continue
  o=$(tr '\0' '\n' < "$e" 2>/dev/null | sed -n 's/^AGL_PARITY_OWNER=//p')
  [ "$o" = "$owner" ] || continue
  r=$(tr '\0' '\n' < "$e" 2>/dev/null | sed -n 's/^AGL_PARITY_RUN=//p')
  [ -n "$r" ] || continue
  target "$r" || continue
  kill -KILL "$p" 2>/dev/null && echo "killed process $p of run $r"
done
[ -d "$w" ] || exit 0
for d in "$w"/*/; do
  [ -f "${d}owner" ] || continue
  [ "$(cat "${d}owner" 2>/dev/null)" = "$owner" ] || continue
  r=$(basename "$d")
  target "$r" || continue
  rm -rf "$d" && echo "removed ${d%/} of run $r"
done
rmdir "$w" 2>/dev/null
exit 0
"#;

/// Removes, on every board of `lab`, what runs of this bench that are not in `live` left behind.
pub async fn sweep_lab(lab: &Lab, live: &[String]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("agl-parity-sweep-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sweeps = lab.boards.iter().map(|board| {
        let ssh = Ssh::new(board, &dir.join(format!("known_hosts-{}", board.name)), None);
        let owner = board_owner(board);
        async move {
            match clean_remote(&ssh, &board.workdir, &owner, CleanMode::AllBut(live)).await {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::debug!(board = %board.name, error = %e, "sweep skipped");
                    Vec::new()
                }
            }
        }
    });
    let lines = futures::future::join_all(sweeps).await.concat();
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

/// [`crate::env::contract::EnvKind::sweep`] of boards: [`sweep_lab`] of the run's lab, if it has one.
pub(super) fn sweep_entry(live: Vec<String>, setup: Setup<'_>) -> BoxFuture<'_, Vec<String>> {
    Box::pin(async move {
        match setup.lab {
            Some(lab) => sweep_lab(lab, &live).await,
            None => Vec::new(),
        }
    })
}
