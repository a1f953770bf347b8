//! `ivctl import plan` and `ivctl import wave`: generated RVTools-style estates, real .xlsx
//! workbooks, hostile cells, and exports made with qemu-img.

mod cluster;
mod estate;
mod hostile;
mod planning;
mod wave;
