//! Test doubles of EC2 (test code only, never part of the product): `fault` (counting
//! and injected failures), `honest` (EC2's documented behaviour where moto differs,
//! docs/aws.md), and `connect::Given`, the connector that hands them to the operations.

pub mod connect;
pub mod fault;
pub mod honest;
