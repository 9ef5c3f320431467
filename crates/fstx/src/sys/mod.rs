//! Platform code. Everything that talks to the kernel lives here, behind the
//! [`Storage`](crate::storage::Storage) seam.

mod linux;

pub use linux::{syncfs_reports_commit_errors, syncfs_reports_errors, OsStorage};
