//! The answers of Wireshark's extcap protocol for the serial tap.
//!
//! Wireshark (and tshark, dumpcap) run every program in their extcap folder with
//! `--extcap-interfaces` to list interfaces, then `--extcap-interface=X
//! --extcap-dlts` and `--extcap-config` to learn the link type and the options to
//! ask the user for, and finally `--capture --extcap-interface=X --fifo=PATH` with
//! the chosen options: the program writes a pcap or pcapng stream to the fifo and is
//! stopped with SIGTERM. This module holds the text of the answers; the binary
//! parses the arguments and runs the capture.

use std::fmt::Write as _;

use ecr_capture::serialcap::LINKTYPE_SERIAL;

/// The one interface: the serial tap.
pub const INTERFACE: &str = "ecr-serial";

/// An interface name Wireshark asked about that this program does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown extcap interface {0:?} (this program has only {INTERFACE:?})")]
pub struct UnknownInterface(pub String);

fn check(iface: &str) -> Result<(), UnknownInterface> {
    if iface == INTERFACE {
        Ok(())
    } else {
        Err(UnknownInterface(iface.to_string()))
    }
}

/// Answer to `--extcap-interfaces`.
pub fn interfaces(program_version: &str) -> String {
    format!(
        "extcap {{version={program_version}}}{{help=ecr-sniff serial tap: sits between a cash \
         register and its QFPay terminal on two serial ports}}\n\
         interface {{value={INTERFACE}}}{{display=ECR serial tap (cash register <-> POS terminal)}}\n"
    )
}

/// Answer to `--extcap-interface=X --extcap-dlts`.
pub fn dlts(iface: &str) -> Result<String, UnknownInterface> {
    check(iface)?;
    Ok(format!(
        "dlt {{number={LINKTYPE_SERIAL}}}{{name=USER0}}{{display=ECR serial bytes with a \
         direction byte (ecr-sniff D9)}}\n"
    ))
}

/// Answer to `--extcap-interface=X --extcap-config`: the options shown in
/// Wireshark's interface dialog, passed back as `--ecr`, `--pos`, ... at capture.
pub fn config(iface: &str) -> Result<String, UnknownInterface> {
    check(iface)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "arg {{number=0}}{{call=--ecr}}{{display=Cash register port}}{{type=string}}\
         {{tooltip=Serial device the cash register's cable is plugged into, e.g. /dev/ttyUSB0}}\
         {{required=true}}{{group=Ports}}"
    );
    let _ = writeln!(
        s,
        "arg {{number=1}}{{call=--pos}}{{display=POS terminal port}}{{type=string}}\
         {{tooltip=Serial device the terminal's cable is plugged into, e.g. /dev/ttyUSB1}}\
         {{required=true}}{{group=Ports}}"
    );
    let _ = writeln!(
        s,
        "arg {{number=2}}{{call=--baud}}{{display=Baud rate}}{{type=selector}}\
         {{tooltip=Line speed of both ports (the spec's is 9600)}}{{group=Line}}"
    );
    for b in [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] {
        let default = if b == 9600 { "{default=true}" } else { "" };
        let _ = writeln!(s, "value {{arg=2}}{{value={b}}}{{display={b}}}{default}");
    }
    let _ = writeln!(
        s,
        "arg {{number=3}}{{call=--parity}}{{display=Parity}}{{type=selector}}{{group=Line}}"
    );
    for (v, d) in [("none", "None"), ("even", "Even"), ("odd", "Odd")] {
        let default = if v == "none" { "{default=true}" } else { "" };
        let _ = writeln!(s, "value {{arg=3}}{{value={v}}}{{display={d}}}{default}");
    }
    let _ = writeln!(
        s,
        "arg {{number=4}}{{call=--stop-bits}}{{display=Stop bits}}{{type=selector}}{{group=Line}}"
    );
    let _ = writeln!(s, "value {{arg=4}}{{value=1}}{{display=1}}{{default=true}}");
    let _ = writeln!(s, "value {{arg=4}}{{value=2}}{{display=2}}");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_the_protocol_syntax() {
        let i = interfaces("0.1.0");
        assert!(i.starts_with("extcap {version=0.1.0}{help="), "{i}");
        assert!(i.contains("interface {value=ecr-serial}{display="), "{i}");
        assert_eq!(
            dlts(INTERFACE).unwrap().lines().next().unwrap(),
            "dlt {number=147}{name=USER0}{display=ECR serial bytes with a direction byte (ecr-sniff D9)}"
        );
        let c = config(INTERFACE).unwrap();
        // Every line is `arg {number=N}...` or `value {arg=N}...`, braces balanced.
        for line in c.lines() {
            assert!(
                line.starts_with("arg {number=") || line.starts_with("value {arg="),
                "{line}"
            );
            assert_eq!(
                line.matches('{').count(),
                line.matches('}').count(),
                "{line}"
            );
        }
        assert!(
            c.contains("{call=--ecr}") && c.contains("{call=--pos}") && c.contains("{call=--baud}")
        );
        assert_eq!(c.matches("{default=true}").count(), 3);
        assert!(dlts("eth0").unwrap_err().to_string().contains("eth0"));
    }
}
