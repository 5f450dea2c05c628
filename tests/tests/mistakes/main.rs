//! The mistakes suite (issue 29): every command and config of the project run with the mistakes operators make
//! (typos, zero or huge limits, missing files and directories, odd addresses, a second instance). One row per case:
//! what is run, the exit code and message fragment it must give, and (for rows against a running daemon) the state
//! that must be unchanged afterwards. Most rows need no namespace; one file per daemon so rows grow beside the flags.
mod lbd;
mod relay;
mod smd;
mod table;
