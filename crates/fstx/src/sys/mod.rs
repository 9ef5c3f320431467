//! Platform code. Everything that talks to the kernel lives here, behind the
//! [`Storage`](crate::storage::Storage) seam.

mod linux;

pub use linux::OsStorage;
