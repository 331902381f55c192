//! The cash register client (`ecr-sniff send`) and the terminal emulator
//! (`ecr-sniff emulate`) of issue 7.
#![warn(missing_docs)]
