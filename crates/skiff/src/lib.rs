//! The part of the `skiff` binary that other packages build too: the HTTP admin API's request
//! bodies and the checks made on them (`http_api`), so the fuzz targets in `fuzz/` parse and check
//! them exactly as the handlers do. Everything else lives in the binary.

pub mod http_api;
