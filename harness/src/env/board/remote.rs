//! What every remote operation on a board shares: the time limit of short commands, the owner marker every
//! remote process carries, and the console hint added to connection problems.

use std::time::Duration;

use crate::lab::Board;

/// Environment variable carrying the bench's identity on every remote process.
pub const OWNER_ENV: &str = "AGL_PARITY_OWNER";
/// Time limit of short remote commands.
pub(super) const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// `text` followed by how to reach the board's console, when the inventory says.
pub(super) fn with_console(board: &Board, text: String) -> String {
    match &board.console {
        Some(c) => format!("{text}; console: `{c}`"),
        None => text,
    }
}
