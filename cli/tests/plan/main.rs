//! `ivctl import plan` and `ivctl import wave`: generated RVTools-style estates, real .xlsx
//! workbooks, hostile cells, and exports made with qemu-img.

mod cluster;
mod estate;
mod hostile;
mod planning;
// The CRD schema and CEL validator of the import tests (its own tests run here too).
#[path = "../import/schema.rs"]
mod schema;
mod wave;
